"""MTT and HaBa against the authors' code (``zoo/bench/reference/mtt.py`` and ``haba.py``, renditions of
mtt-distillation's ``buffer.py`` / ``distill.py`` and DatasetFactorization's ``distill_fac.py`` / ``utils.py``).

Tiny shapes (3 classes, 3 x 12 x 12 images, ConvNet-3 of width 6), float64, the same weights, expert trajectory,
images, minibatch orders and augmentation draws on both sides: one DSA object draws from the zoo method's generator
on the zoo's side and from torch's global RNG (seeded alike) on the authors'. Relative error <= 1e-5 throughout.
Sections (d) and (e): MTT's step and HaBa's iteration in float32 on the real shapes, within tests/tolerances.py's bound.
"""

import copy
import random

import pytest
import torch
from tolerances import SHAPES, assert_scalar_within, assert_within, nets_like

from zoo.bench.reference.convnet import ReferenceConvNet
from zoo.bench.reference.haba import (
    Extractor,
    StyleTranslator,
    StyleTranslatorSharedDataset,
    SupConLoss,
    distill_fac_iteration,
)
from zoo.bench.reference.mtt import ReparamModule, buffer_expert, distill_iteration
from zoo.condense.core import RealData, SyntheticSet, make_network
from zoo.condense.factorization import HaBa, Hallucinator, render
from zoo.condense.mtt import MTT, Chunks, FlatModel, expert_epoch, flat_parameters, train_expert
from zoo.data.dsa import DSA
from zoo.models.convnet import checkpoint_filter_fn, convnet_d3

pytestmark = pytest.mark.parity

K, C, S, W = 3, 3, 12, 6  # classes, channels, side, network width
TOL = 1e-5
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def rel(a, b):
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def close(a, b, what=""):
    err = rel(a, b)
    assert err <= TOL, f"{what}: relative error {err:.3g}"
    return err


def networks(dtype=torch.float64, seed=0):
    """The authors' ConvNet and the zoo's with its weights."""
    torch.manual_seed(seed)
    ref = ReferenceConvNet(C, K, net_width=W, im_size=(S, S)).to(dtype)
    zoo_net = convnet_d3(width=W, img_size=S, num_classes=K, in_chans=C).to(dtype)
    zoo_net.load_state_dict(checkpoint_filter_fn(ref.state_dict(), zoo_net))
    return ref, zoo_net


