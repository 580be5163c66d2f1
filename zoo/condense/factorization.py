"""HaBa: dataset factorization into hallucinators and bases (Liu, Wang, Yang, Ye, Wang, "Dataset Distillation via
Factorization", NeurIPS 2022), on MTT's trajectory matching (:mod:`zoo.condense.mtt`).

The set is stored as learnable **bases** ``[classes * n_bases, c, H, W]`` (started from real images; ``c`` is the
data's channels, or 1 for single-channel bases) and ``n_hal`` (K = 5) **hallucinators**. A hallucinator is a 3x3
conv without padding (``c`` -> C channels, ``H-2 x W-2``), a learnable per-pixel, per-channel scale (init 1) and
shift (init 0) of that map, and a 3x3 transposed conv back to ``C x H x W``. Training image = hallucinator_j(base_i),
labelled with the base's class, so ``n_bases`` bases give ``K x n_bases`` images per class.

Each iteration:

1. MTT's trajectory loss (:func:`~zoo.condense.mtt.unroll`, :func:`~zoo.condense.mtt.trajectory_loss`): the
   student's ``syn_steps`` steps each take a minibatch of bases (all by default) through one randomly drawn
   hallucinator, then DSA, so the loss reaches bases, hallucinators and the learnable lr.
2. The adversarial contrastive constraint (the paper's Sec. 3.3). A feature extractor (ConvNet-3 with its
   classifier, its own SGD: lr 0.001, momentum 0.9) plays against the factorization:

   - the bases and hallucinators *also* minimise ``lambda_club * mean((cos(f(h_a(b)), f(h_b(b))) + 1) / 2)``
     over a batch of bases ``b`` and two different random hallucinators ``a != b`` (after DSA): images that one
     base makes through different hallucinators should differ in the extractor's features;
   - the extractor, on a fresh such pair (images detached), minimises ``lambda_cls * CE`` on both views
     ``+ lambda_likeli * mean((1 - cos) / 2)`` between the views ``+ lambda_contrast * SupCon`` (supervised
     contrastive loss, temperature 0.07, over the two L2-normalised views with class labels as positives).

   Images and hallucinators: SGD with momentum 0.95 (``lr_img`` 100, ``lr_hal`` 100); the lr: SGD ``lr_lr``
   with momentum 0.9, clipped below at ``min_syn_lr`` 0.001 after each step. The weights 0.1 / 1 / 0.1 / 0.1 and
   ``syn_steps`` 30, ``expert_epochs`` 2, ``max_start_epoch`` 20 are the paper's CIFAR-10 ipc-10/50 settings;
   15,000 iterations. Experts and their buffer are MTT's (same options, same defaults: one shared buffer).

**Storage.** A user must store the bases and the hallucinators' parameters, so the set's stored values are
``bases.numel() + sum of hallucinator parameters`` (:meth:`HaBa.storage`). The paper compares HaBa with methods
holding ``ipc`` images per class at a matched budget and lowers the number of bases to pay for the
hallucinators (with single-channel bases at 1 image per class); its released scripts, though, keep ``ipc`` bases
per class and add the hallucinators on top. Here, with ``budget=True`` (the default), bases + hallucinators never
exceed the plain budget ``ipc x C x H x W x classes``: the number of bases per class is the largest that fits
after the hallucinators (CIFAR-10 32x32, K = 5: 27,840 hallucinator values; 9 RGB bases per class at ipc 10, 49
at ipc 50). When not even one RGB base per class fits, bases become single-channel; when that does not fit
either, K is lowered until at least one base per class fits (32x32 ipc 1: 3 hallucinators, 1 single-channel base
per class). ``n_bases``/``base_channels``/``n_hal`` set by hand are checked against the budget; ``budget=False``
lifts the check (``n_bases`` 0 then means ``ipc``, the released scripts' choice).

Simplified: the result holds every hallucinator x base image (``K x n_bases`` per class) for training, where the
authors' evaluation draws one random hallucinator per base each time a sample is read (the same combinations in
expectation); ``extra`` keeps ``bases`` and ``hal.{j}.{param}`` so the factorized form can be rebuilt.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .core import CondenseError, register_method
from .mtt import EXPERT_DEFAULTS, Chunks, TrajectoryMatching, trajectory_loss, unroll

__all__ = ["HaBa", "Hallucinator", "plan_bases", "supcon_loss"]


class Hallucinator(nn.Module):
    """conv 3x3 (no padding) -> per-pixel scale and shift -> transposed conv 3x3: ``(B, c, H, W) -> (B, C, H, W)``."""

    def __init__(self, in_chans: int, out_chans: int, size: tuple[int, int], kernel: int = 3):
        super().__init__()
        h, w = size[0] - kernel + 1, size[1] - kernel + 1
        self.enc = nn.Conv2d(in_chans, out_chans, kernel)
        self.scale = nn.Parameter(torch.ones(1, out_chans, h, w))
        self.shift = nn.Parameter(torch.zeros(1, out_chans, h, w))
        self.dec = nn.ConvTranspose2d(out_chans, out_chans, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x) * self.scale + self.shift)


def hallucinator_values(in_chans: int, out_chans: int, size: tuple[int, int], kernel: int = 3) -> int:
    """Parameters of one :class:`Hallucinator` (what it costs to store)."""
    h, w = size[0] - kernel + 1, size[1] - kernel + 1
    enc = in_chans * out_chans * kernel * kernel + out_chans
    dec = out_chans * out_chans * kernel * kernel + out_chans
    return enc + 2 * out_chans * h * w + dec


def plan_bases(
    ipc: int,
    classes: int,
    shape: tuple[int, int, int],
    n_hal: int,
    n_bases: int = 0,
    base_channels: int = 0,
    budget: bool = True,
) -> tuple[int, int, int]:
    """``(n_bases per class, base channels, hallucinators)`` for the options (0 = choose); with ``budget`` the
    stored values (bases + hallucinators) fit ``ipc x C x H x W x classes``. Raises :class:`CondenseError`
    when nothing fits."""
    c, h, w = shape
    limit = ipc * c * h * w * classes
    if not budget:
        return (n_bases or ipc), (base_channels or c), n_hal

    def fits(n, bc, k):
        return n * classes * bc * h * w + k * hallucinator_values(bc, c, (h, w)) <= limit

    def most(bc, k):
        return max(0, (limit - k * hallucinator_values(bc, c, (h, w))) // (classes * bc * h * w))

    channel_choices = [base_channels] if base_channels else [c, 1] if c > 1 else [c]
    hal_choices = [n_hal] if n_bases or base_channels else range(n_hal, 0, -1)
    for k in hal_choices:
        for bc in channel_choices:
            n = n_bases or most(bc, k)
            if n >= 1 and fits(n, bc, k):
                return int(n), int(bc), int(k)
    raise CondenseError(
        f"factorization: {n_bases or 'one'} base(s) per class ({base_channels or c} channel(s)) and {n_hal} "
        f"hallucinator(s) do not fit the budget of ipc={ipc} ({limit:,} values): raise --ipc, lower n_hal/n_bases, "
        "or pass budget=false"
    )


def supcon_loss(z0: torch.Tensor, z1: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020) over two L2-normalised views ``z0``, ``z1`` (``(B, D)``):
    for every anchor among the 2B, the mean log-probability of its positives (same label, itself excluded) under a
    softmax over all others, negated and averaged."""
    z = torch.cat([z0, z1])
    y = torch.cat([labels, labels])
    n = z.shape[0]
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    positive = (y[:, None] == y[None, :]) & not_self
    log_prob = logits - torch.log((logits.exp() * not_self).sum(dim=1, keepdim=True))
    return -((log_prob * positive).sum(dim=1) / positive.sum(dim=1)).mean()


