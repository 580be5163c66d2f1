"""``pte``: a language model's prefill and cached decode, compiled for the CPU, with a static KV cache.

The model is traced as :class:`CachedDecoder`: ``(tokens (1, T), input_pos (1,)) -> logits (1, vocab)`` of the
last token, writing the keys/values of the ``T`` tokens at positions ``input_pos .. input_pos + T - 1`` of a
static cache of ``spec.max_seq_len`` tokens held in module buffers and mutated in place (one pair of buffers per
slot of the model's own cache, i.e. per layer application). Attention reads the whole static cache under a mask
built from the positions, so no shape depends on the data. AOTInductor traces it once with ``T`` dynamic in
``[1, max_seq_len]``: the prompt, then each new token. ExecuTorch's program has two methods of static shapes
(:func:`prompt_form`): ``forward`` takes one token per call, ``prefill`` a chunk of ``prompt_chunk`` tokens (default
32) of the prompt; they are lowered side by side in two processes and share the weights (stored once) and the cache
(one allocation). ``prompt_chunk=0`` exports ``forward`` alone (the prompt token by token), ``dynamic_prompt=True``
one ``forward`` of any length.

Backends (``backend=`` option; default ``executorch`` where it imports, else ``aoti``):

* ``executorch``: ``model.pte`` with the methods ``forward`` and ``prefill``, lowered with the XNNPACK partitioner;
  the cache is not in the file (ExecuTorch zero-fills it when the program loads). The decoder computes its norms,
  heads, rotary embedding and attention with :class:`~zoo.lm.static_decoder.DelegateOps` (the same values in
  ops XNNPACK takes whole), so each layer lowers as one or two delegated blocks around its cache writes: fewer
  blocks to lower, fewer calls per token. The layers write their caches in place with ExecuTorch's LLM operator
  ``llama::update_cache`` and attend over them with XNNPACK's batched matrix products
  (:meth:`~zoo.lm.static_decoder.StaticDecoder._run_llm`; routed, shared and LoRA slots keep the masked form).
  Runs in ExecuTorch's Python runtime (the LLM operators loaded first: ``runtime.json``'s ``llm_ops``).
* ``aoti``: ``decoder.pt2``, an AOTInductor package (``torch._inductor.aoti_compile_and_package``). Runs with
  ``torch._inductor.aoti_load_package`` and nothing else.

``quantize=`` (executorch): ``"8da4w"`` / ``"8da8w"`` store the projections as int4 in groups of ``group_size``
(default 32; ``0``: one scale per output row) / int8 per row, run by XNNPACK's kernels with int8 dynamic
activations (per token), as ExecuTorch deploys Llama on phones; the output head as int8, the embedding as int8
rows (:mod:`zoo.export.xnnpack_quant`). A model the zoo quantized with the same bits (int8, or symmetric int4 such
as MobileLLM-Pro's QAT weights) is stored on its own grid, not quantized again. ``runtime.json`` records the file's
bytes beside its weights' and cache's, and the check holds them to each other.

``runtime.json`` says which backend, and :func:`load` returns a :class:`CompiledLM` that decodes from either
without zoo's model code, greedy or sampled, with ``generate``'s stops and streamers.

Routing (Mixture-of-Recursions) is traced densely: every token runs every recursion step; its routing decision
selects whether the step's output is kept (``torch.where``) and whether its cache entry counts (a per-slot
validity buffer), which for the selected tokens is what the eager model's threshold (expert-choice) or argmax
(token-choice) routing computes. Top-k expert routing looks at the whole sequence and cannot decode causally; it
is refused.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from ..lm.generation import GenerationConfig, generate_on_session
from ..lm.static_decoder import StaticDecoder
from .core import ExportError, ExportSpec, compare, format_quantize
from .xnnpack_quant import DEFAULT_GROUP_SIZE, quantize_for_xnnpack, stack_linears

__all__ = ["CachedDecoder", "CompiledLM", "load", "load_llm_ops"]

PTE_NAME = "model.pte"
AOTI_NAME = "decoder.pt2"
RUNTIME_NAME = "runtime.json"
METHODS = ("prefill", "decode")
FORWARD = "forward"  # the executorch program's method of one token (or of a prompt of any length: dynamic_prompt)
PREFILL = "prefill"  # its method of prompt_chunk tokens, beside FORWARD
DEFAULT_PROMPT_CHUNK = 32
CHUNK_COST = 0.4  # a chunk's call costs about as much as CHUNK_COST * chunk calls of one token (measured)
BACKENDS = ("executorch", "aoti")


def _executorch_available() -> bool:
    try:
        import executorch.runtime  # noqa: F401
    except Exception:  # missing, or its compiled extension does not load beside this torch
        return False
    return True


def _backend(spec: ExportSpec) -> str:
    backend = spec.options.get("backend")
    if backend is None:
        return "executorch" if _executorch_available() else "aoti"
    if backend not in BACKENDS:
        raise ExportError(f"pte backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "executorch" and not _executorch_available():
        raise ExportError(
            "backend='executorch' needs the executorch package (pip install executorch; it runs beside this torch), "
            "or choose backend='aoti'"
        )
    return backend


def load_llm_ops() -> bool:
    """Whether ExecuTorch's LLM operators (``llama::update_cache``, the one the export uses) are registered, with
    torch for the export and with ExecuTorch's runtime for a program that calls them; loads them if not."""
    try:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    except Exception:  # an executorch build without them
        return False
    return hasattr(torch.ops.llama, "update_cache")


