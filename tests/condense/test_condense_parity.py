"""DC, DSA, DM and the evaluation loop against the authors' code (VICO-UoE/DatasetCondensation), rendered in
``zoo/bench/reference/datasetcondensation.py``: on the same network weights, real batches and augmentation draws,
the zoo's steps give the authors' loss, image gradient and images, its DSA ops the authors' images, and its
evaluation loop the authors' trained weights. Float64, tiny shapes (8-12 px, a ConvNet of width 8, 3 classes); then
the DC, DSA and DM steps and the evaluation loop's trained weights in float32 on the real shapes (1 channel at 28 px,
3 at 32 px), within a bound made from the authors' own float32-vs-float64 error on the same inputs (section f).
"""

from collections import deque

import numpy as np
import pytest
import torch
from tolerances import EPS32, SHAPES, TIMES, ULPS, assert_state_within, nets_like, per_class

import zoo
import zoo.bench.reference.datasetcondensation as ref
from zoo.bench.reference.convnet import ReferenceConvNet
from zoo.condense.augment import dc_augment
from zoo.condense.core import METHODS, RealData, SyntheticSet
from zoo.condense.dc import default_loops
from zoo.condense.evaluate import EvalSettings, evaluate_set, train_network
from zoo.data.dsa import DSA, DSAParams
from zoo.models.convnet import checkpoint_filter_fn

pytestmark = pytest.mark.parity

K, C, S, WIDTH = 3, 3, 8, 8
FULL = "color_crop_cutout_flip_scale_rotate"
RTOL = 1e-5


@pytest.fixture(autouse=True)
def float64_reference(monkeypatch):
    """The authors' ``torch.float`` as float64, so both sides compare at 1e-5."""
    monkeypatch.setattr(ref, "DTYPE", torch.float64)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def nets(seed=0, channels=C, size=S):
    """The authors' ConvNet-3 (width 8) with random weights, and the zoo's with the same weights; float64."""
    torch.manual_seed(seed)
    r = ReferenceConvNet(channels, K, WIDTH, 3, "instancenorm", (size, size))
    with torch.no_grad():
        for t in r.state_dict().values():  # norm affines away from their 1 / 0 init
            if t.ndim == 1:
                t.add_(torch.randn(t.shape) * 0.3)
    z = zoo.create_model("convnet_d3", num_classes=K, in_chans=channels, img_size=size, width=WIDTH)
    z.load_state_dict(checkpoint_filter_fn(r.state_dict(), z))
    return r.double(), z.double()


