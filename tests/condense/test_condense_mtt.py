"""Trajectory matching (MTT) and factorization (HaBa) on tiny digits: 10 images per class at 16x16, one or two
short experts, a few unrolled steps."""

import pytest
import torch

from zoo.condense import METHODS, CondenseError, SyntheticSet, condense
from zoo.condense.core import STATE_DIR, RealData, _fingerprint, run_method
from zoo.condense.factorization import hallucinator_values, plan_bases, supcon_loss
from zoo.condense.mtt import ExpertBuffer, buffer_settings

TINY = dict(num_experts=1, train_epochs=2, expert_epochs=1, max_start_epoch=2, syn_steps=3, expert_batch=25)


@pytest.fixture(scope="module")
def real(real):
    """The group's digits cut to their first 10 images per class."""
    full = real
    idx = torch.cat([i[:10] for i in full.by_class])
    images, labels = full.images[idx].contiguous(), full.labels[idx]
    source = dict(full.source, fingerprint=_fingerprint(images, labels), size=len(idx))
    return RealData(images, labels, full.class_names, source, full.preprocessing)


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    return str(tmp_path_factory.mktemp("experts"))


def _method(name, real, ipc=1, seed=0, **options):
    m = METHODS[name](real, ipc, options, seed, torch.device("cpu"))
    m.check()
    return m


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_mtt_loss_falls_shapes_and_lr(real, buffer):
    # one expert, no augmentation: every iteration matches the same kind of segment, so the loss must fall
    m = _method("mtt", real, iterations=8, lr_img=100.0, dsa=False, buffer=buffer, **TINY)
    losses = run_method(m, progress=False)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses
    images, labels, soft, extra = m.result()
    assert images.shape == (10, 3, 16, 16) and labels.tolist() == list(range(10)) and soft is None and extra == {}
    d = m.describe()
    assert d["eval_lr"] == d["syn_lr"] == float(m.syn_lr.detach()) and d["syn_lr"] != 0.01
    assert m.student.size == m.buffer.rows(0, [0])[0].numel()


@pytest.mark.slow  # the resumed run below checks the same streams in the default run
def test_mtt_deterministic(real, buffer):
    def run(seed):
        return condense(real, method="mtt", ipc=2, iterations=3, seed=seed, progress=False, buffer=buffer, **TINY)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.images, b.images) and a.meta["syn_lr"] == b.meta["syn_lr"]
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (20, 3, 16, 16) and a.meta["eval_lr"] == a.meta["syn_lr"]


def test_expert_buffer_reused(real, buffer, monkeypatch):
    m = _method("mtt", real, iterations=0, buffer=buffer, **TINY)
    run_method(m, progress=False)
    files = sorted(m.buffer.folder.glob("expert_*.safetensors"))
    assert [f.name for f in files] == ["expert_0000.safetensors"]
    # an expert is a pure function of the settings: retraining gives the stored trajectory
    key = ExpertBuffer(None, buffer_settings(real, m.options))
    key.ensure(1, real, torch.device("cpu"))
    assert torch.equal(key.memory[0][2], m.buffer.rows(0, [2])[0])
    assert key.memory[0].shape[0] == TINY["train_epochs"] + 1

    def boom(*a, **k):
        raise AssertionError("the buffer should have been reused")

    monkeypatch.setattr("zoo.condense.mtt.train_expert", boom)
    for name in ("mtt", "factorization"):  # the same expert options: the same buffer
        run_method(_method(name, real, iterations=0, buffer=buffer, **TINY), progress=False)


def test_bad_segment_refused(real):
    with pytest.raises(CondenseError, match="max_start_epoch"):
        _method("mtt", real, **dict(TINY, max_start_epoch=3))


