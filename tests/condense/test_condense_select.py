"""Coreset selection (random, herding, k-center) and the teacher-based methods (RDED, SRe2L) on tiny digits."""

import pytest
import torch
from tolerances import float32_bound

from zoo.condense import METHODS, CondenseError, condense, load_real
from zoo.condense.core import make_network, run_method
from zoo.condense.selection import herding_select, kcenter_select
from zoo.condense.teacher import load_teacher, train_teacher


@pytest.fixture(scope="module")
def bn_teacher(real):
    """A narrow ConvNet-3 with BatchNorm, trained a few epochs: enough to score crops and hold BN statistics."""
    return train_teacher(real, epochs=4, seed=0, width=32, lr=0.05)


@pytest.fixture(scope="module")
def gn_teacher(real):
    return train_teacher(real, epochs=0, seed=0, width=32, norm="instancenorm")


def _method(name, real, ipc=5, seed=0, **options):
    m = METHODS[name](real, ipc, options, seed, torch.device("cpu"))
    m.check()
    return m


def _by_class(real, selected):
    return torch.bincount(real.labels[torch.tensor(selected)], minlength=real.num_classes).tolist()


@pytest.mark.parametrize("name", ["random", "herding", "kcenter"])
def test_selection_shapes_balance_determinism(real, bn_teacher, name):
    opts = {} if name == "random" else {"teacher": bn_teacher}
    a = condense(real, name, ipc=4, seed=3, progress=False, **opts)
    b = condense(real, name, ipc=4, seed=3, progress=False, **opts)
    assert a.images.shape == (40, *real.shape) and a.soft_labels is None
    assert a.labels.tolist() == sorted(a.labels.tolist())
    assert _by_class(real, a.meta["selected"]) == [4] * real.num_classes
    assert len(set(a.meta["selected"])) == 40
    assert a.meta["selected"] == b.meta["selected"]
    assert torch.equal(a.images, real.images[torch.tensor(a.meta["selected"])])
    assert torch.equal(a.labels, real.labels[torch.tensor(a.meta["selected"])])
    if name == "random":
        c = condense(real, name, ipc=4, seed=4, progress=False)
        assert c.meta["selected"] != a.meta["selected"]


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_selection_trains_its_embedding(real):
    s = condense(real, "herding", ipc=2, progress=False, train_epochs=1)
    assert _by_class(real, s.meta["selected"]) == [2] * real.num_classes
    assert s.meta["embedding"] == "convnet_d3 (1 epochs)"


def test_herding_and_kcenter_pick_differently(real, bn_teacher):
    h = condense(real, "herding", ipc=5, progress=False, teacher=bn_teacher).meta["selected"]
    k = condense(real, "kcenter", ipc=5, progress=False, teacher=bn_teacher).meta["selected"]
    kr = condense(real, "kcenter", ipc=5, progress=False, teacher=bn_teacher, first="random").meta["selected"]
    assert h != k and k != kr
    for picks in (h, k, kr):
        assert all(0 <= i < len(real.labels) for i in picks) and len(set(picks)) == len(picks)


def test_herding_mean_is_closer_than_random(real, bn_teacher):
    m = _method("herding", real, ipc=5, teacher=bn_teacher)
    m.setup()
    f = m.features
    herd, rand = 0.0, 0.0
    g = torch.Generator().manual_seed(0)
    for c, idx in enumerate(real.by_class):
        mu = f[idx].mean(0)
        herd += float((f[m.selected[m.labels.cpu() == c]].mean(0) - mu).norm())
        for _ in range(10):
            pick = idx[torch.randperm(len(idx), generator=g)[:5]]
            rand += float((f[pick].mean(0) - mu).norm()) / 10
    assert herd < 0.5 * rand


def test_greedy_helpers():
    x = torch.tensor([[0.0], [10.0], [1.0], [-1.0], [4.0]])
    assert herding_select(x, 1).tolist() == [4]  # the point nearest the mean (2.8)
    assert herding_select(x, 2).tolist() == [4, 2]  # (4 + 1) / 2 is nearest 2.8
    assert kcenter_select(x, 3, first=0).tolist() == [0, 1, 4]  # then the farthest from {0, 10}


def test_ipc_larger_than_a_class(real):
    with pytest.raises(CondenseError, match="fewer than ipc"):
        condense(real, "random", ipc=1000, progress=False)


def test_rded(real, bn_teacher):
    opts = dict(ipc=2, progress=False, teacher=bn_teacher, n_candidates=40, n_crops=3)
    s = condense(real, "rded", factor=2, soft_labels=True, **opts)
    assert s.images.shape == (20, *real.shape) and s.labels.tolist() == sorted(list(range(10)) * 2)
    assert s.soft_labels.shape == (20, 10)
    # a softmax over 10 classes sums to 1 up to float32 rounding over its 10 terms
    assert torch.allclose(s.soft_labels.sum(1), torch.ones(20), rtol=0, atol=float32_bound(1.0, depth=10))
    assert s.meta["rded_factor"] == 2
    # the authors' setting at small sizes (factor 1 up to 64 px); evaluated by the student recipe: no soft labels
    one = condense(real, "rded", **opts)
    assert one.meta["rded_factor"] == 1 and one.soft_labels is None
    # patches are cut from real images: every value lies in the data's normalised range
    pre = real.preprocessing
    lo, hi = -pre["mean"][0] / pre["std"][0], (1 - pre["mean"][0]) / pre["std"][0]
    assert s.images.min() >= lo - 1e-4 and s.images.max() <= hi + 1e-4