def CachedDecoder(
    model: nn.Module, max_seq_len: int, delegate_ops: bool = False, llm_ops: bool = False
) -> StaticDecoder:
    """``model`` over a static cache of ``max_seq_len`` tokens (:class:`zoo.lm.static_decoder.StaticDecoder`),
    refused with :class:`ExportError` where it cannot be built."""
    try:
        return StaticDecoder(model, max_seq_len, delegate_ops, llm_ops=llm_ops, fuse=stack_linears if llm_ops else None)
    except ValueError as e:
        raise ExportError(str(e)) from None


# ------------------------------------------------------------------------------------------------------------------
# Export and compile
# ------------------------------------------------------------------------------------------------------------------


def export_methods(
    decoder: StaticDecoder, spec: ExportSpec, lengths: dict[str, int | None] | None = None
) -> dict[str, torch.export.ExportedProgram]:
    """``decoder`` traced once per method of ``lengths`` (name -> tokens per call; ``None``: any length in ``[1,
    max_seq_len]``). Default: ``prefill`` (a dynamic prompt length; it decodes a token too) and ``decode`` (one
    token, static shapes)."""
    S = decoder.max_seq_len
    device = decoder.rope_cos.device
    pos = torch.zeros(1, dtype=torch.long, device=device)
    programs = {}
    try:
        with torch.no_grad():
            for method, length in (lengths or {"prefill": None, "decode": 1}).items():
                tokens = torch.zeros(1, min(8, S) if length is None else length, dtype=torch.long, device=device)
                dynamic = ({1: Dim("prompt_length", min=1, max=S)}, None) if length is None else None
                programs[method] = torch.export.export(decoder, (tokens, pos), dynamic_shapes=dynamic)
    except Exception as e:  # torch's message names the op or guard that failed
        raise ExportError(f"torch.export of {spec.name}'s cached decoder failed: {type(e).__name__}: {e}") from e
    return programs


