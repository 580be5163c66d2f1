"""``model.generate(..., backend="llama.cpp", quantize=...)``: the zoo's decoding over llama.cpp's forward passes.

llama.cpp (llama-cpp-python) runs the prompt and every decode step on a GGUF of the model's weights; the zoo's own
token loop (:meth:`zoo.lm.decoder.DecoderLM.generate`) chooses each token from llama.cpp's logits, so greedy
and sampling (temperature, top-k, top-p, the ``generator``'s seed), the repetition penalty, ``min_new_tokens``,
stop ids and stop strings, streamers and ``generation_config`` mean exactly what they mean with torch. Batches run
one prompt after another (left padding is dropped; streamers follow batch 1).

* **The file** is written once per weights and quantization (``"f32"``, the default, ``"f16"``, ``"q8_0"``,
  ``"q4_0"``: :mod:`zoo.export.gguf_file`'s writer, token ids only) into ``$ZOO_CACHE/gguf`` (default
  ``~/.cache/zoo/gguf``, or ``$XDG_CACHE_HOME/zoo/gguf``), named by a sha256 of the state dict (every tensor's
  name, dtype, shape and bytes), the model's class and config, the quantization and the zoo version; written to a
  temporary folder and renamed into place, so a file in the cache is whole. Another model with the same weights
  finds it there.
* **The loaded file** stays with the model (one llama.cpp context per quantization, in ``model.__dict__``; a copy
  of the model loads its own), reused while the weights are unchanged: the parameters' storage, version
  counters and digests of their bytes (which see edits through ``.data`` too) are compared at each call, and the
  hash is taken again when they differ. The digests read every weight once per call (xxh3-64 on torch's threads in
  pieces of 8 MB, faster than zlib's CRC-32, which stands in without the ``xxhash`` package): the
  backend's one cost per call that grows with the model. ``f32`` keeps llama.cpp's KV cache in float32, as torch
  keeps it, so greedy tokens are torch's; the other types use llama.cpp's default f16 cache.
* **A cache entry is verified, not trusted by its name**: it records what it was made from (GGUF metadata
  ``zoo.cache.made_from``: the weights' hash, the quantization, the zoo version), checked at every load; an entry
  of other weights, cut short, unreadable or that llama.cpp cannot load is written again (with a warning naming it).
* **Refused**, with the reason and the fastest zoo path: what the GGUF writer cannot express (Mixture-of-Recursions
  routing, recursive KV sharing) and models holding the zoo's int8/int4 codes (llama.cpp quantizes float weights
  itself: ``quantize="q8_0"``).

:class:`LlamaCppLogits` gives every position's logits through llama.cpp (``eval.py --backend llama.cpp``'s
perplexity). Importing this module registers the backend with :mod:`zoo.lm.generation`.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..lm.decoder import DecoderLM
from ..lm.generation import BACKEND_STATE, register_generation_backend
from ..lm.quant import lookup, model_quantization, quant_names
from . import gguf_file
from .core import TEXT, ExportError, ExportSpec

try:  # the weights' digests at every call: xxh3 reads faster than zlib's CRC-32
    import xxhash
except ImportError:  # pragma: no cover (the export extra installs it)
    xxhash = None

__all__ = [
    "CACHE_ENV",
    "NAME",
    "QUANTIZE",
    "LlamaCppLogits",
    "LlamaSession",
    "cache_dir",
    "open_session",
    "release",
]

NAME = "llama.cpp"
QUANTIZE = quant_names("gguf")  # the vocabulary's GGUF types (zoo.lm.quant_format)
DEFAULT_QUANTIZE = "f32"
CACHE_ENV = "ZOO_CACHE"
INSTALL = 'pip install "zoo[export]"'
FASTEST_ZOO_PATH = "model.generate(..., compile=True) (one torch.compile'd decode step per token)"
# llama.cpp's context (KV cache) is a multiple of 256 tokens, and a larger one costs decode time (its attention
# spans the cache; results/notes/code_figures.md), so a context holds what a
# call needs rounded up; a longer call reloads the file with at least twice as many
CONTEXT_STEP = 256
_F32 = 0  # GGMLQuantizationType.F32: llama.cpp's KV cache type for quantize="f32"

CACHE_KEY = "zoo.cache.made_from"  # GGUF metadata: the weights hash, quantization and zoo version of the entry
_logger = logging.getLogger(__name__)

_OPEN: weakref.WeakSet = weakref.WeakSet()  # loaded llama.cpp models, closed at exit before the binding unloads


@atexit.register
def _close_all() -> None:
    for llm in list(_OPEN):
        llm.close()


def cache_dir() -> Path:
    """Where the GGUF files go: ``$ZOO_CACHE/gguf``, else ``$XDG_CACHE_HOME/zoo/gguf``, else ``~/.cache/zoo/gguf``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "zoo")
    return Path(root).expanduser() / "gguf"


