"""Plain rendition of the authors' dataset factorization (Huage001/DatasetFactorization): ``utils.StyleTranslator``
(a hallucinator), ``utils.StyleTranslatorSharedDataset`` (the evaluation's per-read draw), ``contrastive_loss``'s
``SupConLoss`` and ``Extractor``, and one iteration of ``distill_fac.py``'s main loop.

The structure, the random draws and the arithmetic are the authors':

- bases ``image_syn`` are ``[classes, ipc, c, H, W]``; a flat index ``i`` in ``randperm(classes * ipc)`` is base
  ``(i // ipc, i % ipc)`` with label ``i // ipc``;
- each unrolled step takes ``indices_chunks.pop()`` (torch's global RNG), one hallucinator drawn with
  ``random.randint`` (Python's RNG), augments, and steps the student as MTT does;
- the club term takes the next chunk and two hallucinators ``randperm(n_style)[:2]``, augments both views together,
  and adds ``lambda_club * mean((cos(e0, e1) + 1) / 2)`` of the extractor's embeddings to the normalised trajectory
  loss; one ``backward``; the bases', hallucinators' and lr's optimisers step; ``syn_lr`` is clipped at 0.001;
- the extractor's step takes the next chunk and a fresh pair (not detached: its gradients also reach the bases and
  hallucinators, which the next iteration's ``zero_grad`` discards) and minimises ``lambda_cls * CE`` on both
  views ``+ lambda_likeli * mean((1 - cos) / 2) + lambda_contrast * SupCon``.

Where this file differs from theirs, on purpose and without changing the arithmetic: the networks are passed in;
``DiffAugment`` is an ``augment`` callable; :class:`Extractor` takes a ``width`` and sizes its classifier from
``image_size`` (theirs is fixed at 128 channels and 2048 features, i.e. 32x32 inputs) so that the parity tests can
run tiny networks; ``hook`` (called between the factorization's update and the extractor's step) lets a test look
at the state there; logging, evaluation and saving are left out.
"""

import random
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .mtt import ReparamModule

__all__ = ["Extractor", "StyleTranslator", "StyleTranslatorSharedDataset", "SupConLoss", "distill_fac_iteration"]


class StyleTranslator(nn.Module):
    """``dec(scale * enc(x) + shift)``: a conv (no padding), a per-pixel scale (init 1) and shift (init 0), a
    transposed conv."""

    def __init__(self, in_channel=3, mid_channel=3, out_channel=3, image_size=32, kernel_size=1):
        super().__init__()
        self.enc = nn.Conv2d(in_channel, mid_channel, kernel_size)
        side = image_size - kernel_size + 1
        self.scale = nn.Parameter(1.0 + torch.zeros(1, mid_channel, side, side))
        self.shift = nn.Parameter(torch.zeros(1, mid_channel, side, side))
        self.dec = nn.ConvTranspose2d(mid_channel, out_channel, kernel_size)

    def forward(self, x):
        x = self.enc(x)
        x = self.scale * x + self.shift
        return self.dec(x)


class StyleTranslatorSharedDataset(Dataset):
    """Each read of sample ``index`` draws one hallucinator (``random.randint``) for base ``(index // ipc,
    index % ipc)``; label ``index // ipc``; ``classes * ipc`` samples."""

    def __init__(self, images, styles):
        self.n_c, self.ipc, _, h, w = images.shape
        self.styles = styles
        self.images = images.detach()

    def __getitem__(self, index):
        label = index // self.ipc
        idx = index % self.ipc
        base = self.images[label, idx, :, :, :]
        style_idx = random.randint(0, len(self.styles) - 1)
        image = self.styles[style_idx](base.unsqueeze(0))
        return image[0], label

    def __len__(self):
        return self.n_c * self.ipc


class SupConLoss(nn.Module):
    """Supervised contrastive loss (``contrast_mode='all'``) over ``features [bsz, n_views, dim]``."""

    def __init__(self, temperature=0.07, base_temperature=0.07):
        super().__init__()
        self.temperature = temperature
        self.base_temperature = base_temperature

    def forward(self, features, labels):
        batch_size = features.shape[0]
        labels = labels.contiguous().view(-1, 1)
        mask = torch.eq(labels, labels.T).to(features.dtype)
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        anchor_feature, anchor_count = contrast_feature, contrast_count
        anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), self.temperature)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0)
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
        loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        return loss.view(anchor_count, batch_size).mean()


