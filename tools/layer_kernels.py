"""The MetaFormer layers' training kernels, each against the PyTorch operator it stands in for, on the same inputs.

A maintainer's tool of the zoo's checkout, beside ``tools/train_profile.py``: that one says where a training step's
time goes; this one times each of the zoo's own pieces of that step alone, at the shapes of a model's stages, so a
kernel change shows its margin before the whole step's noise hides it::

    python tools/layer_kernels.py [--batch 8] [--threads 1] [--rounds 10] [--only attention]
                                  [--out results/train/layer_kernels.json]

- the downsampling layers' weights' gradient (:class:`zoo.layers.PatchConv2d`, one GEMM over the input's
  patches) against oneDNN's (``convolution_backward`` asked for the weights' gradient only), at the three
  downsampling layers of the S-size MetaFormers (64 to 128 channels at 56x56, 128 to 320 at 28x28, 320 to 512 at
  14x14);
- ConvFormer's 7x7 depthwise convolution, forward and weights' gradient (:mod:`zoo.kernels.vision`), against
  oneDNN's, at ConvFormer-S18's four stages;
- the MLP's first layer's output and its input's gradient (:func:`zoo.kernels.vision.matmul`), against the BLAS GEMM
  (``F.linear``, ``g @ W``), at the S-size MetaFormers' four stages (the second layer's products are the same two
  shapes the other way round);
- GELU forward and backward (:func:`zoo.kernels.vision.gelu`, GELU and its slope in one pass, then the slope times
  the output's gradient) against ATen's ``gelu`` and ``gelu_backward``, on the S-size MetaFormers' hidden maps (the
  MLP computes the zoo's in its products' tile stores; alone, the two passes are what it saves);
- the Linear layers' weights' gradient (:func:`zoo.kernels.vision.weight_grad`, the token rows split over the
  threads) against ``torch.mm`` (the BLAS's own threads), the MLP's two layers at the four stages (the same on one
  thread).
- CAFormer's attention, forward and backward (:func:`zoo.kernels.vision.attention`, q, k and v read in place from
  the qkv product, each head of an image one task) against its operators' path (``scaled_dot_product_attention``
  with the permutes into heads and back), at CAFormer-S18's stages 3 and 4.

Each round calls every pair once, the zoo's first in even rounds and PyTorch's first in odd ones; a row gives the
median milliseconds a call of each and their ratio. ``--out`` merges the rows into a results file with the run's
provenance (rows of the same kernel, shape, batch and threads are replaced).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOWNSAMPLING = [(64, 128, 56), (128, 320, 28), (320, 512, 14)]  # in, out channels, input side
DEPTHWISE = [(128, 56), (256, 28), (640, 14), (1024, 7)]  # ConvFormer-S18's hidden widths (2x the stage's), sides
STAGES = [(64, 56), (128, 28), (320, 14), (512, 7)]  # the S-size MetaFormers' widths and sides


def cases(batch: int) -> list[dict]:
    """Every timed pair: ``kernel``, ``shape``, the ``inputs`` (fresh random tensors), ``zoo(*inputs)`` and
    ``torch(*inputs)`` giving the same tensor, and ``terms``, the products summed into each of its entries."""
    import torch
    import torch.nn.functional as F

    from zoo.kernels import vision
    from zoo.layers.patch_conv import patch_weight_grad

    if not vision.available():  # builds the kernels at the first call
        raise SystemExit("the zoo's vision kernels do not run here (an AVX2 CPU and a C++ compiler are needed)")
    cl = torch.channels_last

    def weights_grad(stride: int, padding: int, groups: int):
        def call(x, g, w):  # oneDNN's weights' gradient alone
            mask = [False, True, False]
            return torch.ops.aten.convolution_backward(
                g, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], groups, mask
            )[1]

        return call

    out = []
    for cin, cout, side in DOWNSAMPLING:
        inputs = (
            torch.randn(batch, cin, side, side).to(memory_format=cl),
            torch.randn(batch, cout, side // 2, side // 2).to(memory_format=cl),
            torch.randn(cout, cin, 3, 3),
        )
        out.append(dict(
            kernel="downsampling 3x3/2 weights' gradient", shape=f"{cin}->{cout} @ {side}x{side}", inputs=inputs,
            zoo=lambda x, g, w: patch_weight_grad(x, g, (3, 3), (2, 2), (1, 1)), torch=weights_grad(2, 1, 1),
            terms=batch * (side // 2) ** 2,
        ))  # fmt: skip
    for channels, side in DEPTHWISE:
        x = torch.randn(batch, channels, side, side).to(memory_format=cl)
        w = torch.randn(channels, 1, 7, 7)
        g = torch.randn(batch, channels, side, side).to(memory_format=cl)
        shape = f"{channels} @ {side}x{side}"
        out.append(dict(
            kernel="depthwise 7x7 forward", shape=shape, inputs=(x, w),
            zoo=lambda x, w: vision.depthwise_forward(x, w, (3, 3)),
            torch=lambda x, w: F.conv2d(x, w, padding=3, groups=x.shape[1]), terms=49,
        ))  # fmt: skip
        out.append(dict(
            kernel="depthwise 7x7 weights' gradient", shape=shape, inputs=(x, g, w),
            zoo=lambda x, g, w: vision.depthwise_weight_grad(x, g, (7, 7), (3, 3)),
            torch=weights_grad(1, 3, channels), terms=batch * side * side,
        ))  # fmt: skip
    for dim, side in STAGES:
        rows, hidden = batch * side * side, 4 * dim
        w = torch.randn(hidden, dim)
        out.append(dict(
            kernel="MLP fc1 output", shape=f"{rows}x{dim} -> {hidden}", inputs=(torch.randn(rows, dim), w),
            zoo=lambda x, w: vision.matmul(x, w.t()), torch=F.linear, terms=dim,
        ))  # fmt: skip
        out.append(dict(
            kernel="MLP fc1 input's gradient", shape=f"{rows}x{hidden} -> {dim}", inputs=(torch.randn(rows, hidden), w),
            zoo=vision.matmul, torch=torch.mm, terms=hidden,
        ))  # fmt: skip
    for dim, side in STAGES:
        rows, hidden = batch * side * side, 4 * dim
        shape = f"{rows}x{hidden}"
        out.append(dict(  # (terms: none; the zoo's GELU has its own error bound, tests/tolerances.py)
            kernel="GELU forward and backward", shape=shape, terms=None,
            inputs=(torch.randn(rows, hidden), torch.randn(rows, hidden)),
            zoo=lambda h, g: (lambda act, slope: (act, slope.mul_(g)))(*vision.gelu(h)),
            torch=lambda h, g: (F.gelu(h), torch.ops.aten.gelu_backward(g, h)),
        ))  # fmt: skip
        for n, k in ((hidden, dim), (dim, hidden)):
            out.append(dict(
                kernel="Linear weights' gradient", shape=f"{rows}x{n} x {rows}x{k}", terms=rows,
                inputs=(torch.randn(rows, n), torch.randn(rows, k)), zoo=vision.weight_grad,
                torch=lambda g, x: torch.mm(g.t(), x),
            ))  # fmt: skip
    for heads, side in ((10, 14), (16, 7)):  # CAFormer-S18's stages 3 and 4 (320 and 512 channels, heads of 32)
        tokens = side * side
        out.append(dict(  # (terms: none; the attention has its own error bounds, tests/tolerances.py)
            kernel="attention forward and backward", shape=f"{batch}x{tokens}, {heads} heads", terms=None,
            inputs=(torch.randn(batch, tokens, 3 * heads * 32), torch.randn(batch, tokens, heads * 32)),
            zoo=lambda qkv, g, heads=heads: kernel_attention(qkv, g, heads),
            torch=lambda qkv, g, heads=heads: operators_attention(qkv, g, heads),
        ))  # fmt: skip
    return out


def kernel_attention(qkv, g, heads: int):
    """``(out, qkv's gradient)`` by :func:`zoo.kernels.vision.attention` and its backward, reading q, k and v in
    place from ``qkv`` (B, N, 3 C) and writing the output as (B, N, C), as CAFormer's attention calls them."""
    from zoo.kernels import vision

    out, lse = vision.attention(qkv, heads)
    return out, vision.attention_backward(g, qkv, out, lse, heads)


def operators_attention(qkv, g, heads: int):
    """The same by the operators' path of CAFormer's attention: q, k and v permuted into heads,
    ``scaled_dot_product_attention``, the output back into tokens, and autograd's backward of the three."""
    import torch
    import torch.nn.functional as F

    qkv = qkv.detach().requires_grad_()
    b, n, c3 = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c3 // 3)
    (grad,) = torch.autograd.grad(out, qkv, g)
    return out.detach(), grad


def measure(batch: int, rounds: int, threads: int, only: str = "") -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    rows = []
    for case in cases(batch):
        if only not in case["kernel"]:
            continue
        kernel, shape, inputs = case["kernel"], case["shape"], case["inputs"]

        def ours(case=case, inputs=inputs):
            return case["zoo"](*inputs)

        def theirs(case=case, inputs=inputs):
            return case["torch"](*inputs)

        ours(), theirs()  # warm-up
        times: dict[str, list[float]] = {"zoo": [], "torch": []}
        for r in range(rounds):
            for side, call in (("zoo", ours), ("torch", theirs)) if r % 2 == 0 else (("torch", theirs), ("zoo", ours)):
                start = time.perf_counter()
                call()
                times[side].append((time.perf_counter() - start) * 1000)
        zoo_ms, torch_ms = statistics.median(times["zoo"]), statistics.median(times["torch"])
        row = dict(kernel=kernel, shape=shape, batch_size=batch, threads=threads, zoo_ms=round(zoo_ms, 3),
                   torch_ms=round(torch_ms, 3), ratio=round(torch_ms / zoo_ms, 3), rounds=rounds)  # fmt: skip
        print(f"{kernel:38s} {shape:18s} zoo {zoo_ms:7.2f} ms  PyTorch {torch_ms:7.2f} ms  {row['ratio']:.2f}x",
              flush=True)  # fmt: skip
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8, help="images a call (default 8)")
    p.add_argument("--threads", type=int, default=1, help="torch's thread count (default 1)")
    p.add_argument("--rounds", type=int, default=10, help="calls of each side a pair (default 10)")
    p.add_argument("--only", default="", help="time only the pairs whose kernel names contain this (default: all)")
    p.add_argument("--out", type=Path, help="merge the rows into this results file")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from zoo.bench.harness import merge_run, provenance

    torch.set_num_threads(args.threads)  # before the provenance, which records the thread count
    prov = provenance(f"{args.threads} threads")  # at the start: date, commit, load
    command = "python tools/layer_kernels.py " + " ".join(argv)
    rows = measure(args.batch, args.rounds, args.threads, args.only)
    if args.out:
        merge_run(args.out, rows, prov, command, lambda r: (r["kernel"], r["shape"], r["batch_size"], r["threads"]))


if __name__ == "__main__":
    main()