# ------------------------------------------------------------------------------------------------------------------
# What llama.cpp can run
# ------------------------------------------------------------------------------------------------------------------


def _runtime() -> Any:
    """llama_cpp (and gguf, for the writer), or ValueError naming the install."""
    try:
        gguf_file._gguf()
        return gguf_file._llama_cpp()
    except ExportError as e:
        raise ValueError(f"generate(backend={NAME!r}) needs gguf and llama-cpp-python ({e}): {INSTALL}") from None


def _check_quantize(quantize: str | None) -> str:
    """The GGUF type ``quantize=`` names (``"q4_0"`` or ``"gguf:q4_0"``; None: :data:`DEFAULT_QUANTIZE`), as
    llama.cpp spells it."""
    if quantize is None:
        return DEFAULT_QUANTIZE
    try:
        return lookup(quantize, "gguf").native
    except ValueError as e:
        raise ValueError(f"backend={NAME!r} takes the GGUF's weight type (default {DEFAULT_QUANTIZE!r}): {e}") from None


def _refused(model: nn.Module, why: str) -> ValueError:
    return ValueError(
        f"backend={NAME!r} cannot run this {type(model).__name__}: {why}. The fastest zoo path for it is "
        f"{FASTEST_ZOO_PATH}"
    )


def _check_model(model: nn.Module) -> None:
    """ValueError for a model llama.cpp has no graph for, or whose weights the GGUF writer cannot take."""
    if not isinstance(model, DecoderLM):
        raise ValueError(f"backend={NAME!r} runs the zoo's decoder LMs, not {type(model).__name__}")
    done = model_quantization(model)
    if done is not None and done.method != "bf16":
        raise ValueError(
            f"backend={NAME!r} writes the float weights and quantizes them llama.cpp's way (quantize='q8_0' or "
            f"'q4_0'); this model holds the zoo's {done.describe()} codes: build it without quantize=, or generate "
            "with backend='torch'"
        )
    try:
        gguf_file.blocks(model)
    except ExportError as e:
        raise _refused(model, str(e)) from None


# ------------------------------------------------------------------------------------------------------------------
# The cache of files
# ------------------------------------------------------------------------------------------------------------------


def weights_hash(model: nn.Module) -> str:
    """sha256 of the model's class, config and state dict (each tensor's name, dtype, shape and bytes)."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            h.update(f"\n{name} {value!r}".encode())
            continue
        t = value.detach()
        h.update(f"\n{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _architecture(model: nn.Module) -> str:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))[:64]


def made_from(weights: str, quantize: str) -> str:
    """What a cache entry is made from: the weights' hash, the quantization and the zoo version (recorded in the
    file as :data:`CACHE_KEY`; its name holds a hash of it)."""
    return f"{weights} {quantize} zoo {__version__}"


def gguf_path(model: nn.Module, weights: str, quantize: str) -> Path:
    """The cache's file for weights of hash ``weights`` at ``quantize`` (with the zoo version in the key)."""
    key = hashlib.sha256(made_from(weights, quantize).encode()).hexdigest()
    return cache_dir() / f"{_architecture(model)}-{key[:32]}.{quantize}.gguf"


