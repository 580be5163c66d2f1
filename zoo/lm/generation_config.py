"""The settings of :meth:`zoo.lm.decoder.DecoderLM.generate`: :class:`GenerationConfig`, under transformers' key
names so that ``generation_config.json`` is interchangeable (unset fields are None, as in transformers 5;
:meth:`GenerationConfig.from_dict` validates a file's values and keeps the keys the zoo does not use, so that they
are written back).
"""

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..layers.saving import write_file

__all__ = ["GENERATION_CONFIG_NAME", "GenerationConfig"]

_logger = logging.getLogger(__name__)

GENERATION_CONFIG_NAME = "generation_config.json"
_MAX_FILE_BYTES = 1 << 20  # a generation_config.json is a few hundred bytes
_MAX_IDS = 1024  # stop token ids in one config
_MAX_STOP_STRINGS, _MAX_STOP_CHARS = 256, 1000

# keys of transformers' generation_config.json that describe nothing zoo's generate does differently: kept, quiet
_QUIET_KEYS = frozenset(
    {
        "transformers_version",
        "_from_model_config",
        "use_cache",
        "cache_implementation",
        "output_attentions",
        "output_hidden_states",
        "output_scores",
        "output_logits",
        "return_dict_in_generate",
        "max_length",  # transformers' total-length cap; the zoo counts max_new_tokens
        "min_length",
        "decoder_start_token_id",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "remove_invalid_values",
        "renormalize_logits",
    }
)
# strategies zoo's generate does not implement, with the value that switches each off (a file may spell it out)
_NEUTRAL = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "diversity_penalty": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_p": None,
    "penalty_alpha": None,
    "guidance_scale": None,
    "early_stopping": False,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _token_id(v) -> bool:
    return _is_int(v) and 0 <= v < (1 << 31)


# field -> (check, what the value must be)
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_new_tokens": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "min_new_tokens": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0 (> 0 when sampling)"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an int >= 0 (0: no top-k filtering)"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a finite number > 0 (1.0: no penalty)"),
    "eos_token_id": (
        lambda v: _token_id(v) or (isinstance(v, list) and len(v) <= _MAX_IDS and all(_token_id(i) for i in v)),
        "a token id (an int >= 0) or a list of them",
    ),
    "stop_strings": (
        lambda v: (
            (isinstance(v, str) and 0 < len(v) <= _MAX_STOP_CHARS)
            or (
                isinstance(v, list)
                and len(v) <= _MAX_STOP_STRINGS
                and all(isinstance(s, str) and 0 < len(s) <= _MAX_STOP_CHARS for s in v)
            )
        ),
        f"a non-empty string or a list of them (at most {_MAX_STOP_STRINGS}, {_MAX_STOP_CHARS} characters each)",
    ),
    "pad_token_id": (_token_id, "a token id (an int >= 0)"),
    "bos_token_id": (_token_id, "a token id (an int >= 0)"),
}