def _xnnpack_partitioner():
    """XNNPACK's partitioner, its blocks marked for the preprocess of dynamically quantized linear blocks, the ops
    it keeps whole (linear layers) kept from decomposition without a check of each node.

    XNNPACK's preprocess runs 17 graph passes over every delegated block, each re-tracing the block with fake
    tensors, two of them matching pattern graphs (bilinear upsampling, SDPA) node by node: about 5 s per block, two
    blocks per layer. A block marked ``dqlinear_partitioner`` gets only the pass that turns ``addmm``/``mm`` into
    linear layers. The others rewrite ops a :class:`~zoo.lm.static_decoder.DelegateOps` block does not hold
    (convolutions, batch norms, upsampling, PReLU, channels-last layouts, max pooling, padding) or fold what is
    already folded; the lowered program computes the same values (the export's check compares them), and the export
    of mobilellm_125m 8da4w as a whole-prompt program took 250 s instead of 416.

    ExecuTorch decomposes the program three times where a partitioner checks each node it keeps whole, twice where
    it keeps them all (functionalization, then the decompositions): every linear layer of these programs is
    XNNPACK's to run (the export's check runs the lowered program), and the lowering takes a quarter less time."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.backend.compile_spec_schema import CompileSpec

    class Partitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            return super().ops_to_not_decompose(ep)[0], None

    partitioner = Partitioner()
    partitioner.delegation_spec.compile_specs.append(CompileSpec("dqlinear_partitioner", b""))
    return partitioner


def _lowered(decoder: StaticDecoder, spec: ExportSpec, name: str, length: int | None, compile_config):
    """The method ``name`` of the program: ``decoder`` traced for ``length`` tokens per call, lowered to XNNPACK."""
    from executorch.exir import to_edge_transform_and_lower

    program = export_methods(decoder, spec, {name: length})[name]
    partitioner = [_xnnpack_partitioner()]
    edge = to_edge_transform_and_lower({name: program}, partitioner=partitioner, compile_config=compile_config)
    return edge.exported_program(name)


class _Worker:
    """``make()``'s lowered method, computed in a forked process and read back with ExecuTorch's serializer of
    edge programs (delegates included): the lowering is single-threaded Python, and a second method lowered beside
    the first costs the wall time of the slower one plus the round trip (about 10 s for mobilellm_125m)."""

    def __init__(self, make, path: Path):
        self.path = path
        context = multiprocessing.get_context("fork")
        self._reader, writer = context.Pipe(duplex=False)

        def run():
            from executorch.exir.serde.serialize import save

            try:
                torch.set_num_threads(1)  # the parent works beside it
                save(make(), str(path))
                writer.send(None)
            except BaseException as e:  # reported to the parent, which raises it
                writer.send((isinstance(e, ExportError), f"{type(e).__name__}: {e}"))
            finally:
                writer.close()

        self._process = context.Process(target=run, daemon=True)
        self._process.start()
        writer.close()

    def result(self) -> torch.export.ExportedProgram:
        from executorch.exir.serde.serialize import load

        try:
            error = self._reader.recv()
        except EOFError:  # it died without a word (killed, out of memory)
            error = (False, "the lowering process ended without a result")
        self._process.join()
        if error is not None:
            export_error, message = error
            raise ExportError(message) if export_error else RuntimeError(f"in the lowering process: {message}")
        log = logging.getLogger("executorch.exir.serde.export_serialize")
        level = log.level
        log.setLevel(logging.ERROR)  # it notes each unbacked position symbol the delegates no longer show
        try:
            return load(str(self.path))
        finally:
            log.setLevel(level)

    def stop(self) -> None:
        """Ends the process if it still runs (the parent failed first)."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()


def _parallel_lowering() -> bool:
    """Whether a second method is lowered in a forked process (Linux, more than one core)."""
    return (
        sys.platform.startswith("linux")
        and (os.cpu_count() or 1) > 1
        and ("fork" in multiprocessing.get_all_start_methods())
    )


def _lower_executorch(decoder: StaticDecoder, spec: ExportSpec, lengths: dict[str, int | None]) -> bytes:
    """The ``.pte`` of ``decoder`` with one method per entry of ``lengths`` (name -> tokens per call, ``None``:
    dynamic), sharing the weights (stored once) and the cache (one allocation the methods read and write)."""
    from executorch.exir import EdgeCompileConfig, EdgeProgramManager, ExecutorchBackendConfig
    from executorch.exir.passes import MemoryPlanningPass

    # as ExecuTorch's own LLM export: no per-op dtype verification of the edge graph (a third of the lowering time
    # for these graphs; torch.export has verified them) and no dim-order ops (XNNPACK takes contiguous tensors)
    compile_config = EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True)
    names = list(lengths)
    with tempfile.TemporaryDirectory(prefix="zoo-pte-") as tmp:
        lower = {
            name: functools.partial(_lowered, decoder, spec, name, lengths[name], compile_config) for name in names
        }
        # the other methods beside the first, each in a process of its own
        parallel = names[1:] if len(names) > 1 and _parallel_lowering() else []
        workers = {name: _Worker(lower[name], Path(tmp) / name) for name in parallel}
        try:
            programs = {name: lower[name]() for name in names if name not in workers}
            programs.update({name: worker.result() for name, worker in workers.items()})
        finally:
            for worker in workers.values():
                worker.stop()
    edge = EdgeProgramManager({name: programs[name] for name in names}, compile_config=compile_config)
    # the cache is not stored: ExecuTorch serializes a mutable buffer's shape and dtype only and zero-fills it when
    # the program loads (a stored cache would add max_seq_len's worth of zeros to the file); the methods share it
    planning = MemoryPlanningPass(alloc_graph_input=False, share_mutable_buffers=len(names) > 1)
    config = ExecutorchBackendConfig(memory_planning_pass=planning, emit_mutable_buffer_names=True)
    return edge.to_executorch(config).buffer


