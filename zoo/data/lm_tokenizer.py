"""Tokenizers of language-model checkpoints: ``tokenizer.json`` (Hugging Face ``tokenizers``) or ``tokenizer.model``
(SentencePiece, e.g. the LLaMA tokenizer the MobileLLM checkpoints ship).

:func:`load_lm_tokenizer` returns a ``tokenizers.Tokenizer`` for ``tokenizer.json`` and a
:class:`SentencePieceTokenizer` for ``tokenizer.model``; the latter offers the same small surface (``encode(text)
.ids``, ``encode_batch``, ``decode``, ``token_to_id``, ``id_to_token``, ``get_vocab_size``), so code written for
one works with the other. A random-init model has no tokenizer: train one on local text with
:func:`zoo.data.text.train_bpe_tokenizer` (for example on :func:`zoo.data.text.bundled_corpus`).

A model folder the zoo writes with a tokenizer carries transformers' ``tokenizer_config.json`` too
(:func:`tokenizer_config`: the special tokens, the tokenizer class, the context length and the chat template), so
that ``AutoTokenizer.from_pretrained(FOLDER)`` has bos/eos/pad and pads a batch with no hand edit.

Chat models ship a chat template (a Jinja string, transformers' ``chat_template``) in the tokenizer folder:
``chat_template.jinja``, or ``tokenizer_config.json``'s ``chat_template`` (one string, or named templates).
:func:`apply_chat_template` renders it in a sandboxed Jinja environment, as transformers does, and tokenizes the
result; :func:`load_chat_template` reads it. A template is data from elsewhere, so it is bounded: at most
:data:`MAX_TEMPLATE_CHARS` characters, a rendering of at most :data:`MAX_RENDERED_CHARS` characters that takes at
most :data:`MAX_RENDER_SECONDS` (loops that write nothing included), and no operator (``*``, ``**``, ``%``, ``+``),
filter (``center``, ``indent``, ``format``, ``replace``, ``join``, ``batch`` ...) or string method (``ljust``,
``format`` ...) that makes a value larger than the rendering may be, checked before it runs; past a bound the
rendering stops with a ValueError that says which.
"""

import functools
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import DataError, unusable_tokenizer_message
from .text import special_token_ids

__all__ = [
    "SentencePieceTokenizer",
    "apply_chat_template",
    "load_chat_template",
    "load_lm_tokenizer",
    "render_chat_template",
    "tokenizer_config",
]


@dataclass
class _Encoding:
    ids: list[int]
    tokens: list[str] = field(default_factory=list)


class SentencePieceTokenizer:
    """A SentencePiece model behind the ``tokenizers.Tokenizer`` methods the zoo uses.

    ``add_bos`` prepends the model's BOS id on ``encode`` (LLaMA's ``add_bos_token=True``); ``add_eos`` appends
    EOS. Special pieces (``<s>``, ``</s>``, ``<unk>``) are ids, not text: ``decode`` skips them.
    """

    def __init__(self, model_file: str | Path, add_bos: bool = True, add_eos: bool = False):
        try:
            import sentencepiece as spm
        except ImportError:
            raise ImportError(
                "tokenizer.model files need the `sentencepiece` package: pip install sentencepiece"
            ) from None
        model_file = Path(model_file)
        if not model_file.is_file():
            raise FileNotFoundError(f"no SentencePiece model at {model_file}")
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.add_bos, self.add_eos = add_bos, add_eos
        self.path = model_file

    @property
    def bos_token_id(self) -> int | None:
        i = self.sp.bos_id()
        return i if i >= 0 else None

    @property
    def eos_token_id(self) -> int | None:
        i = self.sp.eos_id()
        return i if i >= 0 else None

    @property
    def pad_token_id(self) -> int | None:
        i = self.sp.pad_id()
        return i if i >= 0 else None

    def get_vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        i = self.sp.piece_to_id(token)
        # piece_to_id answers unk for unknown pieces: only the unk piece itself maps to unk
        return None if i == self.sp.unk_id() and token != self.sp.id_to_piece(i) else i

    def id_to_token(self, i: int) -> str | None:
        return self.sp.id_to_piece(i) if 0 <= i < self.get_vocab_size() else None

    def encode(self, text: str, add_special_tokens: bool = True) -> _Encoding:
        ids = list(self.sp.encode(text))
        if add_special_tokens:
            if self.add_bos and self.bos_token_id is not None:
                ids = [self.bos_token_id] + ids
            if self.add_eos and self.eos_token_id is not None:
                ids = ids + [self.eos_token_id]
        return _Encoding(ids, [self.sp.id_to_piece(i) for i in ids])

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[_Encoding]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            special = {self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()}
            ids = [i for i in ids if i not in special]
        return self.sp.decode(ids)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({str(self.path)!r}, vocab={self.get_vocab_size()})"