class Extractor(nn.Module):
    """ConvNet-3 (conv, instance norm, ReLU, avg-pool) returning ``(logits, flattened features)``."""

    def __init__(self, n_classes, channel=3, image_size=32, width=128):
        super().__init__()
        layers, c = [], channel
        for d in range(3):
            pad = (3, 3) if channel == 1 and d == 0 else (1, 1)
            layers += [nn.Conv2d(c, width, kernel_size=(3, 3), stride=(1, 1), padding=pad),
                       nn.GroupNorm(width, width, eps=1e-05, affine=True), nn.ReLU(inplace=True),
                       nn.AvgPool2d(kernel_size=2, stride=2, padding=0)]  # fmt: skip
            c = width
        self.model = nn.Sequential(*layers, nn.Flatten())
        side = image_size + (4 if channel == 1 else 0)
        self.classifier = nn.Linear(width * (side // 8) ** 2, n_classes)

    def forward(self, x):
        feat = self.model(x)
        return self.classifier(feat), feat


def _next_chunk(indices_chunks: list, num_classes: int, ipc: int, batch_syn: int) -> torch.Tensor:
    """The next batch of synthetic indices; a fresh permutation split into batches when the last one is used."""
    if not indices_chunks:
        indices = torch.randperm(num_classes * ipc)
        indices_chunks.extend(torch.split(indices, batch_syn))
    return indices_chunks.pop()


def _two_styled_views(indices_chunks, syn_images, styles, num_classes, ipc, n_style, batch_syn, augment):
    """A batch of bases through two random styles, stacked (the content network's pair): (label, base, x)."""
    these_indices = _next_chunk(indices_chunks, num_classes, ipc, batch_syn)
    label = these_indices // ipc
    base_idx = these_indices % ipc
    style_idx = torch.randperm(n_style)[:2]
    base = syn_images[label, base_idx, :, :, :]
    x = torch.cat([styles[style_idx[0]](base), styles[style_idx[1]](base)], dim=0)
    if augment is not None:
        x = augment(x)
    return label, base, x


def distill_fac_iteration(
    student_net: ReparamModule, expert_trajectory, start_epoch, image_syn, styles, sim_content_net, syn_lr,
    optimizer_img, optimizer_style, optimizer_lr, optimizer_sim_content, contrast, num_classes, ipc, n_style,
    syn_steps, expert_epochs, batch_syn, lambda_club_content=0.1, lambda_cls_content=1.0,
    lambda_likeli_content=0.1, lambda_contrast_content=0.1, augment: Callable | None = None,
    hook: Callable | None = None,
):  # fmt: skip
    """The body of ``distill_fac.py``'s loop after the expert and ``start_epoch`` are drawn. Returns the losses."""
    criterion = nn.CrossEntropyLoss()
    num_params = sum(np.prod(p.size()) for p in student_net.parameters())
    starting_params = expert_trajectory[start_epoch]
    target_params = expert_trajectory[start_epoch + expert_epochs]
    target_params = torch.cat([p.data.reshape(-1) for p in target_params], 0)
    student_params = [torch.cat([p.data.reshape(-1) for p in starting_params], 0).requires_grad_(True)]
    starting_params = torch.cat([p.data.reshape(-1) for p in starting_params], 0)
    syn_images = image_syn
    indices_chunks = []
    for _step in range(syn_steps):
        these_indices = _next_chunk(indices_chunks, num_classes, ipc, batch_syn)
        label = these_indices // ipc
        base_idx = these_indices % ipc
        style_idx = random.randint(0, n_style - 1)
        base = syn_images[label, base_idx, :, :, :]
        x = styles[style_idx](base)
        this_y = label.long()
        if augment is not None:
            x = augment(x)
        x = student_net(x, flat_param=student_params[-1])
        ce_loss = criterion(x, this_y)
        grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)

    label, base, x = _two_styled_views(
        indices_chunks, syn_images, styles, num_classes, ipc, n_style, batch_syn, augment
    )
    logits_c, embed_c = sim_content_net(x)
    n = base.shape[0]
    club_content_loss = ((F.cosine_similarity(embed_c[:n], embed_c[n:]) + 1.0) / 2.0).mean() * lambda_club_content

    param_loss = torch.tensor(0.0, dtype=starting_params.dtype)
    param_dist = torch.tensor(0.0, dtype=starting_params.dtype)
    param_loss += F.mse_loss(student_params[-1], target_params, reduction="sum")
    param_dist += F.mse_loss(starting_params, target_params, reduction="sum")
    param_loss /= num_params
    param_dist /= num_params
    param_loss /= param_dist
    grand_loss = param_loss + club_content_loss

    optimizer_img.zero_grad()
    optimizer_style.zero_grad()
    optimizer_lr.zero_grad()
    grand_loss.backward()
    optimizer_img.step()
    optimizer_style.step()
    optimizer_lr.step()
    syn_lr.data = syn_lr.data.clip(min=0.001)
    if hook is not None:
        hook()

    label, base, x = _two_styled_views(
        indices_chunks, syn_images, styles, num_classes, ipc, n_style, batch_syn, augment
    )
    logits_c, embed_c = sim_content_net(x)
    n = base.shape[0]
    cls_content_loss = criterion(logits_c, torch.cat([label, label], dim=0)) * lambda_cls_content
    likeli_content_loss = ((1 - F.cosine_similarity(embed_c[:n], embed_c[n:])) / 2.0).mean() * lambda_likeli_content
    embed_c_0 = F.normalize(embed_c[:n])
    embed_c_1 = F.normalize(embed_c[n:])
    contrast_content_loss = contrast(torch.stack([embed_c_0, embed_c_1], dim=1), label) * lambda_contrast_content
    sim_content_loss = cls_content_loss + likeli_content_loss + contrast_content_loss
    optimizer_sim_content.zero_grad()
    sim_content_loss.backward()
    optimizer_sim_content.step()
    return {
        "grand": grand_loss.detach(),
        "param": param_loss.detach(),
        "club": club_content_loss.detach(),
        "sim": sim_content_loss.detach(),
    }
