"""The teacher-based methods against their authors' code (renditions in zoo/bench/reference/{rded,sre2l}.py): RDED's
crops, selection and stitching; the teacher-relabelling student (RDED ``validation/main.py:train``); SRe2L's recover
step and its jitter. Tiny shapes (16 px, ConvNet-3 of width 8, 3 classes), float64 where arithmetic is compared.
The last section: SRe2L's step and RDED's crops, scores and selection in float32 on the real shapes, within
tests/tolerances.py's bound."""

import copy
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tolerances import SHAPES, assert_scalar_within, assert_within

import zoo.condense.sre2l as zoo_sre2l
from zoo.bench.reference import rded as ref_rded
from zoo.bench.reference import sre2l as ref_sre2l
from zoo.condense import METHODS, RealData, condense, evaluate_with_teacher
from zoo.condense.rded import auto_factor, random_resized_crops, score_crops, select_crops, stitch
from zoo.condense.sre2l import jitter_settings
from zoo.condense.student import StudentSettings, train_student
from zoo.condense.teacher import build_network, load_teacher, train_teacher

pytestmark = pytest.mark.parity

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _real(classes=3, per=6, size=16, channels=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(classes * per, channels, size, size, generator=g, dtype=dtype)
    m = torch.tensor(MEAN[:channels], dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(STD[:channels], dtype=dtype).view(1, -1, 1, 1)
    labels = torch.arange(classes).repeat_interleave(per)
    pre = {"mean": list(MEAN[:channels]), "std": list(STD[:channels])}
    real = RealData((pixels - m) / s, labels, [f"c{i}" for i in range(classes)], {"name": "tiny"}, pre)
    return real, pixels


def _bn_net(real, seed=0, dtype=torch.float64):
    """A ConvNet-3 (width 8) with BatchNorm whose running statistics are not the identity's."""
    net = build_network("convnet_d3", real, torch.Generator().manual_seed(seed), width=8, norm="batchnorm")
    g = torch.Generator().manual_seed(seed + 100)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.to(dtype).eval()


@pytest.fixture(scope="module")
def tiny():
    return _real()


@pytest.fixture(scope="module")
def teacher(tiny):
    return _bn_net(tiny[0], seed=1)


# ---------------------------------------------------------------------------------------------------------- RDED


def test_rded_crops_are_multirandomcrop(tiny):
    """The zoo's crops are MultiRandomCrop's (torchvision's RandomResizedCrop, ratio 1) for the same generator."""
    _, pixels = tiny
    x = pixels[:4]
    ours = random_resized_crops(x, 3, (8, 8), (0.08, 1.0), torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    cropper = ref_rded.MultiRandomCrop(num_crop=3, size=16, factor=2)
    theirs = torch.stack([cropper(img) for img in x])
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours[:, 0], ours[:, 1])  # the crops are not one crop repeated


@pytest.mark.parametrize("size", [16, 17])
def test_rded_selection_and_stitching_equal_the_authors(tiny, teacher, size):
    """Same crops -> the same scores, the same picks in the same order, the same stitched images (17 px: cells of
    9 and 8 pixels, the 8 px crops resized by nearest-neighbour as ``mix_images`` does)."""
    real, _ = tiny
    g = torch.Generator().manual_seed(3)
    crops = torch.randn(6, 3, 3, 8, 8, generator=g, dtype=torch.float64)  # 6 images x 3 crops of class 2
    model = teacher if size == 16 else _bn_net(_real(size=17)[0], seed=1)
    t = load_teacher(model, real if size == 16 else _real(size=17)[0])
    losses = score_crops(t, crops, 2, (size, size))
    flat = crops.permute(1, 0, 2, 3, 4).reshape(18, 3, 8, 8)
    theirs_loss = ref_rded.cross_entropy(model(ref_rded.pad(flat, size)), torch.full((18,), 2)).view(3, 6).T
    assert _rel(losses, theirs_loss) <= 1e-12
    picks = select_crops(crops, losses, 4)
    theirs = ref_rded.selector(4, model, crops, torch.full((6,), 2), size, m=3)
    assert torch.equal(picks, theirs)
    assert not torch.equal(picks, crops[:4, 0])  # the scores reorder the crops
    ours = stitch(picks, 1, 2, (size, size))
    assert torch.equal(ours.float(), ref_rded.mix_images(theirs, size, 2, 1))


def test_rded_follows_the_authors_small_image_setting(tiny, teacher):
    """Factor 1 up to 64 px (CIFAR, Tiny-ImageNet scripts), 2 above; hard labels unless soft_labels is asked for."""
    assert [auto_factor(s) for s in (16, 28, 32, 64, 128, 224)] == [1, 1, 1, 1, 2, 2]
    real, _ = tiny
    s = condense(real, "rded", ipc=1, progress=False, teacher=teacher, n_candidates=6, n_crops=2)
    assert s.meta["rded_factor"] == 1 and s.soft_labels is None
    soft = condense(real, "rded", ipc=1, progress=False, teacher=teacher, n_candidates=6, n_crops=2, soft_labels=True)
    assert soft.soft_labels.shape == (3, 3) and torch.equal(soft.images, s.images)
    assert torch.allclose(soft.soft_labels.sum(1), torch.ones(3, dtype=soft.soft_labels.dtype))


# ---------------------------------------------------------------------------------------------- the student recipe


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_student_reaches_the_authors_weights(tiny, teacher, mix):
    """Two epochs of the zoo's student equal the authors' ``train`` (their transforms, mix, KL at T, AdamW with
    their parameter groups, half-cosine schedule) for the same set, teacher, seed and draws: every parameter and
    BatchNorm buffer."""
    real, pixels = tiny
    images, labels = real.images, real.labels
    seed, factor, epochs = 5, 2, 2
    start = build_network("convnet_d3", real, torch.Generator().manual_seed(9), width=8, norm="batchnorm").double()
    ours, theirs = copy.deepcopy(start), copy.deepcopy(start)
    settings = StudentSettings(epochs=epochs, batch=4, mix=mix)
    train_student(ours, images, labels, teacher, settings, seed=seed, factor=factor)

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    args = SimpleNamespace(
        re_epochs=epochs, adamw_lr=1e-3, adamw_weight_decay=0.01, temperature=settings.resolved_temperature(),
        mix_type=mix, cutmix=1.0, mixup=0.8, re_accum_steps=1,
    )  # fmt: skip
    args.optimizer = ref_rded.make_optimizer(theirs, args)
    scheduler = ref_rded.make_scheduler(args.optimizer, args)
    dataset = ref_rded.SetDataset(pixels, labels, ref_rded.train_transform(factor, 16, MEAN, STD))
    for epoch in range(epochs):
        ref_rded.train(epoch, ref_rded.epoch_loader(dataset, 4), teacher, theirs, args)
        scheduler.step()

    a, b, s0 = ours.state_dict(), theirs.state_dict(), start.state_dict()
    worst = max(_rel(a[k], b[k]) for k in b if b[k].is_floating_point())
    assert worst <= 1e-5, worst
    assert all(torch.equal(a[k], b[k]) for k in b if not b[k].is_floating_point())  # num_batches_tracked: 2 per step
    assert int(a["stages.0.norm.num_batches_tracked"]) == 2 * epochs * 5  # the meter's forward counts too
    assert max(_rel(a[k], s0[k]) for k in b if b[k].is_floating_point()) > 1e-3  # it trained
    other = copy.deepcopy(start)
    train_student(other, images, labels, teacher, settings, seed=seed + 1, factor=factor)
    assert _rel(other.state_dict()["head.fc.weight"], b["head.fc.weight"]) > 1e-6  # the draws matter


def test_student_evaluation_on_one_channel_28px():
    """train_teacher on (N, 1, 28, 28) data (ConvNet-3 with BatchNorm), RDED and SRe2L on it, and the students'
    accuracies on the held-out split: one per run, in [0, 100]."""
    real, _ = _real(classes=2, per=6, size=28, channels=1, dtype=torch.float32)
    test, _ = _real(classes=2, per=4, size=28, channels=1, dtype=torch.float32, seed=1)
    t = train_teacher(real, epochs=1, seed=0, width=8, lr=0.05)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in t.modules())
    assert t.stages[0].conv.in_channels == 1 and t(real.images[:2]).shape == (2, 2)
    r = condense(real, "rded", ipc=1, progress=False, teacher=t, n_candidates=4, n_crops=2)
    s = condense(real, "sre2l", ipc=1, progress=False, teacher=t, iterations=2)
    assert r.images.shape == s.images.shape == (2, 1, 28, 28) and s.meta["sre2l_jitter"] == ["cifar", 3]
    settings = StudentSettings(epochs=1, model_kwargs={"width": 8})
    accs = evaluate_with_teacher(r, test, t, settings, runs=2, seed=0)
    assert len(accs) == 2 and all(0 <= a <= 100 for a in accs)
    rand = evaluate_with_teacher((real.images[::6], real.labels[::6]), test, t, settings, runs=1)
    assert len(rand) == 1


# ---------------------------------------------------------------------------------------------------------- SRe2L


class _Replay:
    """Stands in for python's ``random`` in the rendition: returns given offsets."""

    def __init__(self, values):
        self.values = list(values)

    def randint(self, lo, hi):
        v = self.values.pop(0)
        assert lo <= v <= hi
        return v


def test_sre2l_step_equals_the_authors(tiny, teacher):
    """Three recover iterations: the same loss, image gradient and clipped images as the authors' CIFAR recover
    for the same teacher, starting images and roll draws."""
    real, _ = tiny
    m = METHODS["sre2l"](real, 1, {"teacher": teacher, "iterations": 3}, 0, torch.device("cpu"))
    m.check()
    m.setup()
    assert m.mode == "cifar" and m.max_shift == 2 and m.images.dtype == torch.float64
    inputs = m.images.detach().clone().requires_grad_(True)
    hooks = [ref_sre2l.BNFeatureHook(mod) for mod in teacher.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    opt = torch.optim.Adam([inputs], lr=0.25, betas=[0.5, 0.9], eps=1e-8)
    schedule = ref_sre2l.lr_cosine_policy(0.25, 0, 3)
    args = SimpleNamespace(jitter=2, first_bn_multiplier=10.0, r_bn=0.01)
    try:
        for it in range(3):
            replay = torch.Generator()
            replay.set_state(m.generator.get_state())
            draws = torch.randint(0, 3, (2,), generator=replay).tolist()
            ours = m.step(it)
            theirs = ref_sre2l.recover_iteration(
                inputs, torch.arange(3), teacher, hooks, opt, schedule, it, args, MEAN, STD, _Replay(draws)
            )
            assert abs(ours - theirs.item()) <= 1e-12 * abs(theirs.item())
            assert _rel(m.images.grad, inputs.grad) <= 1e-10
            assert _rel(m.images.detach(), inputs.detach()) <= 1e-10
    finally:
        for h in hooks:
            h.close()
    assert _rel(m.images.detach(), m.images.detach().clamp(-5, 5)) == 0 and float(inputs.grad.abs().max()) > 0


def test_sre2l_jitter_follows_the_data_size(tiny, teacher):
    """Below 64 px the authors' CIFAR jitter: a roll by 0..4 px at 32 px (size // 8: 3 at 28, 2 at 16), no crop, no
    flip, every offset reached; from 64 px ImageNet's crop + flip + roll (size // 7: 32 at 224)."""
    assert jitter_settings(32) == ("cifar", 4, False)
    assert jitter_settings(28) == ("cifar", 3, False)
    assert jitter_settings(224) == ("imagenet", 32, True)
    real, _ = tiny
    m = METHODS["sre2l"](real, 1, {"teacher": teacher, "jitter": 4}, 0, torch.device("cpu"))
    m.check()
    m.setup()
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float64).view(2, 3, 16, 16)
    seen = set()
    for _ in range(300):
        y = m._jitter(x)
        hits = [(a, b) for a in range(16) for b in range(16) if torch.equal(y, torch.roll(x, (a, b), (2, 3)))]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == {(a, b) for a in range(5) for b in range(5)}


def test_sre2l_imagenet_jitter_equals_the_authors(tiny, teacher):
    """The ImageNet jitter (forced at 16 px): torchvision's RandomResizedCrop and flip for the batch, then the roll."""
    real, _ = tiny
    m = METHODS["sre2l"](real, 1, {"teacher": teacher, "jitter_mode": "imagenet"}, 0, torch.device("cpu"))
    m.check()
    m.setup()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    outs = []
    for _ in range(6):
        state = m.generator.get_state()
        ours = m._jitter(x)
        torch.set_rng_state(state)  # the authors' crop and flip draw from the global generator in that state
        crop_flip = ref_sre2l.imagenet_jitter(x, 16, 0, _Replay([0, 0]))
        shifts = [
            (a, b) for a in range(3) for b in range(3) if torch.equal(ours, torch.roll(crop_flip, (a, b), (2, 3)))
        ]
        assert shifts, "the zoo's jitter is not the authors' crop and flip, rolled"
        outs.append(ours)
    assert not all(torch.equal(outs[0], o) for o in outs[1:])


# ----------------------------------------------------------------------------------------------------------------
# float32 on the real shapes (1 channel at 28 px, 3 at 32 px): SRe2L's recover step (loss, each BatchNorm layer's
# statistics term, image gradient) and RDED's crops, crop scores and selection, the zoo's in float32 against the
# authors' renditions in float32 and float64 on the same inputs (tests/tolerances.py's bound). The teacher is a
# ConvNet-3 with BatchNorm, made in float32 (running statistics and affine moved off the identity), the same module
# on both sides; width 32 and 10 classes (SRe2L), 2 classes of 10 images x 5 crops (RDED) by default, width 128 (and
# 4 classes of 20 images) under -m slow. A selection is compared only where the float64 truth's margin exceeds
# twice the bound: there the float32 picks cannot flip; elsewhere the zoo's picks must be the truth's up to it.
# ----------------------------------------------------------------------------------------------------------------


def _teacher32(channels, size, classes, width, seed=0):
    """A ConvNet-3 teacher with BatchNorm in float32 values, its running statistics and affine off the identity."""
    real, _ = _real(classes=classes, per=1, size=size, channels=channels, dtype=torch.float32)
    net = build_network("convnet_d3", real, torch.Generator().manual_seed(seed), width=width, norm="batchnorm")
    g = torch.Generator().manual_seed(seed + 100)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.add_(torch.randn(m.num_features, generator=g) * 0.3)
                m.bias.add_(torch.randn(m.num_features, generator=g) * 0.3)
    return net.float().eval()


def _real32(classes, per, size, channels, dtype, seed=0):
    """``_real``'s data made in float32, then in ``dtype`` (every dtype starts from the same values)."""
    real, pixels = _real(classes=classes, per=per, size=size, channels=channels, dtype=torch.float32, seed=seed)
    return RealData(real.images.to(dtype), real.labels, real.class_names, real.source, real.preprocessing), pixels


def _sre2l_step32(dtype, teacher, channels, size, classes, monkeypatch):
    """One recover iteration at ipc 1 in ``dtype``, the zoo's and the authors', from the same teacher, starting
    images and roll draws: (losses, BatchNorm terms, image gradients, images after the step), each (authors',
    zoo's)."""
    real, _ = _real32(classes, 1, size, channels, dtype)
    model = copy.deepcopy(teacher).to(dtype)
    m = METHODS["sre2l"](real, 1, {"teacher": model, "iterations": 1000}, 0, torch.device("cpu"))
    m.check()
    m.setup()
    start = torch.randn(m.images.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    with torch.no_grad():
        m.images.copy_(start)
    m.generator.manual_seed(5)  # the roll draws alike in every dtype (setup's randn takes more draws in float64)
    terms, bn_statistics_loss = [], zoo_sre2l.bn_statistics_loss

    def recorded(module, x):
        out = bn_statistics_loss(module, x)
        terms.append(out.detach())
        return out

    replay = torch.Generator()
    replay.set_state(m.generator.get_state())
    draws = torch.randint(0, m.max_shift + 1, (2,), generator=replay).tolist()
    with monkeypatch.context() as patch:
        patch.setattr(zoo_sre2l, "bn_statistics_loss", recorded)
        ours = m.step(0)
    inputs = start.clone().requires_grad_(True)
    hooks = [ref_sre2l.BNFeatureHook(mod) for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    opt = torch.optim.Adam([inputs], lr=0.25, betas=[0.5, 0.9], eps=1e-8)
    args = SimpleNamespace(jitter=m.max_shift, first_bn_multiplier=10.0, r_bn=0.01)
    mean, std = real.preprocessing["mean"], real.preprocessing["std"]
    try:
        theirs = ref_sre2l.recover_iteration(inputs, torch.arange(classes), model, hooks, opt,
                                             ref_sre2l.lr_cosine_policy(0.25, 0, 1000), 0, args, mean, std,
                                             _Replay(draws))  # fmt: skip
        their_terms = [h.r_feature.detach() for h in hooks]
    finally:
        for h in hooks:
            h.close()
    return ((theirs.item(), ours), (their_terms, terms), (inputs.grad.detach(), m.images.grad.detach()),
            (inputs.detach(), m.images.detach()))  # fmt: skip


def sre2l_float32_bound(channels, size, monkeypatch, classes=10, width=32):
    teacher = _teacher32(channels, size, classes, width)
    (r64, _), (t64, _), (g64, _), (x64, _) = _sre2l_step32(torch.float64, teacher, channels, size, classes,
                                                           monkeypatch)  # fmt: skip
    (r32, z32), (t32r, t32z), (g32r, g32z), (x32r, x32z) = _sre2l_step32(torch.float32, teacher, channels, size,
                                                                         classes, monkeypatch)  # fmt: skip
    out = {"image gradient": assert_within(g32z, g32r, g64, "image gradient")}
    out["images after the step"] = assert_within(x32z, x32r, x64, "images after the Adam step and the clip")
    out["loss"] = assert_scalar_within(z32, r32, r64, "loss")
    assert len(t32z) == len(t32r) == len(t64) == 3
    for i, (z, r, t) in enumerate(zip(t32z, t32r, t64)):
        out[f"BN term {i}"] = assert_scalar_within(z, r, t, f"BatchNorm layer {i}'s statistics term")
    return out


@pytest.mark.parametrize("channels, size", SHAPES)
def test_sre2l_step_float32_equals_the_authors(channels, size, monkeypatch):
    """recover_cifar.py's iteration in float32 on the real shapes: loss, BatchNorm terms, image gradient."""
    sre2l_float32_bound(channels, size, monkeypatch)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: the default run checks float32 on the same shapes, narrower
@pytest.mark.parametrize("channels, size", SHAPES)
def test_sre2l_step_float32_at_full_width_equals_the_authors(channels, size, monkeypatch):
    sre2l_float32_bound(channels, size, monkeypatch, width=128)


def _rded32(dtype, teacher, channels, size, classes, per, n_crops):
    """Each class's crops, scores and full ranking in ``dtype``: the zoo's (``random_resized_crops``,
    ``score_crops``, ``select_crops``) and the authors' (``MultiRandomCrop``, ``cross_entropy`` of the padded crops,
    ``selector``) from the same images and crop draws. Picks are (image, crop) indices, best first."""
    real, _ = _real32(classes, per, size, channels, dtype)
    model = copy.deepcopy(teacher).to(dtype)
    t = load_teacher(model, real)
    out = {k: [] for k in ("crops", "scores", "picks", "their crops", "their scores", "their picks")}
    for c in range(classes):
        imgs = real.images[real.labels == c]
        crops = random_resized_crops(imgs, n_crops, (size, size), (0.08, 1.0), torch.Generator().manual_seed(7 + c))
        losses = score_crops(t, crops, c, (size, size))
        index = torch.arange(per * n_crops).view(per, n_crops)
        picks = select_crops(index, losses, per)
        torch.manual_seed(7 + c)
        cropper = ref_rded.MultiRandomCrop(num_crop=n_crops, size=size, factor=1)
        theirs = torch.stack([cropper(img) for img in imgs])
        flat = theirs.permute(1, 0, 2, 3, 4).reshape(per * n_crops, *theirs.shape[2:])
        with torch.no_grad():
            their_loss = ref_rded.cross_entropy(model(ref_rded.pad(flat, size)), torch.full((per * n_crops,), c))
        chosen = ref_rded.selector(per, model, theirs, torch.full((per,), c), size, m=n_crops)
        their_picks = [next(int(i * n_crops + k) for i in range(per) for k in range(n_crops)
                            if torch.equal(theirs[i, k], x)) for x in chosen]  # fmt: skip
        for key, v in zip(out, (crops, losses, picks, theirs, their_loss.view(n_crops, per).T, their_picks)):
            out[key].append(torch.as_tensor(v))
    return {k: torch.stack(v) for k, v in out.items()}


def _robust(picks, truth, tol):
    """The positions of a full ranking (``picks``: image * n_crops + crop, best first) that no error up to ``tol``
    in the scores (``truth``: ``(images, crops)``) can change: the image's best crop leads its next by more than
    ``2 tol`` and its best score is more than ``2 tol`` from every other image's."""
    best = truth.min(1).values
    gap = truth.sort(1).values[:, 1] - best if truth.shape[1] > 1 else torch.full_like(best, float("inf"))
    images = picks // truth.shape[1]
    apart = (best[:, None] - best[None, :]).abs().fill_diagonal_(float("inf"))
    return [j for j, i in enumerate(images.tolist()) if gap[i] > 2 * tol and apart[i].min() > 2 * tol]


def rded_float32_bound(channels, size, classes=2, width=32, per=10, n_crops=5):
    teacher = _teacher32(channels, size, classes, width)
    t64 = _rded32(torch.float64, teacher, channels, size, classes, per, n_crops)
    t32 = _rded32(torch.float32, teacher, channels, size, classes, per, n_crops)
    assert torch.equal(t64["picks"], t64["their picks"])  # the zoo's float64 ranking is the authors'
    out = {"crops": assert_within(t32["crops"], t32["their crops"], t64["their crops"], "crops")}
    out["scores"] = assert_within(t32["scores"], t32["their scores"], t64["their scores"], "crop scores")
    robust = 0
    for c in range(classes):
        truth = t64["their scores"][c].double()
        tol = out["scores"]["bound"] * float(truth.abs().max())
        same = _robust(t64["their picks"][c], truth, tol)
        robust += len(same)
        for name in ("picks", "their picks"):
            got, want = t32[name][c], t64["their picks"][c]
            assert torch.equal(got[same], want[same]), (c, name, got.tolist(), want.tolist())
        # elsewhere the zoo's ranking is the truth's up to the bound: each pick is its image's best crop, and
        # comes no later than any image scoring more than 2 tol lower
        z = t32["picks"][c]
        picked = truth.flatten()[z]
        best = truth.min(1).values
        assert bool((picked <= best[z // n_crops] + 2 * tol).all()), (c, "a pick is not its image's best crop")
        assert bool((best[z // n_crops].cummax(0).values <= best[z // n_crops] + 2 * tol).all()), (c, "ranking")
    out["selection"] = {"robust": robust, "of": classes * per}
    return out


@pytest.mark.parametrize("channels, size", SHAPES)
def test_rded_selection_float32_equals_the_authors(channels, size):
    """synthesize/utils.py's crops, scores and selection in float32 on the real shapes (factor 1, as the authors'
    CIFAR setting): crops and scores within the bound in every class, the ranking the truth's where its margins
    exceed twice the bound."""
    rded_float32_bound(channels, size)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: the default run checks float32 on the same shapes, narrower
@pytest.mark.parametrize("channels, size", SHAPES)
def test_rded_selection_float32_at_full_width_equals_the_authors(channels, size):
    rded_float32_bound(channels, size, classes=4, width=128, per=20)