def real_data(n_per_class=4, name="cifar10", seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(K * n_per_class, C, S, S, generator=g, dtype=torch.float64)
    labels = torch.arange(K).repeat_interleave(n_per_class)
    return RealData(images, labels, [str(i) for i in range(K)], {"name": name, "fingerprint": "test"}, {})


def trajectory(ref, epochs=3, seed=1):
    """An expert trajectory as buffer.py saves it: per epoch, a list of parameter tensors."""
    g = torch.Generator().manual_seed(seed)
    base = [p.detach().clone() for p in ref.parameters()]
    return [[p + 0.05 * e * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in base] for e in range(epochs)]


def grad_of(p):
    return p.grad.clone() if p.grad is not None else torch.zeros_like(p)


def flat(params):
    return torch.cat([p.reshape(-1) for p in params])


def augmenters(generator):
    """The same DSA for both sides: the zoo's draws from ``generator``, the authors' from torch's global RNG."""
    dsa = DSA(STRATEGY)
    return (lambda x: dsa(x, generator, per_sample=True)), (lambda x: dsa(x, None, per_sample=True))


# ----------------------------------------------------------------------------------------------------------------
# (a) MTT: one unrolled step and a short trajectory
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 3])
def test_mtt_step_equals_distill_py(steps):
    ipc, seed, start_epoch, expert_epochs = 2, 5, 1, 1
    ref, zoo_net = networks()
    traj = trajectory(ref)
    real = real_data()
    m = MTT(real, ipc, {"syn_steps": steps, "expert_epochs": expert_epochs, "batch_syn": 4, "lr_img": 100.0,
                        "lr_lr": 1e-5, "lr_teacher": 0.01}, seed, torch.device("cpu"))  # fmt: skip
    images = torch.randn(K * ipc, C, S, S, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.arange(K).repeat_interleave(ipc)
    # the zoo's side, as MTT.setup leaves it
    m.images, m.labels = images.clone().requires_grad_(True), labels
    m.student = FlatModel(zoo_net)
    m.syn_lr = torch.tensor(0.01, dtype=torch.float64).requires_grad_(True)
    m.make_optimizers()
    m.segment = lambda: (flat(traj[start_epoch]), flat(traj[start_epoch + expert_epochs]))
    m.augment, ref_aug = augmenters(m.generator)
    m.generator.manual_seed(seed)
    loss = m.step(0)
    # the authors' side
    student = ReparamModule(copy.deepcopy(ref))
    image_syn = images.clone().requires_grad_(True)
    syn_lr = torch.tensor(0.01, dtype=torch.float64).requires_grad_(True)
    opt_img = torch.optim.SGD([image_syn], lr=100.0, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)
    torch.manual_seed(seed)
    ref_loss = distill_iteration(student, traj, start_epoch, image_syn, labels, syn_lr, opt_img, opt_lr, steps,
                                 expert_epochs, 4, ref_aug)  # fmt: skip
    close(loss, ref_loss.item(), "loss")
    close(m.images.grad, image_syn.grad, "image gradient")
    close(m.syn_lr.grad, syn_lr.grad, "lr gradient")
    close(m.images.detach(), image_syn.detach(), "images after the step")
    close(m.syn_lr.detach(), syn_lr.detach(), "lr after the step")
    assert m.images.grad.abs().sum() > 0 and m.syn_lr.grad.abs() > 0


def test_chunks_follow_the_authors_order():
    # the authors pop the *last* chunk of randperm(n).split(batch); a fresh permutation when none is left
    g = torch.Generator().manual_seed(3)
    chunks = Chunks(7, 3, g)
    got = [chunks.next().tolist() for _ in range(4)]
    torch.manual_seed(3)
    pending, want = [], []
    for _ in range(4):
        if not pending:
            pending = list(torch.split(torch.randperm(7), 3))
        want.append(pending.pop().tolist())
    assert got == want


# ----------------------------------------------------------------------------------------------------------------
# (b) an expert epoch equals buffer.py's for the same seed
# ----------------------------------------------------------------------------------------------------------------


def test_expert_epochs_equal_buffer_py():
    seed, epochs, batch = 3, 2, 5
    ref, zoo_net = networks()
    real = real_data()
    test = real_data(2, seed=9)
    g = torch.Generator().manual_seed(seed)
    zoo_aug, ref_aug = augmenters(g)
    opt = torch.optim.SGD(zoo_net.parameters(), lr=0.01, momentum=0.0, weight_decay=0.0)
    rows = [flat_parameters(zoo_net)]
    for _ in range(epochs):
        expert_epoch(zoo_net, opt, real.images, real.labels, batch, g, zoo_aug)
        rows.append(flat_parameters(zoo_net))
    torch.manual_seed(seed)
    stamps = buffer_expert(ref, real.images, real.labels, test.images, test.labels, epochs, lr_teacher=0.01,
                           batch_train=batch, augment=ref_aug)  # fmt: skip
    assert len(stamps) == len(rows) == epochs + 1
    for e, (row, stamp) in enumerate(zip(rows, stamps)):
        close(row, flat(stamp), f"epoch {e}")
    assert rel(rows[-1], rows[0]) > 1e-3  # the expert moved
    # both sides left their RNG at the same place (the test pass's base seed included)
    assert torch.equal(g.get_state(), torch.get_rng_state())


def test_train_expert_equals_buffer_py():
    # the zoo's whole expert (make_network's ConvNet-3, its SGD and DSA) against buffer.py on its initial weights
    real = real_data(2)
    real = RealData(real.images.float()[:, :, :8, :8].contiguous(), real.labels, real.class_names, real.source, {})
    settings = {"seed": 0, "model": "convnet_d3", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "batch": 4,
                "dsa": STRATEGY, "epochs": 2}  # fmt: skip
    traj = train_expert(real, settings, 1, torch.device("cpu"))
    g = torch.Generator().manual_seed(1_000_003 * 0 + 1)
    net = make_network("convnet_d3", real.shape, K, g)  # what train_expert drew before its epochs
    ref = ReferenceConvNet(C, K, im_size=(8, 8))
    with torch.no_grad():
        for p, q in zip(ref.parameters(), net.parameters()):
            p.copy_(q)
    torch.set_rng_state(g.get_state())
    dsa = DSA(STRATEGY)
    stamps = buffer_expert(ref, real.images, real.labels, real.images[:3], real.labels[:3], 2, lr_teacher=0.01,
                           batch_train=4, augment=lambda x: dsa(x, None, per_sample=True))  # fmt: skip
    for e in range(3):
        close(traj[e], flat(stamps[e]), f"epoch {e}")


# ----------------------------------------------------------------------------------------------------------------
# (c) HaBa: the trajectory loss through the hallucinators, the club term, the extractor's step
# ----------------------------------------------------------------------------------------------------------------


def _extractor_pair(dtype=torch.float64):
    """The authors' Extractor and the zoo's ConvNet-3 (the method's extractor) with the same weights."""
    torch.manual_seed(4)
    ext = Extractor(K, channel=C, image_size=S, width=W).to(dtype)
    zoo_ext = convnet_d3(width=W, img_size=S, num_classes=K, in_chans=C).to(dtype)
    state = {}
    for i in range(3):
        for part, pos in (("conv", 0), ("norm", 1)):
            for t in ("weight", "bias"):
                state[f"stages.{i}.{part}.{t}"] = ext.model[4 * i + pos].state_dict()[t]
    state["head.fc.weight"], state["head.fc.bias"] = ext.classifier.weight, ext.classifier.bias
    zoo_ext.load_state_dict(state)
    return ext, zoo_ext


def _haba(ipc=2, n_hal=3, seed=5, steps=3, batch=4):
    ref, zoo_net = networks()
    traj = trajectory(ref)
    m = HaBa(real_data(), ipc, {"syn_steps": steps, "expert_epochs": 1, "batch_syn": batch, "n_hal": n_hal,
                                "lr_teacher": 0.01}, seed, torch.device("cpu"))  # fmt: skip
    g = torch.Generator().manual_seed(6)
    bases = torch.randn(K * ipc, 1, S, S, generator=g, dtype=torch.float64)
    torch.manual_seed(8)
    hals = torch.nn.ModuleList(Hallucinator(1, C, (S, S)) for _ in range(n_hal)).double()  # the authors' init
    with torch.no_grad():  # the scale and shift away from 1 / 0, so that their gradients are exercised
        for h in hals:
            h.scale.add_(0.1 * torch.randn(h.scale.shape, generator=g, dtype=torch.float64))
            h.shift.add_(0.1 * torch.randn(h.shift.shape, generator=g, dtype=torch.float64))
    ext, zoo_ext = _extractor_pair()
    m.n_bases, m.base_channels, m.n_hal = ipc, 1, n_hal
    m.bases = bases.clone().requires_grad_(True)
    m.base_labels = torch.arange(K).repeat_interleave(ipc)
    m.hals, m.extractor = hals, zoo_ext.train()
    m.student = FlatModel(zoo_net)
    m.syn_lr = torch.tensor(0.01, dtype=torch.float64).requires_grad_(True)
    m.make_optimizers()
    m.segment = lambda: (flat(traj[1]), flat(traj[2]))
    m._hal_index = lambda: random.randint(0, n_hal - 1)  # the authors draw it with Python's random
    m.augment, ref_aug = augmenters(m.generator)
    styles = torch.nn.ModuleList(StyleTranslator(1, C, C, image_size=S, kernel_size=3) for _ in range(n_hal)).double()
    styles.load_state_dict(hals.state_dict())
    authors = dict(ref=ref, traj=traj, bases=bases, styles=styles, ext=ext, aug=ref_aug)
    return m, authors


def test_haba_iteration_equals_distill_fac_py():
    seed, pyseed, ipc, n_hal, steps, batch = 5, 7, 2, 3, 3, 4
    m, a = _haba(ipc, n_hal, seed, steps, batch)
    o = m.options
    ext_before = [p.detach().clone() for p in m.extractor.parameters()]
    # the zoo's side: the factorization's update, then (separately) the extractor's
    m.generator.manual_seed(seed)
    random.seed(pyseed)
    chunks = Chunks(K * ipc, batch, m.generator)
    param_loss, club = m.factor_step(chunks)
    # the club step leaves the extractor alone: same parameters, no gradients
    for p, q in zip(m.extractor.parameters(), ext_before):
        assert torch.equal(p, q) and p.grad is None and p.requires_grad
    zoo_mid = {
        "bases_grad": m.bases.grad.clone(), "bases": m.bases.detach().clone(),
        "hal_grads": [grad_of(p) for p in m.hals.parameters()],
        "hals": [p.detach().clone() for p in m.hals.parameters()],
        "lr_grad": m.syn_lr.grad.clone(), "lr": m.syn_lr.detach().clone(),
    }  # fmt: skip
    sim = m.extractor_step(chunks)
    # the authors' side
    image_syn = a["bases"].view(K, ipc, 1, S, S).clone().requires_grad_(True)
    styles, ext = a["styles"], a["ext"]
    syn_lr = torch.tensor(0.01, dtype=torch.float64).requires_grad_(True)
    opts = [
        torch.optim.SGD([image_syn], lr=o["lr_img"], momentum=0.95),
        torch.optim.SGD(styles.parameters(), lr=o["lr_hal"], momentum=0.95),
        torch.optim.SGD([syn_lr], lr=o["lr_lr"], momentum=0.9),
        torch.optim.SGD(ext.parameters(), lr=0.001, momentum=0.9),
    ]
    ref_mid = {}

    def hook():
        ref_mid.update(
            bases_grad=image_syn.grad.clone().view(K * ipc, 1, S, S),
            bases=image_syn.detach().clone().view(K * ipc, 1, S, S),
            hal_grads=[grad_of(p) for p in styles.parameters()],
            hals=[p.detach().clone() for p in styles.parameters()],
            lr_grad=syn_lr.grad.clone(), lr=syn_lr.detach().clone(),
        )  # fmt: skip

    torch.manual_seed(seed)
    random.seed(pyseed)
    losses = distill_fac_iteration(
        ReparamModule(copy.deepcopy(a["ref"])), a["traj"], 1, image_syn, styles, ext, syn_lr, *opts, SupConLoss(), K,
        ipc, n_hal, steps, 1, batch, o["lambda_club"], o["lambda_cls"], o["lambda_likeli"], o["lambda_contrast"],
        a["aug"], hook,
    )  # fmt: skip
    close(param_loss, losses["param"], "trajectory loss")
    close(club, losses["club"], "club term")
    close(sim, losses["sim"], "extractor loss")
    for key in ("bases_grad", "bases", "lr_grad", "lr"):
        close(zoo_mid[key], ref_mid[key], key)
    for i, (p, q) in enumerate(zip(zoo_mid["hal_grads"], ref_mid["hal_grads"])):
        close(p, q, f"hallucinator gradient {i}")
    assert all(q.abs().sum() > 0 for q in ref_mid["hal_grads"][:6])  # the drawn ones got gradients
    for i, (p, q) in enumerate(zip(zoo_mid["hals"], ref_mid["hals"])):
        close(p, q, f"hallucinator {i}")
    zoo_ext = dict(m.extractor.named_parameters())
    for i in range(3):
        close(zoo_ext[f"stages.{i}.conv.weight"], ext.model[4 * i].weight, f"extractor conv {i}")
        close(zoo_ext[f"stages.{i}.norm.weight"], ext.model[4 * i + 1].weight, f"extractor norm {i}")
    close(zoo_ext["head.fc.weight"], ext.classifier.weight, "extractor classifier")
    assert rel(zoo_ext["head.fc.weight"], ext_before[-2]) > 0  # the extractor did move in its own step


def test_supcon_equals_the_authors():
    from zoo.condense.factorization import supcon_loss

    g = torch.Generator().manual_seed(0)
    z0 = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64))
    z1 = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64))
    y = torch.tensor([0, 1, 1, 2, 0, 2])
    close(supcon_loss(z0, z1, y), SupConLoss()(torch.stack([z0, z1], dim=1), y), "SupCon")