def test_teacher_module_set_saves(real, bn_teacher, tmp_path):
    """An in-memory teacher is recorded by name: the folder's condense.json stays JSON."""
    from zoo.condense import SyntheticSet

    condense(
        real, "rded", ipc=1, progress=False, teacher=bn_teacher, n_candidates=20, n_crops=2, soft_labels=True,
        out=tmp_path / "r",
    )  # fmt: skip
    back = SyntheticSet.load(tmp_path / "r")
    assert back.meta["model"] == "convnet_d3" and back.soft_labels.shape == (10, 10)


def test_rded_refuses_too_few_patches(real, bn_teacher):
    with pytest.raises(CondenseError, match="patches"):
        condense(real, "rded", ipc=5, progress=False, teacher=bn_teacher, n_candidates=4, n_crops=2, factor=2)


def test_sre2l_loss_falls_and_labels(real, bn_teacher):
    m = _method("sre2l", real, ipc=2, teacher=bn_teacher, iterations=12, batch=20)
    losses = run_method(m, progress=False)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    images, labels, soft, _ = m.result()
    assert images.shape == (20, *real.shape) and labels.tolist() == sorted(list(range(10)) * 2)
    assert torch.allclose(soft.sum(1), torch.ones(20), rtol=0, atol=float32_bound(1.0, depth=10))  # 10-term softmax
    # the hooks are gone: the teacher is left as it was
    assert all(not bn._forward_hooks for bn in bn_teacher.modules() if isinstance(bn, torch.nn.BatchNorm2d))


def test_sre2l_resumes_to_the_same_images(real, bn_teacher):
    def fresh():
        m = _method("sre2l", real, ipc=1, seed=1, teacher=bn_teacher, iterations=4, batch=10)
        m.setup()
        return m

    whole = fresh()
    for it in range(4):
        whole.step(it)
    first = fresh()
    for it in range(2):
        first.step(it)
    state, gen = first.state_dict(), first.generator.get_state()
    second = fresh()
    second.load_state_dict(state)
    second.generator.set_state(gen)
    for it in range(2, 4):
        second.step(it)
    assert torch.equal(whole.result()[0], second.result()[0])  # the same steps from the same state: bit for bit


@pytest.mark.parametrize("name", ["rded", "sre2l", "herding"])
def test_teacher_of_another_class_count(real, name):
    other = make_network("convnet_d3", real.shape, 7, torch.Generator().manual_seed(0), width=16)
    with pytest.raises(CondenseError, match="predicts 7 classes and the data has 10"):
        condense(real, name, ipc=1, progress=False, teacher=other)


def test_sre2l_refuses_a_teacher_without_batchnorm(real, gn_teacher):
    with pytest.raises(CondenseError, match="convnet_d3 has no BatchNorm layer.*norm=batchnorm"):
        condense(real, "sre2l", ipc=1, progress=False, teacher=gn_teacher, iterations=1)


def test_methods_need_a_teacher(real):
    with pytest.raises(CondenseError, match="needs a trained teacher"):
        condense(real, "rded", ipc=1, progress=False)


def test_teacher_adapts_other_preprocessing(real, bn_teacher):
    """A teacher trained at another size and normalisation gets inputs converted to its own."""
    t = load_teacher(bn_teacher, real)
    x = real.images[:8]
    big = load_real("digits", image_size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    from zoo.condense.teacher import Teacher

    shifted = Teacher(bn_teacher, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (3, 16, 16), 1.0, "shifted").bind(big)
    y = shifted.adapt(big.images[:8])
    assert y.shape == (8, 3, 16, 16)
    # the same pixels in the teacher's normalisation: back to [0, 1] with its mean/std
    assert float((y * 0.25 + 0.5).min()) >= -1e-4 and float((y * 0.25 + 0.5).max()) <= 1 + 1e-4
    assert torch.equal(t.adapt(x), x)  # the data's own preprocessing: untouched


def test_teacher_from_a_model_folder(real, tmp_path):
    """A model folder (config.json + weights) loads through the training engine's builder, with its recorded
    preprocessing: images at another size and normalisation are converted before it sees them."""
    from zoo.publish import export_pretrained

    net = train_teacher(real, epochs=0, seed=0, width=16, norm=None)
    pre = real.preprocessing
    data_config = {"input_size": (3, 16, 16), "mean": tuple(pre["mean"]), "std": tuple(pre["std"]), "crop_pct": 1.0}
    folder = export_pretrained(
        net, tmp_path / "t", model_name="convnet_d3", model_kwargs={"width": 16, "img_size": 16, "in_chans": 3},
        data_config=data_config, latency_runs=1,
    )  # fmt: skip
    t = load_teacher(str(folder), real)
    assert t.name == str(folder) and t.input_size == (3, 16, 16)
    assert torch.equal(t(real.images[:16]), net(real.images[:16]))  # the same weights and modules: bit for bit
    big = load_real("digits", image_size=24, mean=(0.5, 0.5, 0.5), std=(0.3, 0.3, 0.3))
    tb = load_teacher(str(folder), big)
    assert tb.adapt(big.images[:4]).shape == (4, 3, 16, 16)
    with pytest.raises(CondenseError, match="has no BatchNorm layer"):
        condense(real, "sre2l", ipc=1, progress=False, teacher=str(folder), iterations=1)
    with pytest.raises(CondenseError, match="cannot load the teacher"):
        condense(real, "rded", ipc=1, progress=False, teacher=str(tmp_path / "missing"))