def load_lm_tokenizer(path: str | Path, add_bos: bool = True):
    """The tokenizer in ``path``: a ``tokenizer.json`` / ``tokenizer.model`` file, or a folder holding one.

    A folder with both prefers ``tokenizer.json``. ``add_bos`` applies to SentencePiece models.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(
                f"{path} holds no tokenizer.json or tokenizer.model. A random-init model has no "
                f"tokenizer: train one with zoo.data.text.train_bpe_tokenizer"
            )
    if not p.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}")
    if p.suffix == ".json":
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(p))
        except Exception as e:  # the tokenizers library raises a bare Exception for a file it cannot parse
            raise DataError(unusable_tokenizer_message(p, e)) from None
    if p.suffix == ".model":
        return SentencePieceTokenizer(p, add_bos=add_bos)
    raise ValueError(f"{p} is neither a tokenizer.json nor a SentencePiece .model file")


# ------------------------------------------------------------------------------------------------------------------
# Chat templates
# ------------------------------------------------------------------------------------------------------------------

TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
_MAX_FILE_BYTES = 16 << 20
_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
# bounds of a chat template (real ones are a few KB and render in milliseconds)
MAX_TEMPLATE_CHARS = 256 * 1024
MAX_RENDERED_CHARS = 8 * 1024 * 1024
MAX_RENDER_SECONDS = 5.0


def _read_json_object(path: Path) -> dict[str, Any]:
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise ValueError(f"{path} is over {_MAX_FILE_BYTES >> 20} MiB; not read")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def _token_text(value) -> str | None:
    """A special token of ``tokenizer_config.json``: a string, or transformers' AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _pick_template(value, where: str, name: str | None) -> str | None:
    """A ``chat_template`` entry: a string, or a list of ``{"name", "template"}`` (``name`` picks one, default
    ``"default"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        if name not in (None, "default"):
            raise ValueError(f"{where} has one chat template, not one named {name!r}")
        return value
    if isinstance(value, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str) for t in value
    ):
        named = {t["name"]: t["template"] for t in value}
        key = name or "default"
        if key not in named:
            raise ValueError(f"{where} has no chat template named {key!r}; it has {sorted(named)}")
        return named[key]
    raise ValueError(f"{where}: chat_template must be a string or a list of {{name, template}} objects")


def _tokenizer_folder(tokenizer) -> Path | None:
    path = getattr(tokenizer, "path", None)
    return Path(path).parent if path is not None else None


def load_chat_template(folder: str | Path, name: str | None = None) -> str | None:
    """The chat template of a tokenizer folder, or None: ``chat_template.jinja`` (transformers' file), else
    ``tokenizer_config.json``'s ``chat_template`` (``name`` picks one of several named templates)."""
    folder = Path(folder)
    if (folder / CHAT_TEMPLATE_FILE).is_file() and name in (None, "default"):
        path = folder / CHAT_TEMPLATE_FILE
        if path.stat().st_size > 4 * MAX_TEMPLATE_CHARS:  # UTF-8: at most 4 bytes a character
            raise ValueError(f"{path} is {path.stat().st_size} bytes, more than a chat template may have; not read")
        return path.read_text(encoding="utf-8")
    config = folder / TOKENIZER_CONFIG
    if config.is_file():
        return _pick_template(_read_json_object(config).get("chat_template"), str(config), name)
    return None


def _special_tokens(folder: Path | None, tokenizer) -> dict[str, str]:
    """``bos_token`` ... ``pad_token`` as text (what templates read): ``tokenizer_config.json``'s, else the
    tokenizer's own special ids."""
    found: dict[str, str] = {}
    config = folder / TOKENIZER_CONFIG if folder is not None else None
    if config is not None and config.is_file():
        data = _read_json_object(config)
        found = {k: t for k in _SPECIAL_NAMES if (t := _token_text(data.get(k))) is not None}
    for key in _SPECIAL_NAMES if tokenizer is not None else ():
        i = getattr(tokenizer, f"{key}_id", None)
        if key not in found and isinstance(i, int) and tokenizer.id_to_token(i) is not None:
            found[key] = tokenizer.id_to_token(i)
    return found


def _plain(value, where: str):
    """Plain JSON data (dicts, lists, strings, numbers): what a template may see of the caller's objects."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where} must be plain data (dicts, lists, strings, numbers): {e}") from None


def _count(n: Any) -> int:
    """An int argument as a size (anything else leaves the call to fail on its own)."""
    return n if isinstance(n, int) and not isinstance(n, bool) else 0


def _format_size(fmt: Any, args: Sequence[Any] = (), kwargs: dict | None = None) -> int:
    """At most the characters ``fmt % args`` or ``fmt.format(*args, **kwargs)`` builds: the widths written in it
    and the values, and the int arguments where a width may come from them (``*``, a nested ``{}``)."""
    fmt, values = str(fmt), [*args, *(kwargs or {}).values()]
    size = len(fmt) + sum(int(d) for d in re.findall(r"\d+", fmt)) + sum(len(str(v)) for v in values)
    if "*" in fmt or re.search(r"\{[^{}]*\{", fmt):
        size += sum(abs(_count(v)) for v in values)
    return size


def _replace_size(s: Any, old: Any = "", new: Any = "", count: Any = -1) -> int:
    s, old, new = str(s), str(old), str(new)
    found = s.count(old) if old else len(s) + 1
    if _count(count) > 0 or count == 0:  # a limit (None and -1: every one)
        found = min(found, _count(count))
    return len(s) + found * max(0, len(new) - len(old))


def _indent_size(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    s = str(s)
    return len(s) + (s.count("\n") + 1) * (len(width) if isinstance(width, str) else _count(width))


def _join_size(items: Sequence[Any], d: Any = "", attribute: Any = None) -> int:
    return sum(len(str(x)) for x in items) + len(str(d)) * max(0, len(items) - 1)


# what a filter or a string method would build, checked before it runs (jinja's filters of the same names)
_FILTER_SIZES = {
    "center": lambda value, width=80: max(len(str(value)), _count(width)),
    "indent": _indent_size,
    "format": lambda value, *args, **kwargs: _format_size(value, args, kwargs),
    "wordwrap": lambda s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True: (
        len(str(s)) + (len(str(s)) + 1) * len(wrapstring or "\n")
    ),
    "replace": _replace_size,
    "batch": lambda value, linecount, fill_with=None: _count(linecount) if fill_with is not None else 0,
    "slice": lambda value, slices, fill_with=None: _count(slices),
    "join": _join_size,
}
_STR_METHOD_SIZES = {
    "center": lambda s, width, fillchar=" ": max(len(s), _count(width)),
    "ljust": lambda s, width, fillchar=" ": max(len(s), _count(width)),
    "rjust": lambda s, width, fillchar=" ": max(len(s), _count(width)),
    "zfill": lambda s, width: max(len(s), _count(width)),
    "expandtabs": lambda s, tabsize=8: len(s) + s.count("\t") * _count(tabsize),
    "format": lambda s, *args, **kwargs: _format_size(s, args, kwargs),
    "format_map": lambda s, mapping: _format_size(s, (), dict(mapping)),
    "replace": _replace_size,
    "join": lambda s, items: _join_size(items, s),
}


def _import_jinja():
    """jinja2 and the sandbox pieces the chat templates render with (ImportError naming the version needed)."""
    try:
        import jinja2
        from jinja2.ext import Extension, loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError("chat templates need jinja2 (>= 3.1.6): pip install jinja2") from None
    if tuple(int(p) for p in re.findall(r"\d+", jinja2.__version__)[:3]) < (3, 1, 6):
        raise ImportError(
            f"chat templates need jinja2 >= 3.1.6 (known sandbox escapes before); found {jinja2.__version__}"
        )

    return jinja2, Extension, loopcontrols, ImmutableSandboxedEnvironment


def _bounds(jinja2):
    """``bounded(what, size)`` refuses a value past the rendering's bound; ``sized(value, what)`` checks one."""

    def bounded(what, size):
        if size > MAX_RENDERED_CHARS:
            raise jinja2.exceptions.SecurityError(
                f"the chat template's {what} would build {size} characters, past the {MAX_RENDERED_CHARS} a "
                "rendering may have"
            )

    def sized(value, what):
        if isinstance(value, (str, list, tuple)):
            bounded(what, len(value))
        return value

    return bounded, sized


def _template_globals(jinja2, extension, sized):
    """transformers' template names: the ``{% generation %}`` block, ``namespace``, ``raise_exception``, ``tojson``."""

    class Generation(extension):
        """transformers' ``{% generation %}`` block (it marks the assistant's text): rendered as its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """``namespace()`` without underscore-prefixed attributes (transformers' guard)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for key in attrs:
                Namespace._check(key)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, key, value):
            Namespace._check(key)
            sized(value, f"namespace value {key!r}")  # a loop that doubles a string stops at the bound
            jinja2.utils.Namespace.__setitem__(self, key, value)

        @staticmethod
        def _check(key):
            if isinstance(key, str) and key.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates may not set {key!r} on a namespace")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        if _count(indent) > 64 or (isinstance(indent, str) and len(indent) > 64):
            raise jinja2.exceptions.SecurityError("the chat template's tojson indents by more than 64 characters")
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    return Generation, Namespace, raise_exception, tojson


def _bounded_filter(jinja2, bounded, sized):
    """A filter wrapper that checks the size of what the filter would build before it runs."""

    def bounded_filter(name, run, size_of):
        skip = 1 if hasattr(run, "jinja_pass_arg") else 0  # the context or environment jinja passes first

        @functools.wraps(run)
        def checked(*args, **kwargs):
            args = list(args)
            if name == "join" and len(args) > skip:
                args[skip] = list(args[skip])  # an iterator, counted and then joined
            try:
                size = size_of(*args[skip:], **kwargs)
            except TypeError:  # arguments jinja's filter refuses itself
                size = 0
            bounded(f"{name} filter", size)
            return sized(run(*args, **kwargs), f"{name} filter")

        return checked

    return bounded_filter


def _bounded_environment(jinja2, sandbox, bounded, sized):
    """The sandbox class whose calls and operators are size-checked before they run."""

    class BoundedEnvironment(sandbox):
        """Checked before they run: ``*`` and ``**``, ``%`` and ``+``, the filters and string methods that build
        strings (``center``, ``indent``, ``format``, ``replace``, ``join`` ...), so that one expression may not build a
        value past the rendering's bound (``'a' * 10**10`` or ``'' | center(10**10)`` would allocate before any
        output is counted); every call's result is checked after."""

        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
            owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # (str.format comes wrapped)
            name = getattr(__obj, "__name__", "")
            if isinstance(owner, str) and name in _STR_METHOD_SIZES:
                if name == "join" and args:
                    args = (list(args[0]), *args[1:])
                try:
                    size = _STR_METHOD_SIZES[name](owner, *args, **kwargs)
                except TypeError:
                    size = 0
                bounded(f".{name}()", size)
            return sized(super().call(__context, __obj, *args, **kwargs), f"call of {name or 'a function'}")

        def call_binop(self, context, operator, left, right):
            if operator == "%" and isinstance(left, str):
                values = right if isinstance(right, tuple) else () if isinstance(right, dict) else (right,)
                bounded("% formatting", _format_size(left, values, right if isinstance(right, dict) else None))
            if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                bounded("+", len(left) + len(right))
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_RENDERED_CHARS:
                        raise jinja2.exceptions.SecurityError(
                            f"the chat template repeats a value of length {len(seq)} {n} times, past the "
                            f"{MAX_RENDERED_CHARS} characters a rendering may have"
                        )
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise jinja2.exceptions.SecurityError(f"the chat template raises to the power {right} (at most 64)")
            return super().call_binop(context, operator, left, right)

    return BoundedEnvironment


def _jinja_environment():
    jinja2, extension, loopcontrols, sandbox = _import_jinja()
    bounded, sized = _bounds(jinja2)
    Generation, Namespace, raise_exception, tojson = _template_globals(jinja2, extension, sized)
    bounded_filter = _bounded_filter(jinja2, bounded, sized)
    BoundedEnvironment = _bounded_environment(jinja2, sandbox, bounded, sized)
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    for name, size_of in _FILTER_SIZES.items():
        env.filters[name] = bounded_filter(name, env.filters[name], size_of)
    env.globals.update(
        raise_exception=raise_exception,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
        namespace=Namespace,
    )
    return env, jinja2.exceptions.TemplateError


def render_chat_template(
    template: str, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, **template_kwargs
) -> str:
    """``template`` rendered as transformers renders chat templates (sandboxed Jinja, ``trim_blocks`` and
    ``lstrip_blocks``, ``tojson``, ``raise_exception``, ``strftime_now``); ``template_kwargs`` (special tokens,
    ``tools``, switches such as ``enable_thinking``) are visible to it."""
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("messages must be a list of dicts such as {'role': 'user', 'content': 'Hello'}")
    if not isinstance(template, str):
        raise TypeError(f"a chat template is a string, got {type(template).__name__}")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(
            f"the chat template has {len(template)} characters, more than {MAX_TEMPLATE_CHARS} (chat templates are a "
            "few thousand): it was not rendered. Check where it came from, or pass a chat_template of your own"
        )
    env, template_error = _jinja_environment()
    context = dict(
        messages=_plain(list(messages), "messages"),
        add_generation_prompt=add_generation_prompt,
        **_plain(template_kwargs, "template arguments"),
    )
    try:
        return _render_bounded(env.from_string(template), context)
    except template_error as e:
        raise ValueError(f"the chat template failed: {type(e).__name__}: {e}") from e


class _RenderTooLong(Exception):
    pass


def _render_bounded(compiled, context: dict[str, Any]) -> str:
    """``compiled.generate(context)`` joined, stopped (ValueError) past :data:`MAX_RENDERED_CHARS` characters or
    :data:`MAX_RENDER_SECONDS`: the clock is read at every line the template's own code runs (a trace function on
    its frames only), so a loop that writes nothing is stopped too."""
    deadline = time.monotonic() + MAX_RENDER_SECONDS

    def on_line(frame, event, arg):
        if time.monotonic() > deadline:
            raise _RenderTooLong
        return on_line

    def on_call(frame, event, arg):
        return on_line if frame.f_code.co_filename == "<template>" else None

    parts, size = [], 0
    before = sys.gettrace()
    sys.settrace(on_call)
    try:
        for part in compiled.generate(context):
            size += len(part)
            if size > MAX_RENDERED_CHARS:
                raise ValueError(
                    f"the chat template's rendering passed {MAX_RENDERED_CHARS} characters and was stopped: the "
                    "template (or the messages) is not a chat prompt a model could take"
                )
            parts.append(part)
    except _RenderTooLong:
        raise ValueError(
            f"the chat template ran for more than {MAX_RENDER_SECONDS:g} s and was stopped (chat templates render "
            "in milliseconds): it loops without end or over too much"
        ) from None
    finally:
        sys.settrace(before)
    return "".join(parts)


def _encode_with_specials(tokenizer, text: str, specials: dict[str, int]) -> list[int]:
    """Ids of rendered chat text. ``tokenizers`` reads special tokens in text itself; for SentencePiece the
    special tokens' text is cut out and mapped to its id, the rest encoded without BOS."""
    if not isinstance(tokenizer, SentencePieceTokenizer):
        return list(tokenizer.encode(text, add_special_tokens=False).ids)
    if not specials:
        return tokenizer.encode(text, add_special_tokens=False).ids
    pattern = "(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")"
    ids: list[int] = []
    for part in re.split(pattern, text):
        if part in specials:
            ids.append(specials[part])
        elif part:
            ids.extend(tokenizer.encode(part, add_special_tokens=False).ids)
    return ids