def entry_made_from(path: Path) -> str | None:
    """What the cache entry at ``path`` records it was made from; None for a file that is not a whole GGUF (cut
    short, unreadable, or written by something else)."""
    try:
        reader = gguf_file._gguf().GGUFReader(str(path))
        field = reader.fields.get(CACHE_KEY)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
        if field is None or not reader.tensors or end > path.stat().st_size:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception:  # noqa: BLE001 (gguf's reader raises many kinds for a damaged file)
        return None


def _writable_cache(folder: Path) -> None:
    """ValueError naming ``ZOO_CACHE`` when the cache folder cannot be made or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(
            f"the GGUF cache {folder} cannot be written ({e.strerror or e}): set {CACHE_ENV} to a writable folder "
            f"(the files go to ${CACHE_ENV}/gguf)"
        ) from None


def _write(model: nn.Module, path: Path, quantize: str, weights: str) -> None:
    """The GGUF written into a temporary folder beside ``path``, then renamed to it; it records what it was made
    from (:data:`CACHE_KEY`)."""
    _writable_cache(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=path.parent))
    try:
        options = {"vocabulary": False, "metadata": {CACHE_KEY: made_from(weights, quantize)}}
        spec = ExportSpec(name=_architecture(model), task=TEXT, format="gguf", quantize=quantize, options=options)
        try:
            gguf_file.write(model, tmp, spec)
        except ExportError as e:
            raise _refused(model, str(e)) from None
        os.replace(tmp / gguf_file.FILE_NAME, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------------
# Sessions: a loaded file
# ------------------------------------------------------------------------------------------------------------------


class LlamaSession:
    """One GGUF loaded in llama.cpp for one sequence at a time: :meth:`prefill` a prompt, :meth:`step` a token
    (the logits after it, float32 on the CPU), :meth:`logits` of every position (``logits_all`` sessions)."""

    def __init__(self, path: Path, quantize: str, n_ctx: int, logits_all: bool):
        self.llama_cpp = _runtime()
        self.path, self.quantize, self.n_ctx, self.logits_all = path, quantize, n_ctx, logits_all
        kwargs: dict[str, Any] = {"type_k": _F32, "type_v": _F32} if quantize == "f32" else {}
        self.llm = gguf_file.load_llama(
            path,
            n_ctx=n_ctx,
            n_batch=n_ctx if logits_all else min(n_ctx, 512),
            n_threads=torch.get_num_threads(),
            n_gpu_layers=0,
            logits_all=logits_all,
            verbose=False,
            **kwargs,
        )
        _OPEN.add(self.llm)
        self.n_vocab = self.llm.n_vocab()

    def _last(self) -> torch.Tensor:
        """A copy of llama.cpp's logits after the last token run."""
        out = torch.empty(self.n_vocab, dtype=torch.float32)
        ctypes.memmove(out.data_ptr(), self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), 4 * self.n_vocab)
        return out

    def prefill(self, ids: list[int]) -> torch.Tensor:
        """The logits after the prompt ``ids``; the part of the cache a previous sequence shares with it is kept
        (as llama-cpp-python's ``generate`` keeps it), the last prompt token is always run."""
        llm = self.llm
        keep = min(llm.n_tokens, len(ids) - 1)
        if keep > 0:
            same = llm.input_ids[:keep] == np.asarray(ids[:keep])
            keep = keep if bool(same.all()) else int(same.argmin())
        if keep > 0 and not self.llama_cpp.llama_memory_seq_rm(self.llama_cpp.llama_get_memory(llm.ctx), 0, keep, -1):
            keep = 0  # a cache that cannot drop a tail (sliding windows): the prompt again from its start
        llm.n_tokens = keep  # eval drops the cache from here on
        llm.eval(ids[keep:])
        return self._last()

    def forget(self) -> None:
        """Drop the sequence the cache holds: the next :meth:`prefill` runs its whole prompt."""
        self.llm.reset()

    def step(self, token: int) -> torch.Tensor:
        """The logits after one more token."""
        self.llm.eval([token])
        return self._last()

    def logits(self, ids: list[int]) -> torch.Tensor:
        """``(len(ids), vocab)``: the logits at every position of ``ids`` run from an empty cache."""
        if not self.logits_all:
            raise RuntimeError("logits of every position need a session opened with logits_all=True")
        self.llm.reset()
        self.llm.eval(ids)
        return torch.from_numpy(np.array(self.llm.scores[: len(ids)], dtype=np.float32))

    def close(self) -> None:
        self.llm.close()
        _OPEN.discard(self.llm)