# ----------------------------------------------------------------------------------------------------------------
# (d) evaluation: one hallucinator per sample per read, as StyleTranslatorSharedDataset
# ----------------------------------------------------------------------------------------------------------------


def test_eval_sampler_matches_the_shared_dataset():
    ipc, n_hal = 2, 3
    m, a = _haba(ipc, n_hal)
    images, labels, _, extra = m.result()
    synset = SyntheticSet(images.float(), labels, {}, None, {k: v.float() for k, v in extra.items()})
    sample = HaBa.eval_sampler(synset)
    ds = StyleTranslatorSharedDataset(a["bases"].view(K, ipc, 1, S, S).float(), copy.deepcopy(a["styles"]).float())
    assert len(ds) == len(synset) == K * ipc
    order = torch.tensor([4, 0, 5, 1, 3, 2, 4, 4, 0])
    random.seed(11)
    with torch.no_grad():
        ref = [ds[int(i)] for i in order]
    random.seed(11)
    draws = torch.tensor([random.randint(0, n_hal - 1) for _ in order])  # the draws the dataset made
    assert [y for _, y in ref] == synset.labels[order].tolist()
    hals = torch.nn.ModuleList(m.hals).float()
    mine = render(synset.extra["bases"], hals, order, draws)
    close(mine, torch.stack([x for x, _ in ref]), "hallucinated samples")
    # the sampler draws one hallucinator per sample and per call, from the generator it is given
    g = torch.Generator().manual_seed(0)
    got = sample(order, g)
    want = render(synset.extra["bases"], hals, order, torch.randint(n_hal, (len(order),), generator=g.manual_seed(0)))
    close(got, want, "sampler")
    many = torch.arange(K * ipc).repeat(20)
    a1, a2 = sample(many, g), sample(many, g)
    assert not torch.equal(a1, a2)  # a new draw per read
    per_sample = {tuple(x.flatten()[:4].tolist()) for x in a1.view(20, K * ipc, C, S, S)[:, 0]}
    assert len(per_sample) == n_hal  # sample 0 went through every hallucinator over the reads
    # the stored images: base r of a class through hallucinator r mod K
    rows = torch.arange(K * ipc)
    close(synset.images, render(synset.extra["bases"], hals, rows, rows % ipc % n_hal), "result images")