@pytest.mark.slow  # 5 s (two trajectory-matching runs): DM's resume stays in the default run (test_condense.py)
@pytest.mark.parametrize("name", ["mtt", "factorization"])
def test_resume_matches_uninterrupted(real, tmp_path, name):
    opts = dict(TINY, dsa=True)
    full = condense(real, method=name, ipc=2, iterations=4, out=tmp_path / "full", progress=False, **opts)
    part = tmp_path / "part"
    condense(real, method=name, ipc=2, iterations=2, out=part, save_every=1, progress=False, **opts)
    experts = sorted((part / STATE_DIR / "experts").rglob("expert_*.safetensors"))
    assert len(experts) == 1  # kept in the run's state folder by default
    stamp = experts[0].stat().st_mtime_ns
    resumed = condense(real, method=name, ipc=2, iterations=4, out=part, resume=True, progress=False, **opts)
    assert experts[0].stat().st_mtime_ns == stamp  # reused, not retrained
    assert torch.equal(full.images, resumed.images)
    assert full.meta["syn_lr"] == resumed.meta["syn_lr"]
    for k, v in full.extra.items():
        assert torch.equal(v, resumed.extra[k]), k
    loaded = SyntheticSet.load(part)
    assert torch.equal(loaded.images, resumed.images) and loaded.meta["eval_lr"] == resumed.meta["eval_lr"]


