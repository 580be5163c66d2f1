"""HaBa: dataset factorization into hallucinators and bases (Liu, Wang, Yang, Ye, Wang, "Dataset Distillation via
Factorization", NeurIPS 2022; code: Huage001/DatasetFactorization), on MTT's trajectory matching
(:mod:`zoo.condense.mtt`).

The set is stored as learnable **bases** ``[classes * n_bases, c, H, W]`` (started from real images; ``c`` is the
data's channels, or 1 for single-channel bases) and ``n_hal`` (K = 5) **hallucinators** (the authors'
``StyleTranslator``): a 3x3 conv without padding (``c`` -> C channels, ``H-2 x W-2``), a learnable per-pixel,
per-channel scale (init 1) and shift (init 0) of that map, and a 3x3 transposed conv back to ``C x H x W``. A training
image is hallucinator_j(base_i), labelled with the base's class.

Each iteration (``distill_fac.py``'s loop body, exact: ``tests/condense/test_condense_parity_mtt.py`` against
``zoo/bench/reference/haba.py``):

1. MTT's trajectory loss (:func:`~zoo.condense.mtt.unroll`, :func:`~zoo.condense.mtt.trajectory_loss`): each of the
   student's ``syn_steps`` steps takes the next chunk of bases (all by default) through one randomly drawn
   hallucinator, then DSA, so the loss reaches bases, hallucinators and the learnable lr.
2. The adversarial contrastive constraint (the paper's Sec. 3.3). A feature extractor (ConvNet-3 with its
   classifier, its own SGD: lr 0.001, momentum 0.9) plays against the factorization:

   - the bases and hallucinators *also* minimise ``lambda_club * mean((cos(f(h_a(b)), f(h_b(b))) + 1) / 2)`` over
     the next chunk of bases ``b`` and two different random hallucinators ``a != b`` (after DSA): images that one
     base makes through different hallucinators should differ in the extractor's features. The extractor is frozen
     for this step (theirs collects gradients there and discards them with its optimiser's ``zero_grad``: the same
     update);
   - the extractor, on the next chunk and a fresh pair (images detached), minimises ``lambda_cls * CE`` on both
     views ``+ lambda_likeli * mean((1 - cos) / 2)`` between the views ``+ lambda_contrast * SupCon`` (supervised
     contrastive loss, temperature 0.07, over the two L2-normalised views with class labels as positives).

   Bases and hallucinators: SGD with momentum 0.95 (``lr_img`` 100, ``lr_hal`` 100); the lr: SGD ``lr_lr`` with
   momentum 0.9, clipped below at ``min_syn_lr`` 0.001 after each step; 15,000 iterations. Experts and their buffer
   are MTT's (same options, same defaults: one shared buffer).

**Defaults per ipc** (:func:`published_settings`), from the authors' released scripts (``run_cifar10_ipc{1,10,50}_
style5.sh``, the only ones published; every dataset takes them, at the nearest of ipc 1 / 10 / 50 on a log scale;
digit data drop ``flip`` from DSA as for MTT):

===  =========  =============  ===============  ======  =====  ==========  ======  ===================================
ipc  syn_steps  expert_epochs  max_start_epoch  lr_img  lr_lr  lr_teacher  lr_hal  lambda club / likeli / cls / contr.
===  =========  =============  ===============  ======  =====  ==========  ======  ===================================
1    50         2              2                100     1e-7   0.01        100     0.1 / 0.1 / 1 / 0.1
10   30         2              20               100     1e-5   0.001       100     0.1 / 0.1 / 1 / 0.1
50   30         2              20               100     1e-5   0.01        100     0.1 / 0.1 / 1 / 0.1
===  =========  =============  ===============  ======  =====  ==========  ======  ===================================

**Initialisation** (``hal_init``). ``identity`` (the default): each hallucinator starts as the identity up to a
small random jitter (centre-tap kernels, 2% Gaussian noise on every tap), so hal(base) equals the base inside a
one-pixel frame (zero on the frame) and the set at iteration 0 is the real images it starts from (cosine with the
base ~0.99; the hallucinators differ only by the jitter). ``authors``: PyTorch's default conv init, as
``StyleTranslator`` gets in their code (hal(base) is then a random filter of the base, cosine ~0.05).

**Grey bases.** Where the data's channels are identical (1-channel data, or grey images stored as RGB such as
scikit-learn's digits), the bases have one channel and the hallucinators map it to C: the same images at a third of
the storage. Otherwise bases have the data's channels, and become single-channel only when no RGB base fits the
budget (the authors' ``--single_channel`` script does that at ipc 1).

**Storage** (``budget``). A user must store the bases and the hallucinators' parameters, so the set's stored values
are ``bases.numel() + sum of hallucinator parameters`` (:meth:`HaBa.storage`, the set's ``stored_values``).

- ``budget=True`` (the default; the zoo's accounting): bases + hallucinators never exceed the plain budget
  ``ipc x C x H x W x classes``. The number of bases per class is the largest that fits after the hallucinators;
  when not even one base per class fits, K is lowered. MNIST / Fashion-MNIST (1 x 28 x 28, K = 5, 1,372 values per
  hallucinator): ipc 10 gives 9 bases per class (70,560 + 6,860 = 77,420 of 78,400 values); at ipc 1 nothing fits,
  because the budget (7,840 values) holds exactly one 1-channel image per class and nothing else: the run is refused
  with that said (use ``budget=false`` or a larger ipc). CIFAR-10 (3 x 32 x 32): 9 RGB bases per class at ipc 10, 49
  at ipc 50, and at ipc 1 one grey base per class with 3 hallucinators.
- ``budget=False`` (the authors' released scripts): ``ipc`` bases per class (``n_bases``) plus the hallucinators on
  top; the set's metadata states by how much that exceeds the plain budget (MNIST: ipc 1 stores 14,700 values,
  +6,860, 88% over; ipc 10 stores 85,260, +6,860, 9% over).

**Evaluation.** The authors train the evaluation network on ``StyleTranslatorSharedDataset``: ``classes x n_bases``
samples, and every read of a sample draws one hallucinator for its base. :meth:`HaBa.eval_sampler` rebuilds that
from the set's ``extra`` (``bases``, ``hal.{j}.{param}``): ``f(indices, generator)`` makes the images of those
sample indices, one random hallucinator per sample per call. The set's ``images`` (what the folder's PNGs and grid
show, and what a reader without the sampler trains on) are one image per base, base ``r`` of a class through
hallucinator ``r mod K``; ``labels`` are the bases' classes.

Where the zoo differs on purpose: one generator drives every draw (theirs: torch's global RNG for chunks and pairs,
Python's ``random`` for the hallucinator of each unrolled step); the extractor is the zoo's ConvNet-3 at the data's
size (theirs is fixed at 3 x 32 x 32); theirs standardises every batch (``(x - mean) / std``) in its expert and
evaluation epochs, which the zoo's experts, shared with MTT, do not; the identity initialisation and the budget
accounting above.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import dsa_strategy
from .core import CondenseError, SyntheticSet, register_method
from .mtt import (
    EXPERT_DEFAULTS,
    Chunks,
    TrajectoryMatching,
    published_row,
    trajectory_loss,
    unroll,
)

__all__ = [
    "HABA_TABLE",
    "HaBa",
    "Hallucinator",
    "channels_identical",
    "hallucinator_values",
    "plan_bases",
    "published_settings",
    "supcon_loss",
]

HAL_JITTER = 0.02  # the identity initialisation's noise, relative to the centre tap

# The authors' scripts, CIFAR-10: ipc -> syn_steps, expert_epochs, max_start_epoch, lr_img, lr_lr, lr_teacher
HABA_TABLE: dict[int, tuple[int, int, int, float, float, float]] = {
    1: (50, 2, 2, 100.0, 1e-7, 0.01),
    10: (30, 2, 20, 100.0, 1e-5, 0.001),
    50: (30, 2, 20, 100.0, 1e-5, 0.01),
}


def published_settings(dataset: str, ipc: int) -> tuple[dict[str, Any], str]:
    """HaBa's defaults at ``ipc`` (the authors' CIFAR-10 scripts, the only ones released), and where they come
    from."""
    row = published_row(ipc)
    keys = ("syn_steps", "expert_epochs", "max_start_epoch", "lr_img", "lr_lr", "lr_teacher")
    values: dict[str, Any] = dict(zip(keys, HABA_TABLE[row]))
    values.update(lr_hal=100.0, lambda_club=0.1, lambda_likeli=0.1, lambda_cls=1.0, lambda_contrast=0.1)
    values["dsa_strategy"] = dsa_strategy(dataset)
    src = f"DatasetFactorization run_cifar10_ipc{row}_style5.sh"
    if dataset != "cifar10":
        src += f" (no released script for {dataset or 'this data'}: the closest setting)"
    return values, src


class Hallucinator(nn.Module):
    """conv 3x3 (no padding) -> per-pixel scale and shift -> transposed conv 3x3: ``(B, c, H, W) -> (B, C, H, W)``
    (the authors' ``StyleTranslator``; ``mid_channel = out_channel = C``)."""

    def __init__(self, in_chans: int, out_chans: int, size: tuple[int, int], kernel: int = 3):
        super().__init__()
        h, w = size[0] - kernel + 1, size[1] - kernel + 1
        self.enc = nn.Conv2d(in_chans, out_chans, kernel)
        self.scale = nn.Parameter(torch.ones(1, out_chans, h, w))
        self.shift = nn.Parameter(torch.zeros(1, out_chans, h, w))
        self.dec = nn.ConvTranspose2d(out_chans, out_chans, kernel)

    @torch.no_grad()
    def init_identity(self, jitter: float = HAL_JITTER) -> "Hallucinator":
        """Centre-tap kernels (``in == out``: channel to itself; ``in == 1``: the grey base to every channel), zero
        biases, plus ``jitter`` x N(0, 1) on every tap (torch's global RNG): hal(x) is x inside a one-pixel frame."""
        k = self.enc.kernel_size[0] // 2
        out_chans, in_chans = self.enc.weight.shape[:2]
        self.enc.weight.zero_()
        self.dec.weight.zero_()
        for o in range(out_chans):
            self.enc.weight[o, o if in_chans == out_chans else 0, k, k] = 1.0
            self.dec.weight[o, o, k, k] = 1.0
        self.enc.weight.add_(torch.randn_like(self.enc.weight) * jitter)
        self.dec.weight.add_(torch.randn_like(self.dec.weight) * jitter)
        self.enc.bias.zero_()
        self.dec.bias.zero_()
        self.scale.fill_(1.0)
        self.shift.zero_()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x) * self.scale + self.shift)