def _stored_weights(model: nn.Module, spec: ExportSpec) -> nn.Module:
    """The weights a quantized pte stores (:func:`quantize_for_xnnpack` at the spec's ``group_size``): what the
    export lowers and the check runs in float."""
    return quantize_for_xnnpack(model, spec.quantize, int(spec.options.get("group_size", DEFAULT_GROUP_SIZE)))


def prompt_form(spec: ExportSpec) -> tuple[str, int]:
    """How the program takes a prompt: ``("whole", 0)`` (any length in one call), ``("chunk", C)`` (a second
    method of ``C`` tokens per call beside the one-token method) or ``("tokens", 0)`` (one token per call).

    ExecuTorch: chunks of ``prompt_chunk`` tokens (default 32, at most ``max_seq_len``; ``0`` or ``1``: one token
    per call), or a whole prompt with ``dynamic_prompt=True``. A dynamic length makes every lowering pass reason
    about symbolic shapes, and XNNPACK takes no reshape or slice of a symbolic length, so each layer lowers as four
    blocks instead of two: a slower export and decode (``results/notes/code_figures.md``). Two static methods
    (:data:`PREFILL` of ``C`` tokens, :data:`FORWARD` of one) are lowered side by side (:func:`_lower_executorch`) and
    share the weights and the cache; :meth:`CompiledLM.prefill` covers a prompt with chunks. AOTInductor: whole
    prompts."""
    backend = spec.options.get("backend") or _backend(spec)
    if backend != "executorch" or spec.options.get("dynamic_prompt"):
        return "whole", 0
    chunk = spec.options.get("prompt_chunk", DEFAULT_PROMPT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
        raise ExportError(f"prompt_chunk must be a number of tokens >= 0 (0: one token per call), got {chunk!r}")
    if chunk > spec.max_seq_len and "prompt_chunk" in spec.options:
        warnings.warn(
            f"prompt_chunk={chunk} is more than max_seq_len={spec.max_seq_len}: the prompt method takes "
            f"{spec.max_seq_len} tokens per call (export.json records that)",
            stacklevel=2,
        )
        chunk = spec.options["prompt_chunk"] = spec.max_seq_len  # the record says what was exported
    chunk = min(chunk, spec.max_seq_len)  # the default's too
    return ("chunk", chunk) if chunk > 1 else ("tokens", 0)


def write(model: nn.Module, folder: Path, spec: ExportSpec) -> list[str]:
    backend = spec.options["backend"] = _backend(spec)  # recorded (export.json, the card's usage)
    format_quantize("pte", spec.quantize)  # the vocabulary's pte names
    if spec.quantize and backend != "executorch":
        raise ExportError(
            f"pte quantize={spec.quantize!r} stores XNNPACK's quantized kernels, which run in ExecuTorch: choose "
            "backend='executorch' (pip install executorch), or export float weights for aoti"
        )
    start = time.perf_counter()
    if spec.quantize:
        model = _stored_weights(model, spec)
    # executorch: the norms, heads and attention in ops XNNPACK takes whole (one delegated block per layer), the
    # layers' cache writes by ExecuTorch's update_cache (in place), their attention by XNNPACK over the cache
    llm_ops = backend == "executorch" and load_llm_ops()
    decoder = CachedDecoder(model, spec.max_seq_len, delegate_ops=backend == "executorch", llm_ops=llm_ops).eval()
    # one program serves the prompt and each new token: one copy of the weights and of the cache. executorch:
    # static methods of one token and of a chunk of the prompt, or one method of a dynamic length
    form, chunk = prompt_form(spec)
    name = PTE_NAME if backend == "executorch" else AOTI_NAME
    tmp = folder / f".tmp-{name}"  # (the AOTI package writer wants the .pt2 suffix)
    with warnings.catch_warnings():
        # the LLM operators' shape checks call a torch function that warns of its removal, once per trace of each
        # call (hundreds per export); the export has nothing to do about it
        warnings.filterwarnings("ignore", message="_check_is_size will be removed", category=FutureWarning)
        try:
            if backend == "executorch":
                # the chunk's method first: the slower lowering, done in this process beside the other's
                lengths = {PREFILL: chunk, FORWARD: 1} if form == "chunk" else {FORWARD: None if form == "whole" else 1}
                tmp.write_bytes(_lower_executorch(decoder, spec, lengths))
            else:
                program = export_methods(decoder, spec, {"prefill": None})["prefill"]
                torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"compiling {spec.name} with {backend} failed: {type(e).__name__}: {e}") from e
    tmp.replace(folder / name)
    seconds = time.perf_counter() - start
    c = model.config
    method = FORWARD if backend == "executorch" else "prefill"
    runtime = {
        "backend": backend,
        "file": name,
        "methods": {"prefill": PREFILL if form == "chunk" else method, "decode": method},
        # "whole": a prompt of any length in one call; "chunk": prompt_chunk tokens per call of the prefill method
        # (CompiledLM.prefill); "tokens": one token per call (the prompt fed token by token)
        "prompt": form,
        **({"prompt_chunk": chunk, "chunk_min_tokens": max(2, round(chunk * CHUNK_COST))} if form == "chunk" else {}),
        "signature": f"(tokens (1, {'T' if form != 'tokens' else 1}) int64, input_pos (1,) int64) -> (1, vocab) "
        "logits of the last token; the tokens' keys/values are written at input_pos .. input_pos + T - 1 of the "
        "cache the artefact holds" + (f" (T: 1 for {FORWARD}, {chunk} for {PREFILL})" if form == "chunk" else ""),
        "max_seq_len": spec.max_seq_len,
        "vocab_size": c.vocab_size,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "quantize": spec.quantize,
        "llm_ops": bool(decoder.llm_slots),  # the program calls ExecuTorch's LLM operators: load them first
        "file_bytes": (folder / name).stat().st_size,
        "weight_bytes": weight_bytes(model),
        "tied_head_bytes": tied_head_bytes(model) if backend == "executorch" else 0,
        # executorch zero-fills the cache at load (not in the file); an AOTInductor package holds it
        "cache_bytes": 0 if backend == "executorch" else sum(getattr(decoder, n).nbytes for n in decoder.cache_specs),
        "cache": {
            n: [list(size), str(dtype).removeprefix("torch.")] for n, (size, dtype) in decoder.cache_specs.items()
        },
        "compile_seconds": round(seconds, 2),
        "torch_version": torch.__version__,
    }
    if backend == "executorch":
        import executorch.version

        runtime["executorch_version"] = executorch.version.__version__
    (folder / RUNTIME_NAME).write_text(json.dumps(runtime, indent=2) + "\n")
    return [name, RUNTIME_NAME]


