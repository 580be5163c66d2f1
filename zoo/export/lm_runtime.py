"""``pte``: a language model's prefill and cached decode, compiled for the CPU, with a static KV cache.

The model is traced as :class:`CachedDecoder`: ``(tokens (1, T), input_pos (1,)) -> logits (1, vocab)`` of the
last token, writing the keys/values of the ``T`` tokens at positions ``input_pos .. input_pos + T - 1`` of a
static cache of ``spec.max_seq_len`` tokens held in module buffers and mutated in place (one pair of buffers per
slot of the model's own cache, i.e. per layer application). Attention reads the whole static cache under a mask
built from the positions, so no shape depends on the data. Two methods are traced from it: ``prefill`` (``T``
dynamic in ``[1, max_seq_len]``) and ``decode`` (``T = 1``, static shapes).

Backends (``backend=`` option; default ``executorch`` where it imports, else ``aoti``):

* ``executorch``: ``model.pte`` with both methods, lowered with the XNNPACK partitioner; the methods share one
  copy of the cache (``share_mutable_buffers``), which starts zeroed. Runs in ExecuTorch's Python runtime.
* ``aoti``: ``decoder.pt2``, an AOTInductor package (``torch._inductor.aoti_compile_and_package``) of the
  ``prefill`` program, which also decodes (``T = 1``): one compile and one copy of the weights and the cache
  (separate prefill and decode packages would each hold their own). Runs with ``torch._inductor.aoti_load_package``
  and nothing else.

``runtime.json`` says which, and :func:`load` returns a :class:`CompiledLM` that decodes greedily from either
without zoo's model code.

Routing (Mixture-of-Recursions) is traced densely: every token runs every recursion step; its routing decision
selects whether the step's output is kept (``torch.where``) and whether its cache entry counts (a per-slot
validity buffer), which for the selected tokens is what the eager model's threshold (expert-choice) or argmax
(token-choice) routing computes. Top-k expert routing looks at the whole sequence and cannot decode causally; it
is refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from ..layers.static_decoder import StaticDecoder
from .core import ExportError, ExportSpec, compare

__all__ = ["CachedDecoder", "CompiledLM", "load"]

PTE_NAME = "model.pte"
AOTI_NAME = "decoder.pt2"
RUNTIME_NAME = "runtime.json"
METHODS = ("prefill", "decode")
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


def CachedDecoder(model: nn.Module, max_seq_len: int) -> StaticDecoder:
    """``model`` over a static cache of ``max_seq_len`` tokens (:class:`zoo.layers.static_decoder.StaticDecoder`),
    refused with :class:`ExportError` where it cannot be built."""
    try:
        return StaticDecoder(model, max_seq_len)
    except ValueError as e:
        raise ExportError(str(e)) from None


# ------------------------------------------------------------------------------------------------------------------
# Export and compile
# ------------------------------------------------------------------------------------------------------------------


def export_methods(
    decoder: StaticDecoder, spec: ExportSpec, methods: tuple[str, ...] = METHODS
) -> dict[str, torch.export.ExportedProgram]:
    """``prefill`` (prompt length dynamic in ``[1, max_seq_len]``; it decodes a token too) and ``decode`` (one
    token, static shapes) of ``decoder``."""
    S = decoder.max_seq_len
    device = decoder.rope_cos.device
    pos = torch.zeros(1, dtype=torch.long, device=device)
    programs = {}
    try:
        with torch.no_grad():
            for method in methods:
                length = min(8, S) if method == "prefill" else 1
                tokens = torch.zeros(1, length, dtype=torch.long, device=device)
                dynamic = ({1: Dim("prompt_length", min=1, max=S)}, None) if method == "prefill" else None
                programs[method] = torch.export.export(decoder, (tokens, pos), dynamic_shapes=dynamic)
    except Exception as e:  # torch's message names the op or guard that failed
        raise ExportError(f"torch.export of {spec.name}'s cached decoder failed: {type(e).__name__}: {e}") from e
    return programs


def _lower_executorch(programs: dict[str, torch.export.ExportedProgram], decoder: StaticDecoder) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass

    edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    config = ExecutorchBackendConfig(
        # the cache starts zeroed (uninitialised memory could hold NaN, which a masked attention weight of 0 would
        # still spread), and both methods read and write one copy of it
        passes=[InitializedMutableBufferPass(list(decoder.cache_specs))],
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False, share_mutable_buffers=True),
        emit_mutable_buffer_names=True,
    )
    return edge.to_executorch(config).buffer


def write(model: nn.Module, folder: Path, spec: ExportSpec) -> list[str]:
    if spec.quantize:
        raise ExportError(f"pte does not quantize (quantize={spec.quantize!r}); export float weights")
    backend = spec.options["backend"] = _backend(spec)  # recorded (export.json, the card's usage)
    decoder = CachedDecoder(model, spec.max_seq_len).eval()
    start = time.perf_counter()
    # aoti: one package; its dynamic-length program serves both steps (two packages would each hold the weights
    # and the cache, and the cache must be one)
    programs = export_methods(decoder, spec, METHODS if backend == "executorch" else ("prefill",))
    name = PTE_NAME if backend == "executorch" else AOTI_NAME
    tmp = folder / f".tmp-{name}"  # (the AOTI package writer wants the .pt2 suffix)
    try:
        if backend == "executorch":
            tmp.write_bytes(_lower_executorch(programs, decoder))
        else:
            torch._inductor.aoti_compile_and_package(programs["prefill"], package_path=str(tmp))
    except Exception as e:
        raise ExportError(f"compiling {spec.name} with {backend} failed: {type(e).__name__}: {e}") from e
    tmp.replace(folder / name)
    seconds = time.perf_counter() - start
    c = model.config
    runtime = {
        "backend": backend,
        "file": name,
        "methods": {m: ("prefill" if backend == "aoti" else m) for m in METHODS},
        "signature": "(tokens (1, T) int64, input_pos (1,) int64) -> (1, vocab) logits of the last token; the "
        "tokens' keys/values are written at input_pos .. input_pos + T - 1 of the cache the artefact holds",
        "max_seq_len": spec.max_seq_len,
        "vocab_size": c.vocab_size,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
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


# ------------------------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------------------------


class CompiledLM:
    """Greedy decoding with a ``pte`` folder's compiled prefill and decode (torch, plus executorch for a .pte).
    Loaded once, it decodes one sequence at a time (the artefact holds the cache); ``prefill`` starts a new one.

    ``generate(prompt_ids, max_new_tokens)`` returns the new tokens; ``prefill(ids)`` / ``decode(token)`` are the
    steps (logits ``(1, vocab)``), ``position`` the number of tokens in the cache.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / RUNTIME_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} has no {RUNTIME_NAME}: not a pte export folder")
        self.info: dict[str, Any] = json.loads(path.read_text())
        self.backend = self.info["backend"]
        self.max_seq_len = int(self.info["max_seq_len"])
        self.position = 0
        artefact = self.folder / self.info["file"]
        if self.backend == "executorch":
            from executorch.runtime import Runtime

            program = Runtime.get().load_program(artefact)
            self._methods = {m: program.load_method(name).execute for m, name in self.info["methods"].items()}
        elif self.backend == "aoti":
            runner = torch._inductor.aoti_load_package(str(artefact))
            self._methods = {m: (lambda inputs, run=runner: [run(*inputs)]) for m in METHODS}
        else:
            raise ValueError(f"unknown pte backend {self.backend!r} in {path}")

    def _call(self, method: str, tokens: torch.Tensor, position: int) -> torch.Tensor:
        return self._methods[method]([tokens, torch.tensor([position], dtype=torch.long)])[0]

    def prefill(self, prompt_ids) -> torch.Tensor:
        """Start a sequence: the prompt's tokens into the cache; the logits ``(1, vocab)`` of its last token."""
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
        if not 1 <= ids.shape[1] <= self.max_seq_len:
            raise ValueError(f"the prompt must have 1 to {self.max_seq_len} tokens (the cache), got {ids.shape[1]}")
        logits = self._call("prefill", ids, 0)
        self.position = ids.shape[1]
        return logits

    def decode(self, token: int) -> torch.Tensor:
        """One more token into the cache; its logits ``(1, vocab)``."""
        if self.position >= self.max_seq_len:
            raise ValueError(f"the cache of {self.max_seq_len} tokens is full")
        logits = self._call("decode", torch.tensor([[int(token)]], dtype=torch.long), self.position)
        self.position += 1
        return logits

    def generate(self, prompt_ids, max_new_tokens: int = 20, eos_token_id: int | None = None) -> list[int]:
        """Greedy continuation of ``prompt_ids`` (a list or a ``(T,)`` / ``(1, T)`` tensor): the new tokens (up to
        ``max_new_tokens``, ending at ``eos_token_id`` if given)."""
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
        if ids.shape[1] + max_new_tokens > self.max_seq_len + 1:
            raise ValueError(
                f"a prompt of {ids.shape[1]} tokens and max_new_tokens={max_new_tokens} exceed the compiled cache of "
                f"{self.max_seq_len} tokens; export with a larger max_seq_len or generate fewer tokens"
            )
        out: list[int] = []
        if max_new_tokens <= 0:
            return out
        logits = self.prefill(ids)
        while True:
            token = int(logits.argmax(dim=-1)[0])
            out.append(token)
            if len(out) == max_new_tokens or token == eos_token_id:
                return out
            logits = self.decode(token)


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
    """Greedy tokens of the artefact against ``model.generate`` on a seeded prompt, and the logits of the prefill
    and of every decode step (fed eager's tokens) against the eager cache-free forward."""
    tolerance = float(spec.options.get("tolerance", 1e-3))
    prompt = spec.example_input(model, batch_size=1)
    T = prompt.shape[1]
    new = min(int(spec.options.get("check_new_tokens", 12)), spec.max_seq_len - T + 1)
    eager_tokens = model.generate(prompt, max_new_tokens=new)[0, T:].tolist()
    eager_logits = _logits(model, torch.cat([prompt, torch.tensor([eager_tokens[:-1]], dtype=prompt.dtype)], 1))
    eager_logits = eager_logits[0, T - 1 :]  # the logits that chose each new token

    lm = load(folder)
    prefill = lm.prefill(prompt)
    steps = [lm.decode(t) for t in eager_tokens[:-1]]  # teacher-forced: comparable even where tokens differ
    start = time.perf_counter()
    tokens = lm.generate(prompt, new)
    seconds = time.perf_counter() - start
    prefill_cmp = compare(eager_logits[:1], prefill, tolerance)
    decode_cmp = compare(eager_logits[1:], torch.cat(steps) if steps else eager_logits[1:], tolerance)
    equal = tokens == eager_tokens
    return {
        "ok": bool(equal and prefill_cmp["ok"] and decode_cmp["ok"]),
        "runtime": f"{lm.backend} ({'executorch.runtime' if lm.backend == 'executorch' else 'aoti_load_package'})",
        "tokens_equal": equal,
        "prompt": prompt[0].tolist(),
        "eager_tokens": eager_tokens,
        "exported_tokens": tokens,
        "prefill": prefill_cmp,
        "decode": decode_cmp,
        "max_abs_diff": max(prefill_cmp.get("max_abs_diff", float("inf")), decode_cmp.get("max_abs_diff", 0.0)),
        "generate_seconds": round(seconds, 4),
        "compile_seconds": lm.info.get("compile_seconds"),
    }


