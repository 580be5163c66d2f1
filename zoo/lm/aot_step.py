"""The compiled decode step built ahead of time on the CPU (AOTInductor): one C++ call a token.

torch.compile's step pays, at every token, Dynamo's guards and the Python wrappers of AOTAutograd and Inductor over
the graph's inputs: about 340 of them for ``mobilellm_125m`` (every weight, cache and kernel copy is one), a
large share of a small model's token (``results/notes/code_figures.md``). Here the same step (the
:class:`~zoo.lm.static_decoder.StaticDecoder` with its one-token kernels, Inductor's code with
:class:`~zoo.kernels.gemv.OneRowProducts`) is exported and compiled by AOTInductor into a package whose only inputs
are the token and its position. Its weights, caches and kernel copies are the package's constants, pointed at the
decoder's own tensors (``user_managed``). Nothing is copied: a parameter updated in place is seen, and the prompt,
run by the decoder itself, fills the same cache.

A package is kept in the built kernels' folder (:mod:`zoo.kernels.gemv`, ``steps/``), named by a sha256 of what it was
built from:

* the exported graph's code;
* its inputs' shapes, strides and dtypes (no constant is written into the code: all are read from the decoder's
  tensors);
* the model's config and Inductor's options;
* torch's and the zoo's versions, the CPU (its name and the kernel paths it reports) and the thread count.

The package calls the zoo's kernels through their C entry points (``aoti_torch_cpu_<op>`` in the kernels' library,
declared to AOTInductor from each operator's schema: :func:`c_shims`), not through AOTInductor's proxy executor,
which boxes every argument for the dispatcher at every call (some 240 calls a 125M token).

A later process, or another model of the same architecture, exports the step again (seconds) and loads the package
instead of compiling it (about a minute for ``mobilellm_125m``). A package is written whole or not at all (renamed
into place). A folder that cannot be written builds into a temporary one, and nothing is kept.

``ZOO_AOT_STEP=0`` turns this off. A step that cannot be built this way (an export or a compile that fails) also
falls back to torch.compile, with a warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .._version import __version__
from ..kernels import gemv
from .quant_layer import kernels_in_export

__all__ = ["ENV", "aot_step", "c_shims", "package_folder"]

ENV = "ZOO_AOT_STEP"
_logger = logging.getLogger(__name__)


class _Step(nn.Module):
    """The decoder's one-token forward as a module of its own: ``(token (1, 1), position (1,)) -> logits``."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens, input_pos)


def package_folder() -> Path | None:
    """Where the packages are kept: ``steps/`` in the built kernels' folder (None where the kernels are not built)."""
    folder = gemv.build_folder()
    return None if folder is None else Path(folder) / "steps"