def weight_bytes(model: nn.Module) -> int:
    """The bytes the weights need at their stored precision (float32, or for ``8da4w``/``8da8w`` the codes at their
    bits plus a float32 scale per group or row, the head's and the embedding's int8 rows): what the file's size is
    checked against."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        qdata = getattr(tensor, "qdata", None)
        if qdata is not None:  # torchao's quantized weight: its bits, and its scales
            bits = int(str(tensor.target_dtype).removeprefix("torch.int"))
            total += qdata.numel() * bits // 8 + tensor.scale.numel() * 4
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def tied_head_bytes(model: nn.Module) -> int:
    """The bytes of the second copy of a tied float embedding in an ExecuTorch program: XNNPACK keeps the output
    head's matrix in its delegate (packed its own way at load), the token lookup reads the program's own constant,
    and the two cannot be one tensor; 0 when the model has its own head (or a quantized copy made two int8 matrices,
    which :func:`weight_bytes` counts already)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if getattr(model, "lm_head", True) is not None or type(embedding) is not nn.Embedding:
        return 0
    return embedding.weight.numel() * embedding.weight.element_size()


# ------------------------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------------------------


class CompiledLM:
    """Decoding with a ``pte`` folder's compiled program (torch, plus executorch for a .pte), as
    :meth:`zoo.lm.decoder.DecoderLM.generate` decodes: greedy or sampled, with its penalties, stops and
    streamers. Loaded once, it decodes one sequence at a time (the artefact holds the cache); ``prefill`` starts a
    new one.

    ``generate(prompt_ids, max_new_tokens, **settings)`` returns the prompt and the new tokens ``(1, T + n)``;
    ``prefill(ids)`` / ``decode(token)`` are the steps (logits ``(1, vocab)``), ``position`` the number of tokens in
    the cache. The folder's ``generation_config.json`` gives the defaults, as a model's does.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / RUNTIME_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} has no {RUNTIME_NAME}: not a pte export folder")
        self.info: dict[str, Any] = json.loads(path.read_text())
        self.backend = self.info["backend"]
        self.max_seq_len = int(self.info["max_seq_len"])
        self.vocab_size = int(self.info["vocab_size"])
        self.generation_config = GenerationConfig.from_folder(self.folder) or GenerationConfig()
        self.position = 0
        artefact = self.folder / self.info["file"]
        if self.backend == "executorch":
            from executorch.runtime import Runtime

            if self.info.get("llm_ops") and not load_llm_ops():
                raise RuntimeError(
                    f"{artefact} calls ExecuTorch's LLM operator llama::update_cache, which "
                    "this executorch install lacks; install the executorch release it was exported with "
                    f"({self.info.get('executorch_version', 'see runtime.json')})"
                )
            program = Runtime.get().load_program(artefact)
            loaded = {name: program.load_method(name).execute for name in set(self.info["methods"].values())}
            self._methods = {m: loaded[name] for m, name in self.info["methods"].items()}
        elif self.backend == "aoti":
            runner = torch._inductor.aoti_load_package(str(artefact))
            self._methods = {m: (lambda inputs, run=runner: [run(*inputs)]) for m in METHODS}
        else:
            raise ValueError(f"unknown pte backend {self.backend!r} in {path}")

    def _call(self, method: str, tokens: torch.Tensor, position: int) -> torch.Tensor:
        return self._methods[method]([tokens, torch.tensor([position], dtype=torch.long)])[0]

    def prefill(self, prompt_ids) -> torch.Tensor:
        """Start a sequence: the prompt's tokens into the cache (in one call, or one token per call where the
        program takes one token); the logits ``(1, vocab)`` of its last token."""
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
        if not 1 <= ids.shape[1] <= self.max_seq_len:
            raise ValueError(f"the prompt must have 1 to {self.max_seq_len} tokens (the cache), got {ids.shape[1]}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {int(ids.min())}..{int(ids.max())}")
        form = self.info.get("prompt", "whole")
        if form == "whole":
            logits = self._call("prefill", ids, 0)
        elif form == "chunk":
            logits = self._chunks(ids, int(self.info["prompt_chunk"]), int(self.info["chunk_min_tokens"]))
        else:
            logits = self._tokens(ids, 0)
        self.position = ids.shape[1]
        return logits

    def _tokens(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """``ids[start:]`` one token per call; the last one's logits."""
        for i in range(start, ids.shape[1]):
            logits = self._call("decode", ids[:, i : i + 1], i)
        return logits

    def _chunks(self, ids: torch.Tensor, chunk: int, min_tokens: int) -> torch.Tensor:
        """A prompt through the ``chunk``-token method: whole chunks from position 0; a rest of fewer than
        ``min_tokens`` tokens one token per call, a longer one as the last ``chunk`` tokens of the prompt (their
        keys/values computed again, the same values). A prompt shorter than a chunk: its tokens but the last padded
        to a chunk (the padding's cache entries lie past the prompt, where the mask hides them until a new token
        overwrites each), then the last token alone, whose logits the call returns."""
        length, start, logits = ids.shape[1], 0, None
        while length - start >= chunk:
            logits = self._call("prefill", ids[:, start : start + chunk], start)
            start += chunk
        rest = length - start
        if rest == 0:
            return logits
        if rest < min_tokens:
            return self._tokens(ids, start)
        if length >= chunk:
            return self._call("prefill", ids[:, length - chunk :], length - chunk)
        padded = torch.zeros(1, chunk, dtype=torch.long)
        padded[:, : length - 1] = ids[:, : length - 1]
        self._call("prefill", padded, 0)
        return self._call("decode", ids[:, length - 1 :], length - 1)

    def decode(self, token: int) -> torch.Tensor:
        """One more token into the cache; its logits ``(1, vocab)``."""
        if self.position >= self.max_seq_len:
            raise ValueError(f"the cache of {self.max_seq_len} tokens is full")
        logits = self._call("decode", torch.tensor([[int(token)]], dtype=torch.long), self.position)
        self.position += 1
        return logits

    step = decode  # the session protocol of generate_on_session

    def generate(self, prompt_ids, max_new_tokens: int | None = None, **settings) -> torch.Tensor:
        """The prompt (a list or a ``(T,)`` / ``(1, T)`` tensor) and its continuation ``(1, T + n)``: ``settings``
        are :meth:`~zoo.lm.decoder.DecoderLM.generate`'s (``do_sample``, ``temperature``, ``top_k``,
        ``top_p``, ``repetition_penalty``, ``min_new_tokens``, ``eos_token_id``, ``stop_token_ids``,
        ``stop_strings`` with ``tokenizer``, ``streamer``, ``generator``, ``generation_config``)."""
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
        base = self.generation_config.update(settings.get("generation_config"))
        new = max_new_tokens if max_new_tokens is not None else (base.max_new_tokens or 20)
        if ids.shape[1] + new > self.max_seq_len + 1:
            raise ValueError(
                f"a prompt of {ids.shape[1]} tokens and max_new_tokens={new} exceed the compiled cache of "
                f"{self.max_seq_len} tokens; export with a larger max_seq_len or generate fewer tokens"
            )
        return generate_on_session(self, ids, self.vocab_size, self.generation_config, max_new_tokens, **settings)