def usage(spec: ExportSpec) -> str:
    """The model card's lines on running this artefact (torch, plus executorch for a .pte; no zoo code)."""
    backend = spec.options.get("backend") or _backend(spec)
    if backend == "executorch":
        head = "Greedy decoding with ExecuTorch's Python runtime (`pip install executorch`):"
        load = [
            "from executorch.runtime import Runtime",
            "",
            f'program = Runtime.get().load_program("{PTE_NAME}")',
            'prefill, decode = program.load_method("prefill").execute, program.load_method("decode").execute',
        ]
        call = "{}([{}, torch.tensor([{}])])[0]"
    else:
        head = "Greedy decoding with torch alone (AOTInductor; the package serves the prompt and each new token):"
        load = ["", f'prefill = decode = torch._inductor.aoti_load_package("{AOTI_NAME}")']
        call = "{}({}, torch.tensor([{}]))"
    body = [
        "ids = torch.tensor([[1, 2, 3]])  # (1, T) int64 prompt",
        f"logits = {call.format('prefill', 'ids', 0)}  # (1, vocab); the prompt is in the cache",
        "out = []",
        "for i in range(20):",
        "    out.append(int(logits.argmax(-1)))",
        f"    logits = {call.format('decode', 'torch.tensor([[out[-1]]])', 'ids.shape[1] + i')}",
    ]
    return "\n".join([head, "", "```python", "import torch", *load, *body, "```"])