def hallucinator_values(in_chans: int, out_chans: int, size: tuple[int, int], kernel: int = 3) -> int:
    """Parameters of one :class:`Hallucinator` (what it costs to store)."""
    h, w = size[0] - kernel + 1, size[1] - kernel + 1
    enc = in_chans * out_chans * kernel * kernel + out_chans
    dec = out_chans * out_chans * kernel * kernel + out_chans
    return enc + 2 * out_chans * h * w + dec


def channels_identical(images: torch.Tensor) -> bool:
    """Whether every image's channels are equal (1-channel data, or grey images stored as RGB)."""
    return images.shape[1] == 1 or bool(torch.equal(images, images[:, :1].expand_as(images)))


def plan_bases(
    ipc: int,
    classes: int,
    shape: tuple[int, int, int],
    n_hal: int,
    n_bases: int = 0,
    base_channels: int = 0,
    budget: bool = True,
    grey: bool = False,
) -> tuple[int, int, int]:
    """``(n_bases per class, base channels, hallucinators)`` for the options (0 = choose); ``grey``: the data's
    channels are identical, so bases have one. With ``budget`` the stored values (bases + hallucinators) fit
    ``ipc x C x H x W x classes``; without it, ``ipc`` bases per class and ``n_hal`` hallucinators (the authors'
    layout). Raises :class:`CondenseError` when nothing fits."""
    c, h, w = shape
    limit = ipc * c * h * w * classes
    auto_channels = 1 if grey else c
    if not budget:
        return (n_bases or ipc), (base_channels or auto_channels), n_hal

    def fits(n, bc, k):
        return n * classes * bc * h * w + k * hallucinator_values(bc, c, (h, w)) <= limit

    def most(bc, k):
        return max(0, (limit - k * hallucinator_values(bc, c, (h, w))) // (classes * bc * h * w))

    channel_choices = [base_channels] if base_channels else [1] if grey or c == 1 else [c, 1]
    hal_choices = [n_hal] if n_bases or base_channels else range(n_hal, 0, -1)
    for k in hal_choices:
        for bc in channel_choices:
            n = n_bases or most(bc, k)
            if n >= 1 and fits(n, bc, k):
                return int(n), int(bc), int(k)
    bc = base_channels or min(channel_choices)
    one = classes * bc * h * w
    if one >= limit:
        why = (
            f"the budget of ipc={ipc} ({limit:,} values) holds {limit // one} {bc}-channel "
            "base(s) per class and nothing else, so no hallucinator fits beside even one base"
        )
    else:
        why = f"{n_bases or 'one'} base(s) per class ({bc} channel(s)) and {n_hal} hallucinator(s) exceed the budget"
        why += f" of ipc={ipc} ({limit:,} values)"
    over = ipc * classes * bc * h * w + n_hal * hallucinator_values(bc, c, (h, w))
    raise CondenseError(
        f"factorization: {why}; pass budget=false for the authors' layout ({ipc} base(s) per class + {n_hal} "
        f"hallucinators = {over:,} values, {over / limit:.2f}x the budget), raise --ipc, or lower n_hal/n_bases"
    )


def supcon_loss(z0: torch.Tensor, z1: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020) over two L2-normalised views ``z0``, ``z1`` (``(B, D)``):
    for every anchor among the 2B, the mean log-probability of its positives (same label, itself excluded) under a
    softmax over all others, negated and averaged (the authors' ``SupConLoss`` with ``contrast_mode='all'`` and
    ``base_temperature = temperature``)."""
    z = torch.cat([z0, z1])
    y = torch.cat([labels, labels])
    n = z.shape[0]
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    positive = (y[:, None] == y[None, :]) & not_self
    log_prob = logits - torch.log((logits.exp() * not_self).sum(dim=1, keepdim=True))
    return -((log_prob * positive).sum(dim=1) / positive.sum(dim=1)).mean()


def hallucinators_from(extra: dict[str, torch.Tensor], channels: int) -> nn.ModuleList:
    """The hallucinators stored in a set's ``extra`` (``hal.{j}.{param}``), rebuilt for ``bases`` there."""
    bases = extra["bases"]
    count = len({k.split(".")[1] for k in extra if k.startswith("hal.")})
    hals = nn.ModuleList()
    for j in range(count):
        weight = extra[f"hal.{j}.enc.weight"]
        hal = Hallucinator(bases.shape[1], channels, tuple(bases.shape[-2:]), kernel=weight.shape[-1])
        hal.load_state_dict({k[len(f"hal.{j}.") :]: v for k, v in extra.items() if k.startswith(f"hal.{j}.")})
        hals.append(hal.to(bases.dtype))
    return hals.requires_grad_(False)


@torch.no_grad()
def render(bases: torch.Tensor, hals: nn.ModuleList, indices: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Base ``indices[i]`` through hallucinator ``draws[i]``, for every ``i`` (one forward per hallucinator)."""
    draws = draws.to(indices.device)
    if indices.numel() == 0:
        return hals[0](bases[:0])
    out = None
    for j in torch.unique(draws).tolist():
        sel = draws == j
        imgs = hals[j](bases[indices[sel]])
        if out is None:
            out = imgs.new_empty((indices.shape[0], *imgs.shape[1:]))
        out[sel] = imgs
    return out


@register_method
class HaBa(TrajectoryMatching):
    name = "factorization"
    # syn_steps .. lr_teacher, lr_hal, the lambdas and dsa_strategy are replaced per ipc (published_settings); these
    # are the ipc-10 script's
    defaults = {
        "iterations": 15000,
        "n_hal": 5,
        "n_bases": 0,
        "base_channels": 0,
        "budget": True,
        "hal_init": "identity",
        "syn_steps": 30,
        "expert_epochs": 2,
        "max_start_epoch": 20,
        "lr_img": 100.0,
        "lr_hal": 100.0,
        "momentum": 0.95,
        "lr_lr": 1e-5,
        "lr_momentum": 0.9,
        "lr_teacher": 0.001,
        "min_syn_lr": 0.001,
        "batch_syn": 0,
        "lambda_club": 0.1,
        "lambda_likeli": 0.1,
        "lambda_cls": 1.0,
        "lambda_contrast": 0.1,
        "temperature": 0.07,
        "extractor_lr": 0.001,
        "extractor_momentum": 0.9,
        "init": "real",
        **EXPERT_DEFAULTS,
    }

    @classmethod
    def published_settings(cls, dataset: str, ipc: int) -> tuple[dict[str, Any], str]:
        return published_settings(dataset, ipc)

    def plan(self) -> tuple[int, int, int]:
        o = self.options
        for k in ("n_hal", "n_bases", "base_channels"):
            if isinstance(o[k], bool) or not isinstance(o[k], int) or o[k] < (1 if k == "n_hal" else 0):
                raise CondenseError(
                    f"factorization: {k} must be a {'positive' if k == 'n_hal' else 'non-negative'} int, got {o[k]!r}"
                )
        if o["base_channels"] not in (0, 1, self.real.shape[0]):
            raise CondenseError(
                f"factorization: base_channels must be 1 or {self.real.shape[0]} (0 = choose), got {o['base_channels']}"
            )
        if o["hal_init"] not in ("identity", "authors"):
            raise CondenseError(f"factorization: hal_init must be identity or authors, got {o['hal_init']!r}")
        if not isinstance(o["budget"], bool):
            raise CondenseError(f"factorization: budget must be true or false, got {o['budget']!r}")
        if not hasattr(self, "grey"):
            self.grey = channels_identical(self.real.images)
        return plan_bases(self.ipc, self.real.num_classes, self.real.shape, o["n_hal"], o["n_bases"],
                          o["base_channels"], o["budget"], self.grey)  # fmt: skip

    def check(self) -> None:
        super().check()
        self.plan()

    def _seeded(self, build):
        """``build()`` under the global RNG seeded from the method's generator (then restored)."""
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=self.generator)))
            return build()
        finally:
            torch.random.set_rng_state(state)

    def make_hallucinators(self, channels: int, size: tuple[int, int]) -> nn.ModuleList:
        identity = self.options["hal_init"] == "identity"

        def build():
            hals = [Hallucinator(self.base_channels, channels, size) for _ in range(self.n_hal)]
            return nn.ModuleList(h.init_identity() if identity else h for h in hals)

        return self._seeded(build)

    def setup(self) -> None:
        o = self.options
        self.n_bases, self.base_channels, self.n_hal = self.plan()
        k, (c, h, w) = self.real.num_classes, self.real.shape
        bases = []
        for cls in range(k):
            x = self.real.class_images(cls, self.n_bases, self.generator)
            if x.shape[0] < self.n_bases:  # a small class: the rest start from noise
                x = torch.cat(
                    [x, torch.randn(self.n_bases - x.shape[0], c, h, w, generator=self.generator).to(x.device)]
                )
            bases.append(x.mean(dim=1, keepdim=True) if self.base_channels == 1 else x)
        bases = torch.cat(bases).to(self.device)
        if o["init"] == "noise":
            bases = torch.randn(bases.shape, generator=self.generator).to(self.device)
        self.bases = bases.detach().clone().requires_grad_(True)
        self.base_labels = torch.arange(k, device=self.device).repeat_interleave(self.n_bases)
        self.hals = self.make_hallucinators(c, (h, w)).to(self.device)
        self.extractor = self.network().train()
        self.setup_trajectories()
        self.make_optimizers()

    def make_optimizers(self) -> None:
        """``distill_fac.py``'s: SGD momentum 0.95 on bases and hallucinators, 0.9 on the lr and the extractor."""
        o = self.options
        self.opt_img = torch.optim.SGD([self.bases], lr=o["lr_img"], momentum=o["momentum"])
        self.opt_hal = torch.optim.SGD(self.hals.parameters(), lr=o["lr_hal"], momentum=o["momentum"])
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=o["lr_lr"], momentum=o["lr_momentum"])
        self.opt_ext = torch.optim.SGD(
            self.extractor.parameters(), lr=o["extractor_lr"], momentum=o["extractor_momentum"]
        )

    def _hal_index(self) -> int:
        """The hallucinator of one unrolled step."""
        return int(torch.randint(self.n_hal, (1,), generator=self.generator))

    def _pair(self, chunks: Chunks) -> tuple[torch.Tensor, torch.Tensor]:
        """The next chunk of bases through two different random hallucinators, stacked (2B images, augmented),
        and the bases' labels."""
        idx = chunks.next()
        b = self.bases[idx]
        a, z = torch.randperm(self.n_hal, generator=self.generator)[:2].tolist() if self.n_hal > 1 else (0, 0)
        return self.augment(torch.cat([self.hals[a](b), self.hals[z](b)])), self.base_labels[idx]

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.extractor.forward_head(self.extractor.forward_features(x), pre_logits=True)
        return self.extractor.head.fc(emb), emb

    def factor_step(self, chunks: Chunks) -> tuple[torch.Tensor, torch.Tensor]:
        """The bases', hallucinators' and lr's update: trajectory loss + club term, the extractor frozen. Returns
        (trajectory loss, club term)."""
        o = self.options
        start, target = self.segment()

        def batch(_):
            idx = chunks.next()
            j = self._hal_index()
            return self.augment(self.hals[j](self.bases[idx])), self.base_labels[idx]

        end = unroll(self.student, start, self.syn_lr, int(o["syn_steps"]), batch)
        param_loss = trajectory_loss(end, start, target)
        self.extractor.requires_grad_(False)
        try:
            x, _ = self._pair(chunks)
            n = x.shape[0] // 2
            emb = self._features(x)[1]
            club = ((F.cosine_similarity(emb[:n], emb[n:]) + 1) / 2).mean() * o["lambda_club"]
            loss = param_loss + club
            for opt in (self.opt_img, self.opt_hal, self.opt_lr):
                opt.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            self.extractor.requires_grad_(True)
        for opt in (self.opt_img, self.opt_hal, self.opt_lr):
            opt.step()
        with torch.no_grad():
            self.syn_lr.clamp_(min=float(o["min_syn_lr"]))
        return param_loss.detach(), club.detach()

    def extractor_step(self, chunks: Chunks) -> torch.Tensor:
        """The extractor's update: classify both views, pull them together, contrast by class. Returns its loss."""
        o = self.options
        with torch.no_grad():
            x, y = self._pair(chunks)
        logits, emb = self._features(x)
        e0, e1 = emb[: y.shape[0]], emb[y.shape[0] :]
        cls = F.cross_entropy(logits, torch.cat([y, y])) * o["lambda_cls"]
        likeli = ((1 - F.cosine_similarity(e0, e1)) / 2).mean() * o["lambda_likeli"]
        con = supcon_loss(F.normalize(e0), F.normalize(e1), y, float(o["temperature"])) * o["lambda_contrast"]
        loss = cls + likeli + con
        self.opt_ext.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_ext.step()
        return loss.detach()

    def step(self, it: int) -> float:
        chunks = Chunks(self.bases.shape[0], int(self.options["batch_syn"]), self.generator, self.device)
        param_loss, club = self.factor_step(chunks)
        self.extractor_step(chunks)
        return float(param_loss + club)

    @torch.no_grad()
    def result(self):
        k, n = self.real.num_classes, self.n_bases
        idx = torch.arange(k * n, device=self.device)
        draws = (idx % n) % self.n_hal  # base r of a class through hallucinator r mod K
        images = render(self.bases.detach(), self.hals, idx, draws)
        extra = {"bases": self.bases.detach().clone()}
        for j, hal in enumerate(self.hals):
            extra.update({f"hal.{j}.{name}": p.detach().clone() for name, p in hal.named_parameters()})
        return images, self.base_labels.clone(), None, extra

    @classmethod
    def eval_sampler(cls, synset: SyntheticSet) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
        """``f(indices, generator)``: the images of sample ``indices`` (rows of ``synset.images`` / ``labels``, one
        per base), each through one hallucinator drawn afresh per call (``torch.randint(K, (len(indices),),
        generator=generator)``): the authors' ``StyleTranslatorSharedDataset`` read by read. The images come on
        ``indices``' device."""
        bases = synset.extra["bases"].float()
        hals = hallucinators_from({**synset.extra, "bases": bases}, synset.images.shape[1])
        if len(hals) == 0:
            raise CondenseError("this factorization set holds no hallucinators (hal.* tensors) in its extra")
        held = {"device": bases.device, "bases": bases, "hals": hals}

        def sample(indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
            if indices.device != held["device"]:
                held.update(device=indices.device, bases=held["bases"].to(indices.device))
                held["hals"] = held["hals"].to(indices.device)
            draws = torch.randint(len(hals), (indices.shape[0],), generator=generator)
            return render(held["bases"], held["hals"], indices, draws)

        return sample

    def storage(self) -> dict[str, Any]:
        bases = int(self.bases.numel())
        hals = sum(int(p.numel()) for p in self.hals.parameters())
        c, h, w = self.real.shape
        budget = self.ipc * c * h * w * self.real.num_classes
        values = bases + hals
        return {
            "values": values,
            "what": "bases + hallucinators",
            "bases": bases,
            "hallucinators": hals,
            "ipc_budget": budget,
            "layout": "within the ipc budget" if self.options["budget"] else "the authors' released scripts",
            "over_budget_values": max(0, values - budget),
            "budget_ratio": round(values / budget, 4),
        }

    def describe(self) -> dict[str, Any]:
        s = self.storage()
        return {
            "n_bases": self.n_bases,
            "n_hal": self.n_hal,
            "base_channels": self.base_channels,
            "hal_init": self.options["hal_init"],
            "images_per_class": self.n_bases,
            "hallucinated_per_class": self.n_bases * self.n_hal,
            "eval_read": "one random hallucinator per sample per read (eval_sampler)",
            "stored_values": s["values"],
            "ipc_budget_values": s["ipc_budget"],
            "over_budget_values": s["over_budget_values"],
            **self.describe_trajectories(),
        }

    def state_dict(self):
        return {
            "bases": self.bases.detach().cpu(),
            "hals": {k: v.detach().cpu() for k, v in self.hals.state_dict().items()},
            "extractor": {k: v.detach().cpu() for k, v in self.extractor.state_dict().items()},
            "syn_lr": self.syn_lr.detach().cpu(),
            "opt_img": self.opt_img.state_dict(),
            "opt_hal": self.opt_hal.state_dict(),
            "opt_lr": self.opt_lr.state_dict(),
            "opt_ext": self.opt_ext.state_dict(),
        }

    def load_state_dict(self, state):
        with torch.no_grad():
            self.bases.copy_(state["bases"].to(self.device))
            self.syn_lr.copy_(state["syn_lr"].to(self.device))
        self.hals.load_state_dict(state["hals"])
        self.extractor.load_state_dict(state["extractor"])
        for k in ("opt_img", "opt_hal", "opt_lr", "opt_ext"):
            getattr(self, k).load_state_dict(state[k])