def load(folder: str | Path) -> CompiledLM:
    """The compiled LM of a ``pte`` export folder."""
    return CompiledLM(folder)


# ------------------------------------------------------------------------------------------------------------------
# Check against eager
# ------------------------------------------------------------------------------------------------------------------


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def check(model: nn.Module, folder: Path, spec: ExportSpec) -> dict:
    """Greedy tokens of the artefact against ``model.generate`` on a seeded prompt, the logits of the prefill and
    of every decode step (fed eager's tokens) against the eager cache-free forward, and the file's size against the
    bytes of its weights and cache.

    Quantized (``8da4w``/``8da8w``): the eager reference is the same quantized weights run by torchao in float
    (:func:`quantize_for_xnnpack`); XNNPACK's integer kernels round differently, so the logits are held to
    ``tolerance`` (default 0.05 of the largest logit: mobilellm_125m 8da4w differs by 2.7% after 30 layers) and the
    share of equal greedy tokens is reported, not required (on near-tied logits one rounding changes the rest of
    the sequence).
    """
    quantized = bool(spec.quantize)
    tolerance = float(spec.options.get("tolerance", 0.05 if quantized else 1e-3))
    if quantized:
        model = _stored_weights(model, spec)
    prompt = spec.example_input(model, batch_size=1)
    T = prompt.shape[1]
    new = min(int(spec.options.get("check_new_tokens", 12)), spec.max_seq_len - T + 1)
    with torch.no_grad():
        eager_tokens = model.generate(prompt, max_new_tokens=new, eos_token_id=[])[0, T:].tolist()
        eager_logits = _logits(model, torch.cat([prompt, torch.tensor([eager_tokens[:-1]], dtype=prompt.dtype)], 1))
    eager_logits = eager_logits[0, T - 1 :]  # the logits that chose each new token

    lm = load(folder)
    prefill = lm.prefill(prompt)
    steps = [lm.decode(t) for t in eager_tokens[:-1]]  # teacher-forced: comparable even where tokens differ
    start = time.perf_counter()
    tokens = lm.generate(prompt, new, eos_token_id=[])[0, T:].tolist()
    seconds = time.perf_counter() - start
    prefill_cmp = compare(eager_logits[:1], prefill, tolerance)
    decode_cmp = compare(eager_logits[1:], torch.cat(steps) if steps else eager_logits[1:], tolerance)
    agreement = sum(a == b for a, b in zip(tokens, eager_tokens)) / max(len(eager_tokens), 1)
    size = file_size_check(lm.info)
    # an AOTInductor package also holds its compiled code (megabytes): its size is reported, not held to the weights
    size_ok = size["ok"] or lm.backend != "executorch"
    return {
        "ok": bool((quantized or agreement == 1.0) and prefill_cmp["ok"] and decode_cmp["ok"] and size_ok),
        "runtime": f"{lm.backend} ({'executorch.runtime' if lm.backend == 'executorch' else 'aoti_load_package'})",
        "tokens_equal": tokens == eager_tokens,
        "token_agreement": agreement,
        "prompt": prompt[0].tolist(),
        "eager_tokens": eager_tokens,
        "exported_tokens": tokens,
        "prefill": prefill_cmp,
        "decode": decode_cmp,
        "size": size,
        "max_abs_diff": max(prefill_cmp.get("max_abs_diff", float("inf")), decode_cmp.get("max_abs_diff", 0.0)),
        "generate_seconds": round(seconds, 4),
        "compile_seconds": lm.info.get("compile_seconds"),
    }