@register_method
class HaBa(TrajectoryMatching):
    name = "factorization"
    defaults = {
        "iterations": 15000,
        "n_hal": 5,
        "n_bases": 0,
        "base_channels": 0,
        "budget": True,
        "syn_steps": 30,
        "expert_epochs": 2,
        "max_start_epoch": 20,
        "lr_img": 100.0,
        "lr_hal": 100.0,
        "momentum": 0.95,
        "lr_lr": 1e-5,
        "lr_momentum": 0.9,
        "lr_teacher": 0.01,
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
        return plan_bases(self.ipc, self.real.num_classes, self.real.shape, o["n_hal"], o["n_bases"],
                          o["base_channels"], bool(o["budget"]))  # fmt: skip

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
        self.hals = self._seeded(
            lambda: nn.ModuleList(Hallucinator(self.base_channels, c, (h, w)) for _ in range(self.n_hal))
        ).to(self.device)
        self.extractor = self.network().train()
        self.setup_trajectories()
        self.opt_img = torch.optim.SGD([self.bases], lr=o["lr_img"], momentum=o["momentum"])
        self.opt_hal = torch.optim.SGD(self.hals.parameters(), lr=o["lr_hal"], momentum=o["momentum"])
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=o["lr_lr"], momentum=o["lr_momentum"])
        self.opt_ext = torch.optim.SGD(
            self.extractor.parameters(), lr=o["extractor_lr"], momentum=o["extractor_momentum"]
        )

    def _pair(self, chunks: Chunks) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of bases through two different random hallucinators, stacked (2B images, augmented) and the
        bases' labels."""
        idx = chunks.next()
        b = self.bases[idx]
        a, z = torch.randperm(self.n_hal, generator=self.generator)[:2].tolist() if self.n_hal > 1 else (0, 0)
        return self.augment(torch.cat([self.hals[a](b), self.hals[z](b)])), self.base_labels[idx]

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.extractor.forward_head(self.extractor.forward_features(x), pre_logits=True)
        return self.extractor.head.fc(emb), emb

    def step(self, it: int) -> float:
        o = self.options
        start, target = self.segment()
        chunks = Chunks(self.bases.shape[0], int(o["batch_syn"]), self.generator, self.device)

        def batch(_):
            idx = chunks.next()
            j = int(torch.randint(self.n_hal, (1,), generator=self.generator))
            return self.augment(self.hals[j](self.bases[idx])), self.base_labels[idx]

        end = unroll(self.student, start, self.syn_lr, int(o["syn_steps"]), batch)
        param_loss = trajectory_loss(end, start, target)

        # the factorization against the extractor: one base through two hallucinators should look different
        self.extractor.requires_grad_(False)
        x, _ = self._pair(chunks)
        n = x.shape[0] // 2
        emb = self._features(x)[1]
        club = ((F.cosine_similarity(emb[:n], emb[n:]) + 1) / 2).mean() * o["lambda_club"]
        loss = param_loss + club
        for opt in (self.opt_img, self.opt_hal, self.opt_lr):
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in (self.opt_img, self.opt_hal, self.opt_lr):
            opt.step()
        with torch.no_grad():
            self.syn_lr.clamp_(min=float(o["min_syn_lr"]))

        # the extractor: classify both views, pull them together, contrast by class
        self.extractor.requires_grad_(True)
        with torch.no_grad():
            x, y = self._pair(chunks)
        logits, emb = self._features(x)
        e0, e1 = emb[: y.shape[0]], emb[y.shape[0] :]
        cls = F.cross_entropy(logits, torch.cat([y, y])) * o["lambda_cls"]
        likeli = ((1 - F.cosine_similarity(e0, e1)) / 2).mean() * o["lambda_likeli"]
        con = supcon_loss(F.normalize(e0), F.normalize(e1), y, float(o["temperature"])) * o["lambda_contrast"]
        self.opt_ext.zero_grad(set_to_none=True)
        (cls + likeli + con).backward()
        self.opt_ext.step()
        return loss.item()

    @torch.no_grad()
    def result(self):
        k, n = self.real.num_classes, self.n_bases
        images, labels = [], []
        for cls in range(k):
            b = self.bases[cls * n : (cls + 1) * n].detach()
            for hal in self.hals:
                images.append(hal(b))
                labels.append(torch.full((n,), cls, dtype=torch.long, device=self.device))
        extra = {"bases": self.bases.detach().clone()}
        for j, hal in enumerate(self.hals):
            extra.update({f"hal.{j}.{name}": p.detach().clone() for name, p in hal.named_parameters()})
        return torch.cat(images), torch.cat(labels), None, extra

    def storage(self) -> dict[str, Any]:
        bases = int(self.bases.numel())
        hals = sum(int(p.numel()) for p in self.hals.parameters())
        c, h, w = self.real.shape
        return {
            "values": bases + hals,
            "what": "bases + hallucinators",
            "bases": bases,
            "hallucinators": hals,
            "ipc_budget": self.ipc * c * h * w * self.real.num_classes,
        }

    def describe(self) -> dict[str, Any]:
        s = self.storage()
        return {
            "n_bases": self.n_bases,
            "n_hal": self.n_hal,
            "base_channels": self.base_channels,
            "images_per_class": self.n_bases * self.n_hal,
            "stored_values": s["values"],
            "ipc_budget_values": s["ipc_budget"],
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
