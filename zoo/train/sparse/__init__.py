"""Dynamic sparse training: fixed-density masks that are pruned and regrown while the model trains.

This is the procedure SLaK ("More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity",
ICLR 2023, https://github.com/VITA-Group/SLaK) trains its 51x51 kernels with, written as a component that works
for any model, optimizer, AMP setting and number of processes:

* **What is sparse.** By default every 2-D or 4-D parameter named ``weight`` (convolutions including the stem and
  downsampling layers, every large-kernel branch, pointwise/linear layers, the head). Biases, norms and layer-scale
  ``gamma`` stay dense. ``only_large_kernels=True`` restricts masks to depthwise convolutions whose kernel is larger
  than ``large_kernel_threshold`` (5) on either axis: SLaK's (K x 5) and (5 x K) branches, not its 5 x 5 one.
  ``include``/``exclude`` take ``fnmatch`` patterns on parameter names, and ``DynamicSparsity(selector=...)``
  takes any predicate ``(name, param, module) -> bool``.
* **Initial layer-wise density** (``init``): ``snip`` (the ``|w * grad|`` scores of one batch, ranked over the
  whole model, give each layer's share of the kept weights; placement within a layer is random, as in SLaK),
  ``erk`` (Erdos-Renyi-Kernel: density proportional to ``sum(shape) / prod(shape)``), ``uniform``, or ``weights``
  (masks are the non-zeros of the current weights, e.g. of a released sparse checkpoint). A layer whose density
  comes out at ``dense_threshold`` (0.99) or more stays dense and leaves the masking.
* **Updates.** Every ``update_frequency`` *optimizer* steps each layer drops ``ceil(prune_rate * nnz)`` of its
  active weights with the smallest magnitude and regrows as many at inactive positions, at random (``random``) or
  where the gradient is largest (``gradient``, RigL). Grown weights, and their optimizer state, start at zero.
  ``prune_rate`` follows a cosine decay to ``final_prune_rate`` over ``total_steps``.
* **After every optimizer step** the weights and every optimizer state tensor of the weight's shape (SGD's
  ``momentum_buffer``, Adam's ``exp_avg``/``exp_avg_sq``, ...) are multiplied by the mask.

Where this differs from the authors' code (``sparse_core.py``), on purpose:

* Layer counts are exact. The authors draw masks and regrowth as independent Bernoulli trials, so a layer's
  density drifts a little at every update; here every layer keeps exactly the number of weights it was given, and
  the ``dense_threshold`` layers are accounted for inside the allocation, so the overall density is the target.
  (``exact_regrowth=False`` regrows with the authors' Bernoulli draw, ``p = n_grow / n_zero``.)
* Mixed precision works. The authors' engine never calls the masking step when AMP is on, so masks stop being
  applied and updated. Here optimizer steps are counted by a hook on the optimizer, so a step that
  ``torch.amp.GradScaler`` skips (non-finite gradients) is not counted, masks are still applied, and a long run of
  calls without any optimizer step raises a warning instead of silently freezing the masks.
* Distributed runs keep identical masks. Random draws come from one seeded generator that is synchronised at
  initialisation, SNIP scores are summed over processes, and every mask change is decided on rank 0 and broadcast.
* Pruning ranks only the active weights (the authors rank all of them and rely on pruned ones sorting first) and
  the prune rate stays at its final value after ``total_steps`` instead of rising again.

Example (a plain training loop; the same calls work with DDP, gradient accumulation and AMP)::

    import torch, torch.nn.functional as F
    from timm.utils import ModelEmaV3
    import zoo
    from zoo.train.sparse import DynamicSparsity, SparseConfig

    model = zoo.create_model("slak_tiny", num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.05)
    sparse = DynamicSparsity(model, optimizer, SparseConfig(sparsity=0.4, init="snip", prune_rate=0.3,
                                                            update_frequency=100), total_steps=len(loader) * epochs)
    sparse.init_masks(batch=next(iter(loader)))      # SNIP needs one (inputs, targets) batch
    ema = ModelEmaV3(model, decay=0.9999)
    for images, targets in loader:
        loss = F.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        sparse.step()                # right after every optimizer step; prunes and regrows when due
        ema.update(model)
        sparse.apply_to_ema(ema)     # pruned weights are zero in the EMA, grown ones follow the model
        optimizer.zero_grad()
    torch.save({"model": model.state_dict(), "sparse": sparse.state_dict()}, "last.pt")
    # resume: build model, optimizer and DynamicSparsity the same way, then sparse.load_state_dict(ckpt["sparse"])
    # instead of init_masks(); from weights alone: sparse.set_masks(DynamicSparsity.masks_from_weights(model))
"""

from .allocation import allocate_densities, erk_scores
from .config import SparseConfig, default_selector, large_kernel_selector
from .engine import DynamicSparsity

__all__ = [
    "DynamicSparsity",
    "SparseConfig",
    "allocate_densities",
    "default_selector",
    "erk_scores",
    "large_kernel_selector",
]