@pytest.mark.parametrize("ipc", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_factorization_storage_within_budget(real, buffer, ipc):
    s = condense(real, method="factorization", ipc=ipc, iterations=2, progress=False, buffer=buffer, **TINY)
    c, h, w = 3, 16, 16
    budget = ipc * c * h * w * 10
    counted = s.extra["bases"].numel() + sum(v.numel() for k, v in s.extra.items() if k.startswith("hal."))
    assert s.stored_values == s.meta["storage"]["values"] == s.meta["stored_values"] == counted
    assert counted <= budget == s.meta["ipc_budget_values"]
    n, k, bc = s.meta["n_bases"], s.meta["n_hal"], s.meta["base_channels"]
    assert s.extra["bases"].shape == (10 * n, bc, h, w)
    assert counted == 10 * n * bc * h * w + k * hallucinator_values(bc, c, (h, w))
    assert len({key.split(".")[1] for key in s.extra if key.startswith("hal.")}) == k
    assert s.images.shape == (10 * n, c, h, w)  # one image per base; evaluation reads them through eval_sampler
    assert torch.bincount(s.labels, minlength=10).tolist() == [n] * 10
    assert torch.isfinite(s.images).all() and s.meta["eval_lr"] >= 0.001
    assert bc == 1  # digits are grey images stored as RGB: grey bases
    assert s.meta["storage"]["over_budget_values"] == 0 and s.meta["storage"]["layout"] == "within the ipc budget"
    sample = METHODS["factorization"].eval_sampler(s)
    x = sample(torch.arange(len(s)), torch.Generator().manual_seed(0))
    assert x.shape == s.images.shape and torch.isfinite(x).all()


def test_factorization_plan():
    # CIFAR-10 at 32x32 with 5 hallucinators (27,840 values): 9 RGB bases per class at ipc 10, 49 at ipc 50
    assert hallucinator_values(3, 3, (32, 32)) == 5568
    assert plan_bases(10, 10, (3, 32, 32), 5) == (9, 3, 5)
    assert plan_bases(50, 10, (3, 32, 32), 5) == (49, 3, 5)
    # ipc 1: nothing RGB fits; single-channel bases with fewer hallucinators
    n, bc, k = plan_bases(1, 10, (3, 32, 32), 5)
    assert n >= 1 and bc == 1 and k < 5
    assert n * 10 * 1024 + k * hallucinator_values(1, 3, (32, 32)) <= 30720
    assert plan_bases(10, 10, (3, 32, 32), 5, budget=False) == (10, 3, 5)  # the released scripts' choice
    with pytest.raises(CondenseError, match="budget"):
        plan_bases(10, 10, (3, 32, 32), 5, n_bases=10, base_channels=3)
    assert plan_bases(10, 10, (3, 32, 32), 5, n_bases=10) == (10, 1, 5)  # fits as single-channel bases


def test_factorization_plan_grey_28px():
    # MNIST / Fashion-MNIST: 1 x 28 x 28, 5 hallucinators of 1,372 values
    assert hallucinator_values(1, 1, (28, 28)) == 1372
    assert plan_bases(10, 10, (1, 28, 28), 5) == (9, 1, 5)  # 70,560 + 6,860 = 77,420 <= 78,400
    with pytest.raises(CondenseError, match="nothing else.*budget=false.*14,700 values, 1.88x"):
        plan_bases(1, 10, (1, 28, 28), 5)  # one grey image per class fills the ipc-1 budget
    assert plan_bases(1, 10, (1, 28, 28), 5, budget=False) == (1, 1, 5)
    assert plan_bases(10, 10, (1, 28, 28), 5, budget=False) == (10, 1, 5)
    # grey data stored as RGB: grey bases, three times as many
    assert plan_bases(10, 10, (3, 16, 16), 5, grey=True) == (27, 1, 5)
    assert plan_bases(10, 10, (3, 16, 16), 5, budget=False, grey=True) == (10, 1, 5)


def test_factorization_authors_layout_states_the_excess(real, buffer):
    s = condense(real, method="factorization", ipc=1, iterations=1, progress=False, buffer=buffer, budget=False,
                 **TINY)  # fmt: skip
    st = s.meta["storage"]
    assert s.meta["n_bases"] == 1 and s.meta["n_hal"] == 5 and s.meta["base_channels"] == 1
    assert st["values"] == 10 * 256 + 5 * hallucinator_values(1, 3, (16, 16)) == s.stored_values
    assert st["over_budget_values"] == st["values"] - st["ipc_budget"] > 0
    assert st["layout"] == "the authors' released scripts" and st["budget_ratio"] > 1


def test_hallucinators_start_near_identity(real):
    from zoo.condense.factorization import Hallucinator

    base = real.images[:8, :1]
    hal = Hallucinator(1, 3, (16, 16))
    authors = torch.nn.functional.cosine_similarity(hal(base).flatten(1), base.expand(-1, 3, -1, -1).flatten(1))
    hal.init_identity()
    out = hal(base)
    inside = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    cos = torch.nn.functional.cosine_similarity(out[inside].flatten(1), base.expand(-1, 3, -1, -1)[inside].flatten(1))
    assert cos.min() > 0.98 and authors.abs().max() < 0.9
    assert torch.allclose(out[inside], base.expand(-1, 3, -1, -1)[inside], atol=0.3)
    m = _method("factorization", real, ipc=2, **TINY)  # hal_init: identity is the default
    assert m.options["hal_init"] == "identity"
    with pytest.raises(CondenseError, match="hal_init"):
        _method("factorization", real, ipc=2, hal_init="random", **TINY)


def test_published_defaults_per_dataset_and_ipc(real):
    from zoo.condense.mtt import published_settings

    v, src = published_settings("cifar100", 1)  # the README's own command line
    assert (v["syn_steps"], v["expert_epochs"], v["max_start_epoch"], v["lr_img"], v["lr_lr"], v["lr_teacher"]) == (
        20, 3, 20, 1000.0, 1e-5, 0.01)  # fmt: skip
    v, src = published_settings("cifar10", 1)
    assert (v["syn_steps"], v["max_start_epoch"], v["lr_lr"]) == (50, 2, 1e-7) and "flip" in v["dsa_strategy"]
    v, src = published_settings("mnist", 8)
    assert "cifar10 ipc 10" in src and "closest" in src and "flip" not in v["dsa_strategy"]
    assert published_settings("cifar100", 50)[0]["batch_syn"] == 125
    assert "flip" in published_settings("fashion_mnist", 1)[0]["dsa_strategy"]
    # digits: no flips in the experts or the distillation; the user's options win over the table
    m = _method("mtt", real, ipc=1, **TINY)
    assert "flip" not in m.options["dsa_strategy"] and m.options["lr_lr"] == 1e-7
    assert m.options["syn_steps"] == TINY["syn_steps"]
    h = _method("factorization", real, ipc=10, **TINY)
    assert h.options["lr_teacher"] == 0.001 and h.options["lambda_likeli"] == 0.1
    assert "run_cifar10_ipc10_style5.sh" in h.defaults_from


def test_supcon_prefers_aligned_views():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    y = torch.arange(8)
    noise = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    assert supcon_loss(z, z, y) < supcon_loss(z, noise, y)