# ----------------------------------------------------------------------------------------------------------------
# (d) float32 on the real shapes: MTT's step (unrolled student, trajectory loss, image and lr gradients) against
# distill.py's in float32 and float64 on the same inputs (tests/tolerances.py's bound). The augmentation is off
# here (DSA's float32 draws are the DC/DSA parity's, test_condense_parity.py); ConvNet-3 of width 16, 3 classes and
# 2 unrolled steps by default, width 128, 10 classes and distill.py's 20 steps under -m slow.
# ----------------------------------------------------------------------------------------------------------------


def _mtt_step32(dtype, channels, size, classes, width, steps, seed=0):
    ref, zoo_net = nets_like(channels, size, dtype, seed, classes, width)
    g = torch.Generator().manual_seed(seed + 1)
    base = [p.detach().float() for p in ref.parameters()]  # the trajectory in float32 values, then in ``dtype``
    traj = [[(p + 0.05 * e * torch.randn(p.shape, generator=g)).to(dtype) for p in base] for e in range(3)]
    images = torch.randn(classes, channels, size, size, generator=g).to(dtype)
    labels = torch.arange(classes)
    real = RealData(images, labels, [str(i) for i in range(classes)], {"name": "cifar10", "fingerprint": "t"}, {})
    m = MTT(real, 1, {"syn_steps": steps, "expert_epochs": 1, "batch_syn": 0, "lr_img": 1000.0, "lr_lr": 1e-5,
                      "lr_teacher": 0.01}, seed, torch.device("cpu"))  # fmt: skip
    m.images, m.labels = images.clone().requires_grad_(True), labels
    m.student = FlatModel(zoo_net)
    m.syn_lr = torch.tensor(0.01, dtype=dtype).requires_grad_(True)
    m.make_optimizers()
    m.segment = lambda: (flat(traj[1]), flat(traj[2]))
    m.augment = lambda x: x
    loss = m.step(0)
    student = ReparamModule(copy.deepcopy(ref))
    image_syn = images.clone().requires_grad_(True)
    syn_lr = torch.tensor(0.01, dtype=dtype).requires_grad_(True)
    opt_img = torch.optim.SGD([image_syn], lr=1000.0, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)
    ref_loss = distill_iteration(student, traj, 1, image_syn, labels, syn_lr, opt_img, opt_lr, steps, 1, classes,
                                 lambda x: x)  # fmt: skip
    return (ref_loss.item(), loss, image_syn.grad.detach(), m.images.grad.detach(), syn_lr.grad.item(),
            m.syn_lr.grad.item())  # fmt: skip