def apply_chat_template(
    folder_or_tokenizer,
    messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool = True,
    tokenize: bool = True,
    chat_template: str | None = None,
    template_name: str | None = None,
    **template_kwargs,
) -> list[int] | str:
    """Token ids (``tokenize=False``: the text) of ``messages`` in a model's chat format.

    Args:
        folder_or_tokenizer: a tokenizer folder (``tokenizer.json`` / ``tokenizer.model`` beside
            ``tokenizer_config.json`` or ``chat_template.jinja``), or a loaded tokenizer (its folder is read when
            it knows it, as :class:`SentencePieceTokenizer` does; else pass ``chat_template``).
        messages: ``[{"role": "user", "content": "..."}, ...]``.
        add_generation_prompt: end with the assistant turn's opening, so that the model writes the reply.
        chat_template: a Jinja template to use instead of the folder's; ``template_name`` picks one of a folder's
            named templates.
        template_kwargs: more variables for the template (``tools``, ``enable_thinking``, ...).

    The rendered text already holds the special tokens the template writes (BOS included), so it is tokenized
    without adding any, as transformers does.
    """
    if isinstance(folder_or_tokenizer, (str, Path)):
        folder = Path(folder_or_tokenizer)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a tokenizer folder")
        tokenizer = load_lm_tokenizer(folder, add_bos=False) if tokenize else None
    else:
        tokenizer, folder = folder_or_tokenizer, _tokenizer_folder(folder_or_tokenizer)
    template = chat_template
    if template is None and folder is not None:
        template = load_chat_template(folder, template_name)
    if template is None:
        where = f"{folder}" if folder is not None else "this tokenizer (no folder known)"
        raise ValueError(
            f"{where} has no chat template: neither {CHAT_TEMPLATE_FILE} nor a 'chat_template' in "
            f"{TOKENIZER_CONFIG}. It is a base model's tokenizer: prompt it with plain text, or pass chat_template="
        )
    special_text = _special_tokens(folder, tokenizer)
    text = render_chat_template(template, messages, add_generation_prompt, **{**special_text, **template_kwargs})
    if not tokenize:
        return text
    specials = {t: i for t in special_text.values() if (i := tokenizer.token_to_id(t)) is not None}
    return _encode_with_specials(tokenizer, text, specials)