SIZE_SLACK = 1.05  # the file over its weights and cache: the program, alignment padding, XNNPACK's headers


def file_size_check(info: dict) -> dict:
    """The artefact's bytes against its weights' and cache's (``runtime.json``): ``ok`` when the file holds them
    at most once (within :data:`SIZE_SLACK` and a megabyte), e.g. no float copy of a quantized matrix, no copy of
    a shared block per application; a tied float embedding counts twice (``tied_head_bytes``: the lookup's rows
    and XNNPACK's head are two copies of it, see :func:`tied_head_bytes`)."""
    parts = ("weight_bytes", "cache_bytes", "tied_head_bytes")
    expected = sum(int(info.get(key, 0)) for key in parts)
    actual = int(info.get("file_bytes", 0))
    return {
        "ok": bool(expected and actual <= SIZE_SLACK * expected + (1 << 20)),
        "file_bytes": actual,
        **{key: int(info.get(key, 0)) for key in parts},
        "ratio": round(actual / expected, 4) if expected else None,
    }


def usage(spec: ExportSpec) -> str:
    """The model card's lines on running this artefact (torch, plus executorch for a .pte; no zoo code)."""
    backend = spec.options.get("backend") or _backend(spec)
    form, chunk = prompt_form(spec)
    if backend == "executorch":
        head = (
            "Greedy decoding with ExecuTorch's Python runtime (`pip install executorch`; "
            + {
                "whole": f"its method `{FORWARD}` takes the prompt and each new token",
                "chunk": f"its method `{FORWARD}` takes one token per call, `{PREFILL}` {chunk} tokens of a prompt "
                "per call",
                "tokens": f"its method `{FORWARD}` takes the prompt token by token and each new token",
            }[form]
            + "; `zoo.export.lm_runtime.load(FOLDER).generate(...)` samples, stops and streams as `generate` does):"
        )
        load = [
            "import executorch.extension.llm.custom_ops.custom_ops  # its LLM operators (the in-place cache writes)",
            "from executorch.runtime import Runtime",
            "",
            f'program = Runtime.get().load_program("{PTE_NAME}")',
            f'prefill = decode = program.load_method("{FORWARD}").execute',
        ]
        call = "{}([{}, torch.tensor([{}])])[0]"
    else:
        head = "Greedy decoding with torch alone (AOTInductor; the package serves the prompt and each new token):"
        load = ["", f'prefill = decode = torch._inductor.aoti_load_package("{AOTI_NAME}")']
        call = "{}({}, torch.tensor([{}]))"
    if form == "whole":
        prompt = [f"logits = {call.format('prefill', 'ids', 0)}  # (1, vocab); the prompt is in the cache"]
    else:  # one token per call of the one-token method
        prompt = [
            "for i in range(ids.shape[1]):  # the prompt into the cache, one token per call",
            f"    logits = {call.format('prefill', 'ids[:, i : i + 1]', 'i')}  # (1, vocab)",
        ]
    body = [
        "ids = torch.tensor([[1, 2, 3]])  # (1, T) int64 prompt",
        *prompt,
        "out = []",
        "for i in range(20):",
        "    out.append(int(logits.argmax(-1)))",
        f"    logits = {call.format('decode', 'torch.tensor([[out[-1]]])', 'ids.shape[1] + i')}",
    ]
    return "\n".join([head, "", "```python", "import torch", *load, *body, "```"])