def mtt_float32_bound(channels, size, classes=3, width=16, steps=2):
    r64, _, g64, _, l64, _ = _mtt_step32(torch.float64, channels, size, classes, width, steps)
    r32, z32, g32r, g32z, l32r, l32z = _mtt_step32(torch.float32, channels, size, classes, width, steps)
    out = {"image gradient": assert_within(g32z, g32r, g64, "image gradient")}
    out["loss"] = assert_scalar_within(z32, r32, r64, "loss")
    out["lr gradient"] = assert_scalar_within(l32z, l32r, l64, "lr gradient")
    return out


@pytest.mark.parametrize("channels, size", SHAPES)
def test_mtt_step_float32_equals_distill_py(channels, size):
    mtt_float32_bound(channels, size)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: the default run checks float32 on the same shapes, narrower
@pytest.mark.parametrize("channels, size", SHAPES)
def test_mtt_step_float32_at_full_width_equals_distill_py(channels, size):
    mtt_float32_bound(channels, size, classes=10, width=128, steps=20)


# ----------------------------------------------------------------------------------------------------------------
# (e) float32 on the real shapes: HaBa's iteration (trajectory loss through the hallucinators, the club term, the
# extractor's step) against distill_fac.py's in float32 and float64 on the same inputs (tests/tolerances.py's
# bound): the trajectory loss, club term and extractor loss, the lr's gradient, each base's gradient (one row per
# base), each hallucinator's gradients (one row per hallucinator and parameter) and the extractor's weights after its
# step. Augmentation off, as for MTT above; bases with the data's channels. ConvNet-3 of width 16, 3 classes, 3
# hallucinators and 2 unrolled steps by default; width 128, 10 classes, 5 hallucinators and the ipc-1 script's
# 50 steps under -m slow.
# ----------------------------------------------------------------------------------------------------------------