def real_data(n_per_class=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(K).repeat_interleave(n_per_class)
    images = torch.randn(K * n_per_class, C, S, S, generator=g, dtype=torch.float64) + labels[:, None, None, None]
    return RealData(images, labels, [str(c) for c in range(K)], {"name": "cifar10"}, {"mean": [0.0] * C})


def authors_draws(dsa: DSA, seed: int, n: int, size, dtype, g: torch.Generator) -> DSAParams:
    """``DiffAugment(x, strategy, seed=seed)`` on ``n`` images, as the zoo's parameters: the same draws from
    ``g``, reseeded before each as ``set_seed_DiffAug`` reseeds (``g`` ends where torch's global RNG ends); the
    siamese transform is the first row."""
    nxt = iter(range(seed, seed + 10))
    g.manual_seed(next(nxt))
    op = dsa.ops[torch.randint(0, len(dsa.ops), size=(1,), generator=g).item()]

    def draw(fn):
        g.manual_seed(next(nxt))
        return fn()

    if op == "color":
        cols = [draw(lambda: torch.rand(n, generator=g, dtype=dtype)) for _ in range(3)]
    elif op in ("flip", "rotate"):
        cols = [draw(lambda: torch.rand(n, generator=g))]
    elif op == "scale":
        cols = [draw(lambda: torch.rand(n, generator=g)) for _ in range(2)]
    elif op == "crop":
        cols = [draw(lambda r=int(s * 0.125 + 0.5): torch.randint(-r, r + 1, (n,), generator=g)) for s in size]
    else:
        cuts = [int(s * 0.5 + 0.5) for s in size]
        cols = [draw(lambda s=s, c=c: torch.randint(0, s + (1 - c % 2), (n,), generator=g)) for s, c in zip(size, cuts)]
    return DSAParams(op, torch.stack(cols, 1)[:1])


# -- (a) DSA ops -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["color", "crop", "cutout", "flip", "scale", "rotate", FULL])
def test_dsa_per_image_equals_diffaugment(op):
    """Per-image draws (the evaluation's): the same generator state gives the authors' images and leaves the
    generator where DiffAugment leaves torch's global one; exact for every op but the affine ones."""
    x = torch.randn(6, C, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dsa = DSA(op)
    for seed in range(4):
        torch.manual_seed(seed)
        want = ref.DiffAugment(x.clone(), op, param=ref.ParamDiffAug())
        after = torch.rand(3)
        g = torch.Generator().manual_seed(seed)
        got = dsa(x, g, per_sample=True)
        assert torch.equal(torch.rand(3, generator=g), after)
        assert not torch.equal(got, x) or op == "flip"
        if op in ("scale", "rotate"):
            assert rel(got, want) <= RTOL, (op, rel(got, want))
        elif op != FULL:
            assert torch.equal(got, want), op
        else:
            assert rel(got, want) <= RTOL


@pytest.mark.parametrize("seed", [1, 2, 3, 5, 8, 13, 21, 34])
def test_dsa_siamese_equals_diffaugment(seed):
    """The authors' seeded siamese call on a real batch (7) and a synthetic one (2) equals the zoo's shared
    transform made from the same draws."""
    gx = torch.Generator().manual_seed(seed)
    real = torch.randn(7, C, 12, 12, generator=gx, dtype=torch.float64)
    syn = torch.randn(2, C, 12, 12, generator=gx, dtype=torch.float64, requires_grad=True)
    dsa = DSA(FULL)
    want_real = ref.DiffAugment(real, FULL, seed=seed, param=ref.ParamDiffAug())
    want_syn = ref.DiffAugment(syn, FULL, seed=seed, param=ref.ParamDiffAug())
    p = authors_draws(dsa, seed, 2, (12, 12), torch.float64, torch.Generator())
    got_real, got_syn = dsa.apply(real, p), dsa.apply(syn, p)
    assert rel(got_real, want_real) <= RTOL and rel(got_syn, want_syn) <= RTOL, p.op
    (gw,) = torch.autograd.grad((want_syn**2).sum(), syn)
    (gz,) = torch.autograd.grad((got_syn**2).sum(), syn)
    assert rel(gz, gw) <= RTOL


def test_rotation_turns_the_authors_way_and_scale_keeps_the_centre():
    """The two details the zoo had wrong: an anticlockwise turn for a positive angle (a pixel right of the centre
    moves up) and ``align_corners=False`` (unit scale is the identity)."""
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 7] = 1.0
    turned = DSA("rotate", rotate=90.0).apply(x, DSAParams("rotate", torch.tensor([[1.0]])))  # +90 degrees
    assert turned[0, 0, 1, 4] > 0.9, turned[0, 0]
    img = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    same = DSA("scale", scale=1.0).apply(img, DSAParams("scale", torch.tensor([[0.3, 0.7]])))
    assert torch.allclose(same, img, atol=1e-12)  # float64 sampling at 8 px rounds by ~2**-52 x 8; 1e-12 is 500x


# -- (b, c) DC, DSA and DM steps ---------------------------------------------------------------------------------------
def _method(name, real, ipc, options, zoo_net, batches, seeds):
    """The zoo's method, its network, real batches and siamese draws replaced by the test's (the authors' draws
    made from the method's own generator, so what follows in the step sees the authors' generator state)."""
    m = METHODS[name](real, ipc, {"init": "real", **options}, seed=0, device=torch.device("cpu"))
    m.setup()
    m.network = lambda name=None: zoo_net
    queues = {c: deque(b) for c, b in batches.items()}
    real.class_images = lambda c, n=None, generator=None: queues[c].popleft()
    real.class_batch = lambda c, n=None, generator=None, gather=True: queues[c].popleft()
    seed_q = deque(seeds)
    if m.dsa is not None:
        m._siamese = lambda: authors_draws(m.dsa, seed_q.popleft(), ipc, (S, S), torch.float64, m.generator)
    return m


@pytest.mark.parametrize("method, outer, inner", [("dc", 2, 2), ("dsa", 1, 1), ("dsa", 2, 2)])
def test_dc_and_dsa_step_equal_the_authors(method, outer, inner):
    """One iteration of main.py (``outer`` image updates, ``inner`` network epochs between them) and the zoo's
    step: the same logged loss, image gradient (of the last outer step) and images (ipc 1 with one outer step, as
    the authors' loops for ipc 1 are)."""
    ipc, batch_real = (1 if outer == 1 else 2), 5
    real = real_data()
    r_net, z_net = nets(seed=3)
    gb = torch.Generator().manual_seed(4)
    batches = {c: [real.images[real.by_class[c][torch.randperm(12, generator=gb)[:batch_real]]] for _ in range(outer)]
               for c in range(K)}  # fmt: skip
    seeds = [101 + 17 * i for i in range(outer * K)]
    opts = dict(batch_real=batch_real, outer_loop=outer, inner_loop=inner, batch_train=4, dsa_strategy=FULL)
    m = _method(method, real, ipc, opts, z_net, batches, seeds)
    syn = m.images.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    queues = {c: deque(b) for c, b in batches.items()}
    args = ref.make_args(ipc=ipc, batch_real=batch_real, batch_train=4, outer_loop=outer, inner_loop=inner,
                         dsa=method == "dsa", dsa_strategy=FULL)  # fmt: skip
    seed_it = iter(seeds)
    torch.manual_seed(77)
    m.generator.manual_seed(77)  # DC's inner loop draws from here what the authors' draws from the global RNG
    want = ref.dc_iteration(r_net, syn, m.labels.clone(), opt, lambda c, n: queues[c].popleft(), args, K,
                            lambda: next(seed_it))  # fmt: skip
    got = m.step(0)
    assert want > 0 and abs(got - want) <= RTOL * abs(want), (got, want)
    assert rel(m.images.grad, syn.grad) <= RTOL, rel(m.images.grad, syn.grad)
    assert rel(m.images.detach(), syn.detach()) <= RTOL
    if outer > 1:  # the networks trained alike between the outer steps
        for (_, a), (_, b) in zip(sorted(z_net.state_dict().items()), sorted(checkpoint_filter_fn(
                r_net.state_dict(), z_net).items())):  # fmt: skip
            assert rel(a, b) <= RTOL


# with DSA under -m slow (test_dm_step_float32_equals_the_authors runs it by default)
@pytest.mark.parametrize("dsa_on", [pytest.param(True, marks=pytest.mark.slow), False])
def test_dm_step_equals_the_authors(dsa_on):
    """main_DM.py's iteration and the zoo's one-forward step: the same logged loss, image gradient and images,
    each class under its own siamese transform (the seeds give classes different ops)."""
    ipc, batch_real = 3, 6
    real = real_data()
    r_net, z_net = nets(seed=5)
    gb = torch.Generator().manual_seed(6)
    batches = {c: [real.images[real.by_class[c][torch.randperm(12, generator=gb)[:batch_real]]]] for c in range(K)}
    seeds = [1, 4, 9]
    m = _method("dm", real, ipc, dict(batch_real=batch_real, dsa=dsa_on, dsa_strategy=FULL), z_net, batches, seeds)
    if dsa_on:
        ops = {authors_draws(m.dsa, s, 1, (S, S), torch.float64, torch.Generator()).op for s in seeds}
        assert len(ops) >= 2, ops
    syn = m.images.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
    queues = {c: deque(b) for c, b in batches.items()}
    args = ref.make_args(ipc=ipc, batch_real=batch_real, dsa=dsa_on, dsa_strategy=FULL)
    seed_it = iter(seeds)
    want = ref.dm_iteration(r_net, syn, opt, lambda c, n: queues[c].popleft(), args, K, lambda: next(seed_it))
    got = m.step(0)
    assert want > 0 and abs(got - want) <= RTOL * abs(want), (got, want)
    assert rel(m.images.grad, syn.grad) <= RTOL and rel(m.images.detach(), syn.detach()) <= RTOL


# -- (d) loops ---------------------------------------------------------------------------------------------------------
def test_loop_table_is_get_loops():
    for ipc in (1, 10, 20, 30, 40, 50):
        assert default_loops(ipc) == ref.get_loops(ipc)


# -- (e) evaluation ----------------------------------------------------------------------------------------------------
def _eval_set(seed=8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(K).repeat_interleave(2)
    return torch.randn(6, C, S, S, generator=g, dtype=torch.float64) + labels[:, None, None, None], labels


@pytest.mark.parametrize("aug", ["dsa", "dc_mnist", "none"])
def test_evaluation_reaches_evaluate_synsets_weights(aug):
    """evaluate_synset (Epoch = 3: 4 passes, lr x 0.1 after pass 2, batch 4 of 6 images) and train_network from
    the same weights and seed: the same trained weights."""
    images, labels = _eval_set()
    r_net, z_net = nets(seed=9)
    dc_aug = ref.get_daparam("MNIST", "ConvNet", "ConvNet", 1) if aug == "dc_mnist" else None
    args = ref.make_args(epoch_eval_train=3, batch_train=4, dsa=aug == "dsa", dsa_strategy=FULL, dc_aug_param=dc_aug)
    torch.manual_seed(11)
    if aug == "dc_mnist":  # the zoo seeds numpy's generator for augment from its own
        np.random.seed(int(torch.randint(2**31 - 1, (1,))))
    start = {k: v.clone() for k, v in z_net.state_dict().items()}
    ref.evaluate_synset(0, r_net, images.clone(), labels, None, args)
    s = EvalSettings(epochs=3, batch=4, dsa=aug == "dsa", dsa_strategy=FULL,
                     dc_aug=dc_aug["strategy"] if dc_aug else None)  # fmt: skip
    train_network(z_net, images, labels, s.epochs + 1, s, generator=torch.Generator().manual_seed(11))
    want = checkpoint_filter_fn(r_net.state_dict(), z_net)
    for k, v in z_net.state_dict().items():
        assert not torch.equal(v, start[k]) or k.endswith("num_batches_tracked")
        assert rel(v, want[k]) <= RTOL, (k, rel(v, want[k]))


def test_dc_augment_equals_the_authors_augment():
    """The MNIST evaluation's augmentation (crop, scale, rotate per image) on the same numpy draws."""
    x = torch.randn(8, 1, 12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    np.random.seed(5)
    want = ref.augment(x.clone(), dict(crop=4, scale=0.2, rotate=45, noise=0.001, strategy="crop_scale_rotate"), "cpu")
    got = dc_augment(x, "crop_scale_rotate", np.random.RandomState(5))
    assert torch.equal(got, want) and not torch.equal(got, x)


def test_a_generated_set_is_read_through_its_methods_sampler(monkeypatch):
    """evaluate_set reads a set whose method has an ``eval_sampler`` through it, batch by batch."""
    images, labels = _eval_set()
    calls = []

    class Generated(METHODS["dm"]):
        @classmethod
        def eval_sampler(cls, synset):
            def read(idx, generator):
                calls.append(idx.clone())
                return synset.images[idx] * 0.5

            return read

    monkeypatch.setitem(METHODS, "generated_for_test", Generated)
    test = RealData(images.float(), labels, [str(c) for c in range(K)], {"name": "t"}, {})
    s = EvalSettings(epochs=1, batch=4, dsa=False, model_kwargs={"width": WIDTH})
    gen = SyntheticSet(images.float(), labels, {"method": "generated_for_test"})
    plain = SyntheticSet(images.float(), labels, {"method": "dm"})
    a, b = evaluate_set(gen, test, s, runs=1), evaluate_set(plain, test, s, runs=1)
    assert len(calls) == 4 and sorted(torch.cat(calls[:2]).tolist()) == list(range(6))
    assert len(a) == len(b) == 1


@pytest.mark.parametrize(
    "name, method, dsa, strategy, dc_aug, epochs",
    [
        ("mnist", "dsa", True, "color_crop_cutout_scale_rotate", None, 1000),
        ("svhn", "dm", True, "color_crop_cutout_scale_rotate", None, 1000),
        ("fashion_mnist", "dsa", True, FULL, None, 1000),
        ("cifar10", "mtt", True, FULL, None, 1000),
        ("cifar100", "dm", True, FULL, None, 1000),
        ("mnist", "dc", False, None, "crop_scale_rotate", 1000),
        ("fashion_mnist", "dc", False, None, None, 300),
        ("cifar10", "dc", False, None, None, 300),
    ],
)
def test_protocol_follows_the_data(name, method, dsa, strategy, dc_aug, epochs):
    s = EvalSettings.for_data(name, method)
    assert (s.dsa, s.dc_aug, s.epochs) == (dsa, dc_aug, epochs)
    if dsa:
        assert s.dsa_strategy == strategy
    assert EvalSettings.for_data(name, method, epochs=50).epochs == 50


# -- (f) float32 on the real shapes ------------------------------------------------------------------------------------
# The steps above are exact in float64 on tiny shapes; here each step runs in float32 on the shapes the zoo condenses
# (MNIST's 1 channel at 28 px, CIFAR's 3 at 32 px; ConvNet-3 of width 32 and 4 classes by default, its real width
# 128 and 10 classes under -m slow). The bound comes from float32 rounding, not from this machine: the authors' own
# float32 image gradient against their float64 one on the same inputs and draws, per class (``own``, each class's
# error over its largest gradient); the zoo's float32 may be off from the float64 truth, and from the authors'
# float32, by at most 4 x the largest ``own`` plus 4 float32 ulps, in every class. A float32 rounding that lands on
# the other side of a ReLU or a near-flat instance norm moves a class's gradient by far more than an ulp (the
# authors' own error ranges from 1e-6 to 1e-2 between classes and seeds), so the bound is the step's, not a class's.
# The bound and the nets are tests/tolerances.py's, shared with the MTT and teacher parity tests.
def rand_as_float32(monkeypatch):
    """The authors' ``torch.rand(..., dtype=x.dtype)`` (their colour draws) as float32 draws cast to the images'
    dtype, so that the float64 truth sees the transform the float32 run sees."""
    rand = torch.rand

    def draw(*size, dtype=None, **kw):
        out = rand(*size, **kw)
        return out if dtype is None else out.to(dtype)

    monkeypatch.setattr(torch, "rand", draw)


def _step32(method, channels, size, dtype, monkeypatch, batch_real, seed=0, classes=4, width=32, ipc=1, outer=1,
            inner=1, **options):  # fmt: skip
    """One ``method`` step on the real shapes in ``dtype``, the authors' and the zoo's, from the same weights, real
    batches and siamese draws (DC and DSA: ``outer`` image updates, the network trained ``inner`` epochs on the whole
    set between them, its shuffles and per-image draws alike): (authors' loss, zoo's loss, authors' image gradient,
    zoo's, the authors' network's weights after the step in the zoo's names, the zoo's)."""
    monkeypatch.setattr(ref, "DTYPE", dtype)
    r_net, z_net = nets_like(channels, size, dtype, seed, classes, width)
    k = classes
    g = torch.Generator().manual_seed(seed + 1)
    n = batch_real + ipc
    labels = torch.arange(k).repeat_interleave(n)
    images = (torch.randn(k * n, channels, size, size, generator=g, dtype=torch.float64)
              + 0.1 * labels[:, None, None, None]).to(dtype)  # fmt: skip
    real = RealData(images, labels, [str(c) for c in range(k)], {"name": "cifar10"}, {"mean": [0.0] * channels})
    firsts = {c: deque([images[labels == c][:ipc]]) for c in range(k)}
    batches = {c: images[labels == c][ipc:] for c in range(k)}
    seeds = [1 + 7 * i for i in range(k * outer)]
    loops = {} if method == "dm" else {"outer_loop": outer, "inner_loop": inner, "batch_train": 256}
    m = METHODS[method](real, ipc, {"init": "real", "batch_real": batch_real, "dsa_strategy": FULL, **loops,
                                    **options}, seed=0, device=torch.device("cpu"))  # fmt: skip
    real.class_images = lambda c, n=None, generator=None: firsts[c].popleft()
    m.setup()
    m.network = lambda name=None: z_net
    real.class_batch = lambda c, n=None, generator=None, gather=True: batches[c]
    seed_q = deque(seeds)
    if m.dsa is not None:

        def siamese():
            p = authors_draws(m.dsa, seed_q.popleft(), ipc, (size, size), torch.float32, m.generator)
            return DSAParams(p.op, p.values.to(dtype) if p.values.is_floating_point() else p.values)

        m._siamese = siamese
    syn = m.images.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=m.options["lr_img"], momentum=0.5)
    seed_it = iter(seeds)
    with monkeypatch.context() as patch:
        rand_as_float32(patch)
        if method == "dm":
            args = ref.make_args(ipc=1, batch_real=batch_real, dsa=m.dsa is not None, dsa_strategy=FULL)
            want = ref.dm_iteration(r_net, syn, opt, lambda c, k: batches[c], args, k, lambda: next(seed_it))
        else:
            args = ref.make_args(ipc=ipc, batch_real=batch_real, outer_loop=outer, inner_loop=inner, batch_train=256,
                                 dsa=method == "dsa", dsa_strategy=FULL)  # fmt: skip
            torch.manual_seed(77)  # the network's shuffles and per-image draws between outer steps
            want = ref.dc_iteration(r_net, syn, m.labels.clone(), opt, lambda c, k: batches[c], args, k,
                                    lambda: next(seed_it))  # fmt: skip
            m.generator.manual_seed(77)  # where the zoo's network draws them
    got = m.step(0)
    states = checkpoint_filter_fn(r_net.state_dict(), z_net), z_net.state_dict()
    return want, got, syn.grad.detach(), m.images.grad.detach(), *states


def float32_bound(method, channels, size, monkeypatch, batch_real, **options):
    """The zoo's float32 step against the authors' float32 and float64 ones: asserts the per-class bound on the
    image gradient and the loss; returns (the authors' own per-class error, the zoo's against the float64 truth)."""
    want64, _, g64, _, w64, _ = _step32(method, channels, size, torch.float64, monkeypatch, batch_real, **options)
    want32, got32, r32, z32, w32, zw32 = _step32(method, channels, size, torch.float32, monkeypatch, batch_real,
                                                 **options)  # fmt: skip
    k = options.get("classes", 4)
    g64, r32, z32 = (t.reshape(k, -1) for t in (g64, r32, z32))  # a class's rows as one
    own = per_class(r32, g64)
    bound = TIMES * float(own.max()) + ULPS * EPS32
    zoo_truth, zoo_authors = per_class(z32, g64), per_class(z32, r32)
    bad = torch.nonzero((zoo_truth > bound) | (zoo_authors > bound)).flatten().tolist()
    assert not bad, [(c, f"zoo {zoo_truth[c]:.2e} / {zoo_authors[c]:.2e} > {bound:.2e}, authors' own {own.max():.2e}")
                     for c in bad]  # fmt: skip
    loss_own = abs(want32 - want64) / want64
    assert abs(got32 - want64) / want64 <= TIMES * loss_own + ULPS * EPS32, (got32, want32, want64)
    if options.get("outer", 1) > 1:  # the networks trained between the outer steps
        assert_state_within(zw32, w32, w64, f"{method}'s network after {options['outer']} outer steps")
    return own, zoo_truth


@pytest.mark.parametrize("channels, size", SHAPES)
@pytest.mark.parametrize("dsa_on", [True, False])
def test_dm_step_float32_equals_the_authors(channels, size, dsa_on, monkeypatch):
    """main_DM.py's iteration in float32 on the real shapes: the zoo's default path for a run of 10 iterations or
    more (the real side compiled, the synthetic side in the authors' memory layout) within the float32 bound in
    every class."""
    float32_bound("dm", channels, size, monkeypatch, batch_real=16, dsa=dsa_on, compile=True)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: the default run checks float32 on the same shapes, narrower
@pytest.mark.parametrize("channels, size", SHAPES)
@pytest.mark.parametrize("method", ["dm", "dc", "dsa"])
def test_step_float32_at_full_width_equals_the_authors(method, channels, size, monkeypatch):
    """The same at ConvNet-3's real width (128) and 10 classes."""
    float32_bound(method, channels, size, monkeypatch, batch_real=32, classes=10, width=128)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: why a layout is not the default (the default run holds the default to the bound)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dm_channels_last_misses_the_float32_bound(seed, monkeypatch):
    """Why channels-last is not DM's default: on 1 channel at 28 px its float32 image gradient lands on other ReLU
    kinks than the authors' order and misses the bound in some class for some seed (measured: 1.7e-2 and 2.7e-2 in
    one class where the authors' own error is 5e-6); the default layout meets it on the same draws."""
    full = dict(batch_real=32, seed=seed, classes=10, width=128)
    float32_bound("dm", 1, 28, monkeypatch, **full)
    try:
        float32_bound("dm", 1, 28, monkeypatch, channels_last=True, **full)
    except AssertionError:
        return
    pytest.skip("channels-last met the bound on this seed")


@pytest.mark.slow
@pytest.mark.sweep  # by hand: why the real side is not compiled by default
def test_dc_compiled_real_side_misses_the_float32_bound(monkeypatch):
    """Why DC's real side is not compiled by default: its compiled instance norm rounds in another order and, on 1
    channel at 28 px (seed 0), lands on another ReLU kink than the authors' order in one class (measured: 1.6e-3
    where the authors' own error is 5.5e-7); the default (eager, in chunks) meets the bound on the same draws."""
    float32_bound("dc", 1, 28, monkeypatch, batch_real=16)
    try:
        float32_bound("dc", 1, 28, monkeypatch, batch_real=16, compile=True)
    except AssertionError:
        return
    pytest.skip("the compiled real side met the bound on this CPU's code")


@pytest.mark.parametrize("channels, size", SHAPES)
@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_dc_and_dsa_step_float32_equal_the_authors(method, channels, size, monkeypatch):
    """main.py's iteration (ipc 1: one outer step) in float32 on the real shapes, within the float32 bound."""
    float32_bound(method, channels, size, monkeypatch, batch_real=16)


# DC's outer steps and DSA's at 3x32 under -m slow: DSA's at 1x28, on the same network and loop, stays in the
# default run (the one-step tests above cover both shapes there)
@pytest.mark.parametrize(
    "method, channels, size",
    [
        pytest.param(m, c, s, id=f"{m}-{c}x{s}", marks=() if (m, c) == ("dsa", 1) else pytest.mark.slow)
        for m in ("dc", "dsa")
        for c, s in ((1, 28), (3, 32))
    ],
)
def test_dc_and_dsa_outer_steps_float32_equal_the_authors(method, channels, size, monkeypatch):
    """main.py's iteration with the network trained between outer steps (ipc 2, two outer steps, 5 epochs between
    them), in float32 on the real shapes: the last outer step's image gradient, the loss and the trained network
    within the float32 bound. The zoo's training runs by the fast backward kernels (the forward's bits, the
    gradients rounded in another order), so its weights drift from the authors' by rounding, as their own float32
    drifts from their float64."""
    float32_bound(method, channels, size, monkeypatch, batch_real=16, ipc=2, outer=2, inner=5)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: the default run checks the same at width 32, 4 classes and ipc 2
@pytest.mark.parametrize("channels, size", SHAPES)
@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_outer_steps_float32_at_full_width_equal_the_authors(method, channels, size, monkeypatch):
    """The same at ConvNet-3's real width, 10 classes and ipc 10 (the network trains on batches of 100)."""
    float32_bound(method, channels, size, monkeypatch, batch_real=32, classes=10, width=128, ipc=10, outer=2, inner=5)


@pytest.mark.slow  # 10-20 s: 128 real images a class through two chunks, float32 and float64 on both sides
@pytest.mark.parametrize("method", ["dm", "dsa"])
def test_the_chunks_of_two_threads_meet_the_float32_bound(method, monkeypatch):
    """At two threads the real side runs in chunks of 64 (core.real_chunk), not 16: its sums round in another order,
    still within the float32 bound (two chunks of 64 a class here)."""
    import zoo.condense.dc as dc
    import zoo.condense.dm as dm
    from zoo.condense.core import real_chunk

    for module in (dc, dm):
        monkeypatch.setattr(module, "real_chunk", lambda device: real_chunk(device, 2))
    options = {"compile": True} if method == "dm" else {}
    float32_bound(method, 1, 28, monkeypatch, batch_real=128, **options)


# The evaluation loop (evaluate_synset / epoch and train_network) in float32 on the real shapes: the weights a
# fresh ConvNet-3 reaches from the same start, set, shuffles and augmentation draws (DSA, MNIST's crop_scale_rotate,
# none), the zoo's float32 against the authors' float32 and float64 (every tensor within the bound made from the
# authors' largest own error over the network). Width 32, 4 classes x 2 images, batch 4, Epoch = 3 by default;
# width 128, 10 classes x 5 images, batch 32 (the last batch short) and Epoch = 5 under -m slow.
def _eval32(dtype, channels, size, aug, monkeypatch, classes=4, ipc=2, width=32, batch=4, epochs=3, seed=9):
    """The trained weights in ``dtype``: (the authors', in the zoo's names; the zoo's)."""
    monkeypatch.setattr(ref, "DTYPE", dtype)
    r_net, z_net = nets_like(channels, size, dtype, seed, classes, width)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.arange(classes).repeat_interleave(ipc)
    images = (torch.randn(classes * ipc, channels, size, size, generator=g)
              + 0.3 * labels[:, None, None, None]).to(dtype)  # fmt: skip
    dc_aug = ref.get_daparam("MNIST", "ConvNet", "ConvNet", 1) if aug == "dc_mnist" else None
    args = ref.make_args(epoch_eval_train=epochs, batch_train=batch, dsa=aug == "dsa", dsa_strategy=FULL,
                         dc_aug_param=dc_aug)  # fmt: skip
    torch.manual_seed(11)
    if aug == "dc_mnist":  # the zoo seeds numpy's generator for augment from its own
        np.random.seed(int(torch.randint(2**31 - 1, (1,))))
    with monkeypatch.context() as patch:
        rand_as_float32(patch)
        ref.evaluate_synset(0, r_net, images.clone(), labels, None, args)
    s = EvalSettings(epochs=epochs, batch=batch, dsa=aug == "dsa", dsa_strategy=FULL,
                     dc_aug=dc_aug["strategy"] if dc_aug else None)  # fmt: skip
    train_network(z_net, images, labels, s.epochs + 1, s, generator=torch.Generator().manual_seed(11))
    return checkpoint_filter_fn(r_net.state_dict(), z_net), z_net.state_dict()


def eval_float32_bound(channels, size, aug, monkeypatch, **kw):
    want64, _ = _eval32(torch.float64, channels, size, aug, monkeypatch, **kw)
    want32, got32 = _eval32(torch.float32, channels, size, aug, monkeypatch, **kw)
    _, start = nets_like(channels, size, torch.float64, kw.get("seed", 9), kw.get("classes", 4), kw.get("width", 32))
    assert all(not torch.equal(want64[k], v) for k, v in start.state_dict().items() if v.is_floating_point())
    return assert_state_within(got32, want32, want64, f"weights after evaluate_synset ({aug})")


@pytest.mark.parametrize("channels, size", SHAPES)
@pytest.mark.parametrize("aug", ["dsa", "dc_mnist", "none"])
def test_evaluation_float32_reaches_evaluate_synsets_weights(aug, channels, size, monkeypatch):
    """evaluate_synset and train_network in float32 on the real shapes: the same trained weights within the
    float32 bound."""
    eval_float32_bound(channels, size, aug, monkeypatch)


@pytest.mark.slow
@pytest.mark.sweep  # by hand: the default run checks float32 on the same shapes, narrower
@pytest.mark.parametrize("channels, size", SHAPES)
@pytest.mark.parametrize("aug", ["dsa", "dc_mnist", "none"])
def test_evaluation_float32_at_full_width_reaches_evaluate_synsets_weights(aug, channels, size, monkeypatch):
    eval_float32_bound(channels, size, aug, monkeypatch, classes=10, ipc=5, width=128, batch=32, epochs=5)