@dataclass
class _State:
    """What the backend keeps on one model: the weights' fingerprint and hash, and the loaded sessions."""

    fingerprint: Any = None
    weights: str | None = None
    sessions: dict[tuple[str, bool], LlamaSession] = field(default_factory=dict)

    def clear(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


def _bytes(t: torch.Tensor) -> np.ndarray:
    """A tensor's bytes, as a flat uint8 array (a view where the tensor is a contiguous CPU one)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def _content_crc(data: np.ndarray) -> int:
    """A digest of ``data`` (xxh3-64, or CRC-32 without ``xxhash``): read from the values themselves (an edit
    through ``.data`` bumps no version counter), and order-sensitive (a permutation of the values changes it)."""
    return zlib.crc32(data) if xxhash is None else xxhash.xxh3_64_intdigest(data)


DIGEST_PIECE = 1 << 23  # bytes a digest task reads: the threads share a model's few large tensors evenly

_POOLS: dict[int, ThreadPoolExecutor] = {}  # threads -> the digest pool, kept between calls
_POOLS_LOCK = threading.Lock()


def _digest_pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` digest threads, made once (a pool per call costs about a millisecond)."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="zoo-weights-digest")
        return _POOLS[threads]


def _digest_task(pieces: list[tuple[int, np.ndarray]]) -> list[tuple[int, int]]:
    """(tensor index, digest) of each (tensor index, bytes) piece."""
    return [(i, _content_crc(piece)) for i, piece in pieces]


def _content_crcs(tensors: list[torch.Tensor]) -> tuple[tuple[int, ...], ...]:
    """Each tensor's digests, one per :data:`DIGEST_PIECE` bytes, on the torch threads (xxhash and zlib let go of
    the GIL). A task is about a piece's bytes: a large tensor's pieces, or a run of small tensors, so the threads
    finish together (a task per tensor left one thread reading the embedding alone, and paid a task per norm)."""
    views = [_bytes(t) for t in tensors]
    tasks, run, size = [], [], 0
    for i, data in enumerate(views):
        for start in range(0, max(data.size, 1), DIGEST_PIECE):
            piece = data[start : start + DIGEST_PIECE]
            run.append((i, piece))
            size += piece.size
            if size >= DIGEST_PIECE:
                tasks.append(run)
                run, size = [], 0
    tasks += [run] if run else []
    threads = torch.get_num_threads()
    done = map(_digest_task, tasks) if threads < 2 or len(tasks) < 2 else _digest_pool(threads).map(_digest_task, tasks)
    digests: list[list[int]] = [[] for _ in views]
    for out in done:
        for i, digest in out:
            digests[i].append(digest)
    return tuple(map(tuple, digests))


def _fingerprint(model: nn.Module) -> Any:
    """The parameters' and buffers' storage, version counters, dtypes, shapes and digests, and the config:
    equal while the weights are unchanged, however they were edited (in place, ``load_state_dict``, or through
    ``.data``, which bumps no version counter: the digests see it). None where a tensor keeps no version
    counter (an inference tensor): hash every time."""
    weights = list(chain(model.parameters(), model.buffers()))
    try:
        tensors = tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in weights)
    except RuntimeError:
        return None
    return (tensors, _content_crcs(weights)), json.dumps(model.config.to_dict(), sort_keys=True, default=str)


def _context(model: nn.Module, length: int, loaded: LlamaSession | None) -> int:
    """The context to load for ``length`` tokens: a multiple of :data:`CONTEXT_STEP` (at least twice a context that
    was too short), within the model's context length."""
    want = length if loaded is None else max(length, 2 * loaded.n_ctx)
    return max(length, min(model.config.max_position_embeddings, -(-want // CONTEXT_STEP) * CONTEXT_STEP))


def open_session(
    model: nn.Module, quantize: str | None = None, length: int = 1, logits_all: bool = False
) -> LlamaSession:
    """The model's llama.cpp session at ``quantize`` for ``length`` tokens: the one kept with the model while its
    weights are unchanged and its context is long enough, else the cached GGUF (written when missing) loaded."""
    quantize = _check_quantize(quantize)
    _runtime()
    state = model.__dict__.setdefault(BACKEND_STATE, {}).setdefault(NAME, _State())
    fingerprint = _fingerprint(model)
    if fingerprint is None or fingerprint != state.fingerprint or state.weights is None:
        _check_model(model)
        state.clear()
        state.weights, state.fingerprint = weights_hash(model), fingerprint
    loaded = state.sessions.get((quantize, logits_all))
    if loaded is not None and loaded.n_ctx >= length:
        return loaded
    path = gguf_path(model, state.weights, quantize)
    _cached_file(model, path, quantize, state.weights)
    n_ctx = _context(model, length, loaded)
    if loaded is not None:
        loaded.close()
        del state.sessions[(quantize, logits_all)]
    try:
        session = LlamaSession(path, quantize, n_ctx, logits_all)
    except (ValueError, RuntimeError, OSError) as e:  # llama.cpp refuses the file: write it once more
        _logger.warning("llama.cpp cannot load the GGUF cache entry %s (%s): writing it again", path, e)
        _write(model, path, quantize, state.weights)
        try:
            session = LlamaSession(path, quantize, n_ctx, logits_all)
        except (ValueError, RuntimeError, OSError) as e:
            raise ValueError(
                f"llama.cpp cannot load the GGUF cache entry {path}, written again just now ({e}): delete it, or "
                f"point {CACHE_ENV} at another folder"
            ) from None
    state.sessions[(quantize, logits_all)] = session
    return session


def _cached_file(model: nn.Module, path: Path, quantize: str, weights: str) -> None:
    """``path`` holding the GGUF of these weights: an entry that records being made from them is used; a missing
    one is written, and one made from anything else, cut short or unreadable is written again."""
    if path.is_file():
        if entry_made_from(path) == made_from(weights, quantize):
            return
        _logger.warning(
            "the GGUF cache entry %s was not made from these weights (another model's, cut short or damaged): "
            "writing it again",
            path,
        )
    _write(model, path, quantize, weights)


def release(model: nn.Module) -> None:
    """Close the llama.cpp models kept with ``model`` (the next backend call loads again; the files stay cached)."""
    state = model.__dict__.get(BACKEND_STATE, {}).pop(NAME, None)
    if state is not None:
        state.clear()


def _generation_session(model: nn.Module, quantize: str | None = None, length: int = 1) -> LlamaSession:
    return open_session(model, quantize, length)


register_generation_backend(NAME, _generation_session)


class LlamaCppLogits(nn.Module):
    """``model``'s logits computed by llama.cpp: ``forward(input_ids)`` ``(B, T)`` -> ``(B, T, vocab)`` float32,
    one row at a time from an empty cache (what a perplexity evaluation calls). The model is held, not a
    submodule: its parameters stay its own."""

    def __init__(self, model: nn.Module, quantize: str | None = None):
        super().__init__()
        _check_model(model)
        self.quantize = _check_quantize(quantize)
        self.__dict__["zoo_model"] = model
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        if kwargs:
            raise ValueError(f"the llama.cpp logits take token ids only, not {sorted(kwargs)}")
        self.zoo_model._check_ids(input_ids)
        self.zoo_model._check_context(input_ids, None, 0)
        session = open_session(self.zoo_model, self.quantize, input_ids.shape[1], logits_all=True)
        rows = [session.logits(row.tolist()) for row in input_ids.cpu()]
        return torch.stack(rows).to(input_ids.device)