def _factors32(channels, size, classes, width, n_hal, seed):
    """Bases, hallucinators and the extractor pair in float32 values (every dtype starts from the same ones)."""
    g = torch.Generator().manual_seed(seed + 2)
    bases = torch.randn(classes, channels, size, size, generator=g)
    torch.manual_seed(seed + 3)
    hals = torch.nn.ModuleList(Hallucinator(channels, channels, (size, size)) for _ in range(n_hal))
    with torch.no_grad():  # scale and shift off 1 / 0, so that their gradients are exercised
        for h in hals:
            h.scale.add_(0.1 * torch.randn(h.scale.shape, generator=g))
            h.shift.add_(0.1 * torch.randn(h.shift.shape, generator=g))
    torch.manual_seed(seed + 4)
    ext = Extractor(classes, channel=channels, image_size=size, width=width)
    zoo_ext = convnet_d3(width=width, img_size=size, num_classes=classes, in_chans=channels)
    state = {f"stages.{i}.{part}.{t}": ext.model[4 * i + pos].state_dict()[t]
             for i in range(3) for part, pos in (("conv", 0), ("norm", 1)) for t in ("weight", "bias")}  # fmt: skip
    state["head.fc.weight"], state["head.fc.bias"] = ext.classifier.weight, ext.classifier.bias
    zoo_ext.load_state_dict(state)
    return bases, hals, ext, zoo_ext