def aot_step(decoder: nn.Module, options: dict) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``decoder``'s one-token step built ahead of time, with Inductor ``options``: ``step(tokens (1, 1),
    input_pos (1,)) -> logits``, its ``kernel_calls`` a Counter of the operators it calls outside Inductor's code
    (the zoo's kernels, by dispatcher name, e.g. ``"zoo_gemv::f32_3"``). None where ``ZOO_AOT_STEP=0`` or the step
    cannot be built this way (then the caller compiles it with torch.compile)."""
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    try:
        shims = c_shims()
        if gemv.available():
            gemv.chosen()  # the kernels' paths for the process, measured (where they are) before the trace
        with torch.no_grad(), kernels_in_export():
            zero = torch.zeros(1, dtype=torch.long)
            program = torch.export.export(_Step(decoder), (zero[None], zero), strict=False)
            module = _named(program)
            named = (*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False))
            tensors = dict(named)
            path, kept = _package(program, module, (zero[None], zero), decoder, options, shims)
        try:
            runner = torch._inductor.aoti_load_package(str(path))
            calls = _kernel_calls(path)
        finally:
            if not kept:
                path.unlink(missing_ok=True)
        runner.load_constants(
            {name: tensors[name] for name in runner.get_constant_fqns()}, check_full_update=True, user_managed=True
        )
        run = runner.loader.run  # the package's own call: no flattening of arguments at every token
    except Exception as e:  # noqa: BLE001 (export and AOTInductor raise many kinds): torch.compile's step instead
        _logger.warning("the decode step could not be built ahead of time (%s): torch.compile builds it instead", e)
        return None

    def step(tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return run([tokens, input_pos])[0]

    step.constants = tensors  # the package reads their memory: they live as long as the step
    step.kernel_calls = calls

    return step


_SHIM_TYPES = {"Tensor": "AtenTensorHandle", "int": "int64_t", "float": "double"}


def c_shims() -> dict:
    """The zoo's kernels that AOTInductor's code may call directly, as its ``aot_inductor.custom_ops_to_c_shims``
    wants them: ``{operator: [its C declaration]}``, the declaration read from the operator's schema (a tensor is an
    ``AtenTensorHandle``, each result one more ``AtenTensorHandle*``). The entry points are the kernels' library's
    ``aoti_torch_cpu_<op>`` (zoo/kernels/gemv.cpp); the library is made global so that a package finds them when
    it is loaded. Empty where the library cannot be found (the proxy executor calls them then)."""
    folder = gemv.build_folder()
    libraries = sorted(Path(folder).glob("*.so")) if folder else []
    try:  # loaded already (gemv.available()): RTLD_NOLOAD only makes it global
        (path,) = libraries
        library = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)
    except (ValueError, OSError):
        return {}
    shims = {}
    names = sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("zoo_gemv::"))
    for name in names:
        op = getattr(torch.ops.zoo_gemv, name).default
        schema = op._schema
        types = [str(a.type) for a in schema.arguments]
        if not hasattr(library, f"aoti_torch_cpu_{name}") or not schema.returns or not set(types) <= set(_SHIM_TYPES):
            continue
        args = [f"{_SHIM_TYPES[t]} {a.name}" for t, a in zip(types, schema.arguments)]
        args += [f"AtenTensorHandle* ret{i}" for i in range(len(schema.returns))]
        shims[op] = [f"AOTITorchError aoti_torch_cpu_{name}({', '.join(args)})"]
    return shims


def _kernel_calls(package: Path) -> Counter:
    """The operators ``package`` calls outside Inductor's own code (the zoo's kernels), each with its number of
    calls in a step: those through the proxy executor (its list, ``*wrapper.json``) and those through their C entry
    points (``aoti_torch_cpu_<op>(`` calls in ``*wrapper.cpp``)."""
    calls: Counter = Counter()
    with zipfile.ZipFile(package) as z:
        for listing in [n for n in z.namelist() if n.endswith("wrapper.json")]:
            calls.update(node["node"]["target"] for node in json.loads(z.read(listing))["nodes"])
        for source in [n for n in z.namelist() if n.endswith("wrapper.cpp")]:
            found = re.findall(r"AOTI_TORCH_ERROR_CODE_CHECK\(aoti_torch_cpu_(\w+)\(", z.read(source).decode())
            calls.update(f"zoo_gemv::{name}" for name in found if hasattr(torch.ops.zoo_gemv, name))
    return calls


def _named(program) -> nn.Module:
    """The exported step as a module whose every tensor is a named parameter or buffer. The kernel copies (tensors
    the layers keep in dicts) come out of the export as plain attributes, which AOTInductor would number in the order
    it meets them; as buffers, the package knows them by the names that map them back to the decoder's tensors."""
    module = program.module()
    for name, value in program.constants.items():
        owner, _, attr = name.rpartition(".")
        holder = module.get_submodule(owner)
        if isinstance(value, torch.Tensor) and attr not in holder._buffers:
            delattr(holder, attr)
            holder.register_buffer(attr, value, persistent=False)
    return module


def _package(
    program, module: nn.Module, args: tuple, decoder: nn.Module, options: dict, shims: dict
) -> tuple[Path, bool]:
    """The package of ``program`` (``module``, its tensors named), its kernels called through ``shims``:
    (path, whether it is kept) -- the kept one where there is, else built."""
    folder = package_folder()
    options = {**options, "aot_inductor.custom_ops_to_c_shims": shims}
    name = f"{_key(program, decoder, options)}.pt2"
    if folder is not None and (folder / name).is_file():
        return folder / name, True
    writable = folder is not None and _writable(folder)
    target = folder if writable else Path(tempfile.gettempdir())
    fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=".pt2", dir=target)
    os.close(fd)
    try:
        _logger.info("building the decode step ahead of time (about a minute for 125M parameters)")
        named = torch.export.export(module, args, strict=False)
        configs = {**options, "aot_inductor.package_constants_in_so": False, "always_keep_tensor_constants": True}
        torch._inductor.aoti_compile_and_package(named, package_path=tmp, inductor_configs=configs)
        if not writable:
            return Path(tmp), False
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / name, True


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.access(folder, os.W_OK)
    except OSError:
        return False


def _key(program, decoder: nn.Module, options: dict) -> str:
    """sha256 of what the package is built from (the module docstring's list)."""
    h = hashlib.sha256()
    # an Inductor pass by its own digest (torch.compile's cache keys it so), other options by their values
    built = {k: v.uuid() if hasattr(v, "uuid") else repr(v) for k, v in sorted(options.items())}
    head = [torch.__version__, __version__, gemv.cpu_key(), torch.get_num_threads(), built]
    h.update(json.dumps(head).encode())
    h.update(json.dumps(decoder.lm.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(program.graph_module.code.encode())
    for node in program.graph.nodes:  # every input: the token, its position, the weights, caches and copies
        value = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(value, torch.Tensor):
            h.update(f"{node.name} {value.dtype} {tuple(value.shape)} {value.stride()}\n".encode())
    return h.hexdigest()[:40]
