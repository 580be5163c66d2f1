"""Weight-only quantization of the decoder LMs: bfloat16, int8 and int4 weights with CPU kernels chosen by measurement.

Formats (``zoo.create_model(NAME, quantize=...)``; a folder records its format in config.json's ``quantization``):

* ``"bf16"`` = ``{"method": "bf16"}``: every parameter in bfloat16 (``model.to(torch.bfloat16)``); activations and
  the KV cache follow.
* ``"int8"`` = ``{"method": "int8_weight_only", "group_size": null}``: each projection weight as int8 codes ``q`` in
  [-127, 127] with one float32 scale per output row, ``w = q * scale`` (symmetric, absolute max / 127).
* ``"int4"`` = ``{"method": "int4_weight_only", "group_size": 32, "scheme": "asymmetric"}``: 4-bit codes ``u`` in
  0..15 in groups of ``group_size`` input columns, ``w = (u - 8) * scale + zero`` with a float16 ``scale`` and
  ``zero`` per group (llama.cpp's Q4_1 with the code centred). ``"asymmetric"`` spreads the 16 levels from the group's
  minimum to its maximum; ``"symmetric"`` has ``zero = 0`` and ``scale`` = absolute max / 7.5 (torchao's symmetric
  int4, the form of MobileLLM-Pro's QAT checkpoints, whose own scales :func:`convert_fake_quantized` keeps).
  ``group_size`` must divide every projection's input width: 32 and 64 divide all registered shapes (576-wide
  layers included); 128 and 256 do not divide 576 and are refused for those models with the sizes that fit.

What is quantized: the seven projections of every decoder layer (``q/k/v/o_proj``, ``gate/up/down_proj``), swapped
for :class:`QuantizedLinear`. The token embedding and the output head -- the same matrix in every registered zoo LM
(tied) -- stay in the model's float dtype, as do the norms, MoR routers, LoRA deltas and an untied ``lm_head``: the
tie stays one tensor, the head keeps full precision (llama.cpp keeps the output matrix above 4 bits for the same
reason), and an embedding lookup reads one row per token, so its size costs memory but not time. ``"bf16"`` casts
everything, the embedding included.

Kernels: ``zoo bench quant-kernels`` times the matrix-vector products of one decoded token of ``mobilellm_125m``
(30 layers x seven projections + the 32000 x 576 output head), batch 1, for every candidate below on the machine it
runs on (with torchao installed, its configurations too): float32 and bfloat16 ``F.linear``; int8 codes cast inside
``F.linear``; ``aten._weight_int8pack_mm`` on float32 and bf16 rows; :mod:`zoo.kernels.gemv`'s one-row kernels on an
int16 or int8 row; int4 ``aten._weight_int4pack_mm_for_cpu``; int4 dequantized per call; ``torch._int_mm`` on int8
dynamic activations (reference). The run this design follows, with its machine, is in
``results/notes/code_figures.md``: the zoo's int8-row kernels were the fastest at int8 and int4.

PyTorch's integer kernels win only when fed bfloat16 rows (a float32 input is several times slower: they convert it
per call); torchao's configurations reach the same kernels through tensor subclasses, adding their dispatch to every
call, so the zoo calls the kernels itself.

The zoo's paths on CPU (inference): one row (a decoded token) goes to :mod:`zoo.kernels.gemv`'s kernels where
they run (an AVX2 CPU with a C++ compiler; that module's docstring has their timings), closer to the float
product (the row is rounded to int16 per block of 32, not to bf16). Other rows are rounded to bfloat16; int8 runs
``aten._weight_int8pack_mm`` and int4 the CPU tinygemm kernel ``aten._weight_int4pack_mm_for_cpu`` directly (the
kernel torchao's ``Int4OpaqueTensor`` wraps, without the tensor-subclass dispatch). Its packed form depends on the
CPU's instruction set (blocks of 64 rows with AVX-512, 32 with AVX2), so it is made at the first CPU forward and
never saved; where the one-row kernels run, they read the plain codes, which then stay beside it. A
``torch.compile``'d step calls the same kernels. Other devices, autograd through the input, and ``torch.export``
/ TorchScript traces use the portable form: dequantize, then ``F.linear`` (in a trace, the codes are graph
constants and the program runs anywhere).

Activation width (``act_bits``, config.json ``quantization["act_bits"]``; formats ``"int8a8"``, ``"int8a16"``,
``"int4a8"``, ``"int4a16"``; ``quantize_model(..., act_bits=)``, :func:`set_act_bits`): with ``8`` (the default,
:data:`DEFAULT_ACT_BITS`; a config without the field means it) every CPU product of a quantized layer -- a decoded
token, a prompt, the eager and the compiled step, and the int8 output head -- rounds its rows to int8 per block of
32 (llama.cpp's Q8_0) and multiplies bytes (:func:`zoo.kernels.gemv.gemm_int8_a8` / ``gemm_int4_a8``; one to three
rows read a copy of the codes repacked in tiles of 8 output rows, :func:`zoo.kernels.gemv.gemm_a8_tiles`, made at the
first product and again when the codes change, never saved: the same bits, and as much memory again as the codes); with ``16``
one row goes to the int16 kernels and several rows to PyTorch's kernels on bf16 rows, as above. The default is
chosen by quality on the quickstart LM (held-out pydoc perplexity, 256-token windows; fp32 119.109): int8a16
+0.012%, int8a8 +0.015%, int4a16 +0.091%, int4a8 +0.095% (bounds: 0.5% at int8, 1% at int4); greedy agreement with
fp32 over 256 tokens int8 0.97 at both widths, int4 0.47 (a16) and 0.36 (a8). The weights are the same at both
widths: ``act_bits`` is a run-time choice (:meth:`QuantSpec.same_weights`).

State dict of a :class:`QuantizedLinear` (plain layout, the same on every machine): ``qweight`` (int8 ``(out, in)``;
int4: uint8 ``(out, in / 2)``, two codes per byte, the even column in the low nibble), ``scale`` (int8: float32
``(out,)``; int4: float16 ``(out, in / group_size)``), ``zero`` (int4 only, like ``scale``) and ``bias`` when the
layer has one. Integer tensors are declared as integer buffers, so a checkpoint loader can tell a quantized tensor
from a float one and refuse to cast one into the other.
"""