def _haba_zoo32(dtype, parts, real, traj, n_hal, steps, seed):
    """The zoo's HaBa iteration in ``dtype`` (ipc 1): (trajectory loss, club, extractor loss, lr gradient, base
    gradients, hallucinator gradients by parameter, extractor weights after)."""
    bases, hals, _, zoo_net, zoo_ext = parts
    classes = bases.shape[0]
    m = HaBa(real, 1, {"syn_steps": steps, "expert_epochs": 1, "batch_syn": classes, "n_hal": n_hal,
                       "lr_teacher": 0.01}, seed, torch.device("cpu"))  # fmt: skip
    m.n_bases, m.base_channels, m.n_hal = 1, bases.shape[1], n_hal
    m.bases = bases.clone().requires_grad_(True)
    m.base_labels = torch.arange(classes)
    m.hals, m.extractor = copy.deepcopy(hals), copy.deepcopy(zoo_ext).train()
    m.student = FlatModel(zoo_net)
    m.syn_lr = torch.tensor(0.01, dtype=dtype).requires_grad_(True)
    m.make_optimizers()
    m.segment = lambda: (flat(traj[1]), flat(traj[2]))
    m._hal_index = lambda: random.randint(0, n_hal - 1)  # the authors draw it with Python's random
    m.augment = lambda x: x
    m.generator.manual_seed(seed)
    random.seed(seed + 5)
    chunks = Chunks(classes, classes, m.generator)
    param_loss, club = m.factor_step(chunks)
    lr_grad, base_grad = m.syn_lr.grad.item(), m.bases.grad.detach().clone()
    hal_grads = {n: torch.stack([grad_of(dict(h.named_parameters())[n]) for h in m.hals])
                 for n, _ in m.hals[0].named_parameters()}  # fmt: skip
    sim = m.extractor_step(chunks)
    after = {n: p.detach().clone() for n, p in m.extractor.named_parameters()}
    return param_loss.item(), club.item(), sim.item(), lr_grad, base_grad, hal_grads, after