@dataclass
class GenerationConfig:
    """How :meth:`~zoo.lm.decoder.DecoderLM.generate` decodes, with transformers' key names.

    A field left None is unset: ``generate`` takes it from ``model.generation_config``, then from its own
    default (``max_new_tokens`` 20, greedy, ``temperature`` 1, no top-k / top-p, ``repetition_penalty`` 1, no
    ``min_new_tokens``, no stop ids or strings). ``eos_token_id`` (an id or a list) are the ids that end a
    sequence; ``stop_strings`` end it when the decoded new text contains one (``generate`` then needs the
    tokenizer). ``pad_token_id`` fills finished sequences (default: the first stop id). ``extra`` holds the keys
    of a ``generation_config.json`` that the zoo does not use, so that saving writes them back.
    """

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    eos_token_id: int | list[int] | None = None
    stop_strings: str | list[str] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name in ("eos_token_id", "stop_strings"):  # tuples from code: lists, as JSON reads them back
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        self.validate()

    # -- checks ---------------------------------------------------------------------------------------------------
    def validate(self, where: str = "GenerationConfig") -> None:
        """ValueError naming the first field whose value is not what ``generate`` accepts."""
        for name, (check, expected) in _CHECKS.items():
            value = getattr(self, name)
            if value is not None and not check(value):
                raise ValueError(f"{where}: {name} must be {expected}, got {_short(value)}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"{where}: extra must be a dict of the file's other keys")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    # -- dicts and files ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "generation config") -> "GenerationConfig":
        """A config from a ``generation_config.json`` dict (transformers' keys), each value checked.

        Keys of strategies the zoo does not implement (beam search, n-gram blocking, ...) set to anything but
        their neutral value give one warning; they and the other keys are kept in ``extra``.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
        names = set(cls.field_names())
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        if known.get("top_k") == 0:
            known["top_k"] = None  # transformers' "no top-k"
        for name, value in known.items():
            check, expected = _CHECKS[name]
            if value is not None and not check(value):
                raise ValueError(f"{where}: {name} must be {expected}, got {_short(value)}. Fix or remove the key.")
        ignored = sorted(k for k, v in extra.items() if k not in _QUIET_KEYS and _NEUTRAL.get(k, object()) != v)
        if ignored:
            _logger.warning("%s: zoo's generate does not use %s (kept in the file, not applied)", where, ignored)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The set fields and the kept keys, as ``generation_config.json`` holds them."""
        out = dict(self.extra)
        out.update({k: getattr(self, k) for k in self.field_names() if getattr(self, k) is not None})
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "GenerationConfig":
        """Read ``generation_config.json`` (a folder holding one, or the file); FileNotFoundError when absent."""
        path = Path(path)
        if path.is_dir():
            path = path / GENERATION_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {GENERATION_CONFIG_NAME} at {path.parent}")
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ValueError(f"{path} is over {_MAX_FILE_BYTES >> 20} MiB, which no generation config is; not read")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:
            raise ValueError(f"{path} is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from e
        return cls.from_dict(data, str(path))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "GenerationConfig | None":
        """The folder's ``generation_config.json``, or None when it has none (bad values raise ValueError)."""
        path = Path(folder) / GENERATION_CONFIG_NAME
        return cls.from_pretrained(path) if path.is_file() else None

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``generation_config.json`` into ``folder`` (created); returns the file's path."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        path = out / GENERATION_CONFIG_NAME
        return write_file(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")  # replaces a link

    # -- combining ------------------------------------------------------------------------------------------------
    @classmethod
    def from_model_config(cls, config: Any, stop_at_eos: bool = False) -> "GenerationConfig":
        """The special ids of a model config (``bos_token_id``, ``pad_token_id``; ``eos_token_id`` too with
        ``stop_at_eos``, as transformers' ``from_model_config`` does)."""
        ids = ("bos_token_id", "pad_token_id") + (("eos_token_id",) if stop_at_eos else ())
        return cls(**{k: getattr(config, k, None) for k in ids})

    def with_ids_from(self, config: Any) -> "GenerationConfig":
        """A copy whose unset ``bos/eos/pad_token_id`` come from a model config (what a saved file records)."""
        ids = {k: getattr(config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        return self.update(**{k: v for k, v in ids.items() if getattr(self, k) is None})

    def update(self, other: "GenerationConfig | None" = None, **overrides) -> "GenerationConfig":
        """A copy with the set (non-None) fields of ``other``, then the non-None ``overrides``, applied (the
        precedence of transformers' ``generate``: keywords > the given config > the model's)."""
        values = {k: getattr(self, k) for k in self.field_names()}
        extra = dict(self.extra)
        if other is not None:
            if not isinstance(other, GenerationConfig):
                raise TypeError(f"generation_config must be a zoo GenerationConfig, got {type(other).__name__}")
            values.update({k: getattr(other, k) for k in self.field_names() if getattr(other, k) is not None})
            extra.update(other.extra)
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise TypeError(f"unknown generation settings {unknown}; GenerationConfig fields: {sorted(values)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return GenerationConfig(**values, extra=extra)

    @property
    def stop_ids(self) -> list[int]:
        """``eos_token_id`` as a list (empty when unset)."""
        ids = self.eos_token_id
        return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)

    @property
    def stop_string_list(self) -> list[str]:
        s = self.stop_strings
        return [] if s is None else [s] if isinstance(s, str) else list(s)