from .quant_format import (
    ACT_BITS,
    ACTIVATIONS,
    DEFAULT_ACT_BITS,
    DEFAULT_GROUP_SIZE,
    EXPORT_BACKENDS,
    INT4_GROUP_SIZES,
    KERNEL_DTYPE,
    METHODS,
    SCHEMES,
    VOCABULARY,
    QuantName,
    QuantRecordError,
    QuantRecordMismatch,
    QuantSpec,
    counterpart,
    dequantize_int4,
    lookup,
    pack_int4,
    quant_names,
    quantize_argument,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)
from .quant_layer import QuantizedLinear, choose_kernel, int8_head, kernel_path, portable_kernels
from .quant_model import (
    FAKE_QUANT_SCALE,
    FAKE_QUANT_ZERO,
    convert_fake_quantized,
    dequantize_model,
    fake_quantized_keys,
    is_quantized_state_dict,
    model_quantization,
    quantize_model,
    quantized_layer_names,
    set_act_bits,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_GROUP_SIZE",
    "FAKE_QUANT_SCALE",
    "FAKE_QUANT_ZERO",
    "INT4_GROUP_SIZES",
    "KERNEL_DTYPE",
    "SCHEMES",
    "METHODS",
    "ACT_BITS",
    "DEFAULT_ACT_BITS",
    "EXPORT_BACKENDS",
    "VOCABULARY",
    "QuantName",
    "QuantRecordError",
    "QuantRecordMismatch",
    "QuantSpec",
    "QuantizedLinear",
    "quantize_argument",
    "counterpart",
    "lookup",
    "quant_names",
    "choose_kernel",
    "convert_fake_quantized",
    "dequantize_model",
    "dequantize_int4",
    "fake_quantized_keys",
    "int8_head",
    "kernel_path",
    "is_quantized_state_dict",
    "model_quantization",
    "pack_int4",
    "portable_kernels",
    "quantize_int4",
    "quantize_int8",
    "quantize_model",
    "quantized_layer_names",
    "set_act_bits",
    "unpack_int4",
]