def _haba_authors32(dtype, parts, traj, n_hal, steps, seed, o):
    """distill_fac.py's iteration in ``dtype`` on the same inputs and draws: as :func:`_haba_zoo32`."""
    bases, hals, ext, ref, _ = parts
    classes = bases.shape[0]
    size = bases.shape[-1]
    image_syn = bases.view(classes, 1, *bases.shape[1:]).clone().requires_grad_(True)
    styles = torch.nn.ModuleList(StyleTranslator(bases.shape[1], hals[0].dec.out_channels, hals[0].dec.out_channels,
                                                 image_size=size, kernel_size=3) for _ in range(n_hal)).to(dtype)  # fmt: skip
    styles.load_state_dict(hals.state_dict())
    ext = copy.deepcopy(ext)
    syn_lr = torch.tensor(0.01, dtype=dtype).requires_grad_(True)
    opts = [torch.optim.SGD([image_syn], lr=o["lr_img"], momentum=0.95),
            torch.optim.SGD(styles.parameters(), lr=o["lr_hal"], momentum=0.95),
            torch.optim.SGD([syn_lr], lr=o["lr_lr"], momentum=0.9),
            torch.optim.SGD(ext.parameters(), lr=0.001, momentum=0.9)]  # fmt: skip
    mid = {}

    def hook():
        mid["lr"], mid["bases"] = syn_lr.grad.item(), image_syn.grad.detach().view_as(bases).clone()
        mid["hals"] = {n: torch.stack([grad_of(dict(s.named_parameters())[n]) for s in styles])
                       for n, _ in styles[0].named_parameters()}  # fmt: skip

    torch.manual_seed(seed)
    random.seed(seed + 5)
    losses = distill_fac_iteration(
        ReparamModule(copy.deepcopy(ref)), traj, 1, image_syn, styles, ext, syn_lr, *opts, SupConLoss(), classes, 1,
        n_hal, steps, 1, classes, o["lambda_club"], o["lambda_cls"], o["lambda_likeli"], o["lambda_contrast"], None,
        hook,
    )  # fmt: skip
    after = {"stages.0.conv.weight": ext.model[0].weight, "stages.2.norm.weight": ext.model[9].weight,
             "head.fc.weight": ext.classifier.weight}  # fmt: skip
    return (losses["param"].item(), losses["club"].item(), losses["sim"].item(), mid["lr"], mid["bases"], mid["hals"],
            {k: v.detach().clone() for k, v in after.items()})  # fmt: skip


def _haba_step32(dtype, channels, size, classes, width, n_hal, steps, seed=0):
    """Both sides' HaBa iteration in ``dtype``: (authors', zoo's)."""
    ref, zoo_net = nets_like(channels, size, dtype, seed, classes, width)
    g = torch.Generator().manual_seed(seed + 1)
    base = [p.detach().float() for p in ref.parameters()]
    traj = [[(p + 0.05 * e * torch.randn(p.shape, generator=g)).to(dtype) for p in base] for e in range(3)]
    bases, hals, ext, zoo_ext = _factors32(channels, size, classes, width, n_hal, seed)
    parts = (bases.to(dtype), hals.to(dtype), ext.to(dtype), ref, zoo_ext.to(dtype))
    real = RealData(bases.to(dtype), torch.arange(classes), [str(i) for i in range(classes)],
                    {"name": "cifar10", "fingerprint": "t"}, {})  # fmt: skip
    zoo = _haba_zoo32(dtype, parts, real, traj, n_hal, steps, seed)
    o = HaBa(real, 1, {}, seed, torch.device("cpu")).options
    return _haba_authors32(dtype, parts, traj, n_hal, steps, seed, o), zoo


def haba_float32_bound(channels, size, classes=3, width=16, n_hal=3, steps=2):
    (r64, _) = _haba_step32(torch.float64, channels, size, classes, width, n_hal, steps)
    r32, z32 = _haba_step32(torch.float32, channels, size, classes, width, n_hal, steps)
    out = {}
    for i, what in enumerate(("trajectory loss", "club term", "extractor loss", "lr gradient")):
        out[what] = assert_scalar_within(z32[i], r32[i], r64[i], what)
    out["base gradient"] = assert_within(z32[4], r32[4], r64[4], "base gradient")
    for name, rows in z32[5].items():
        out[f"hallucinator {name} gradient"] = assert_within(rows, r32[5][name], r64[5][name], f"hal {name} gradient")
    for name, want in r64[6].items():
        got, mine = z32[6][name], r32[6][name]
        out[f"extractor {name}"] = assert_within(got[None], mine[None], want[None], f"extractor {name} after")
    return out


@pytest.mark.parametrize("channels, size", SHAPES)
def test_haba_iteration_float32_equals_distill_fac_py(channels, size):
    """distill_fac.py's iteration in float32 on the real shapes: losses, gradients and the extractor's step."""
    haba_float32_bound(channels, size)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: the default run checks float32 on the same shapes, narrower
@pytest.mark.parametrize("channels, size", SHAPES)
def test_haba_iteration_float32_at_full_width_equals_distill_fac_py(channels, size):
    haba_float32_bound(channels, size, classes=10, width=128, n_hal=5, steps=50)