# ------------------------------------------------------------------------------------------------------------------
# transformers' tokenizer_config.json
# ------------------------------------------------------------------------------------------------------------------

_ROLES = ("bos", "eos", "pad")


def _is_special(tokenizer, i: int) -> bool:
    """Whether id ``i`` is one of the tokenizer's special tokens (an added token of a tokenizer.json, a control
    piece of a SentencePiece model)."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        return tokenizer.sp.is_control(i) or tokenizer.sp.is_unknown(i)
    decoder = getattr(tokenizer, "get_added_tokens_decoder", None)
    return callable(decoder) and i in decoder()


def _role_tokens(tokenizer, model_ids: dict[str, int | None]) -> dict[str, str]:
    """``{"bos": text, "eos": text, "pad": text}`` for a model and its tokenizer (see :func:`tokenizer_config`)."""
    own = special_token_ids(tokenizer)
    vocab = tokenizer.get_vocab_size()
    found: dict[str, str] = {}
    for role in _ROLES:
        candidates = [model_ids.get(f"{role}_token_id"), own.get(f"{role}_token_id")]
        candidates = [i for i in candidates if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab]
        # a special token first (the model's, then the tokenizer's own), else a plain one the model names
        chosen = next((i for i in candidates if _is_special(tokenizer, i)), candidates[0] if candidates else None)
        text = tokenizer.id_to_token(chosen) if chosen is not None else None
        if text is not None:
            found[role] = text
    for role in ("bos", "pad"):  # GPT-2's convention, and the pad transformers users set: the end-of-text token
        if role not in found and "eos" in found:
            found[role] = found["eos"]
    return found


def tokenizer_config(
    tokenizer_path: str | Path,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    model_max_length: int | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """transformers' ``tokenizer_config.json`` for a model folder whose tokenizer is ``tokenizer_path``
    (``tokenizer.json``, or a SentencePiece ``tokenizer.model``), so that ``AutoTokenizer.from_pretrained`` has
    bos/eos/pad and pads a batch.

    The special tokens are the model's ids (its config's ``*_token_id``) where they name one of the tokenizer's
    special tokens, else the tokenizer's own (by name: ``<s>``, ``<|endoftext|>``, ``<pad>`` ...), else the model's
    plain token; a tokenizer with an end-of-text token only (the zoo's own BPE) uses it for bos and pad too, as
    GPT-2's does and as transformers users set ``pad_token = eos_token``. ``padding_side`` is ``"left"`` (a decoder
    generates after the prompt: batched generation needs the padding before it). ``base`` (the tokenizer folder's
    own ``tokenizer_config.json``, e.g. its ``chat_template``) is kept; what it lacks is added.
    """
    path = Path(tokenizer_path)
    tokenizer = load_lm_tokenizer(path, add_bos=True)
    sentencepiece = isinstance(tokenizer, SentencePieceTokenizer)
    ids = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    config: dict[str, Any] = {
        # transformers 5 maps PreTrainedTokenizerFast to its tokenizers backend; LlamaTokenizer reads tokenizer.model
        "tokenizer_class": "LlamaTokenizer" if sentencepiece else "PreTrainedTokenizerFast",
        **{f"{role}_token": text for role, text in _role_tokens(tokenizer, ids).items()},
        "model_max_length": model_max_length,
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
    }
    if sentencepiece:
        config.update(add_bos_token=tokenizer.add_bos, add_eos_token=tokenizer.add_eos)
    config = {k: v for k, v in config.items() if v is not None}
    for key, value in (base or {}).items():
        if value is not None or key not in config:
            config[key] = value
    return config
