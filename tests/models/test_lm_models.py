"""The generic language-model suite, run on every registered text-generation model; nothing here names a family.

Every model runs at a tiny config of its own structure (tests/small_lms.py's ``tiny_lm_args``: 64 wide, the
smallest depth its config accepts, its layer sharing, windows, recursion and routing kept), derived from the
registry, so that a family registered later is in the suite without a test edit. Every model: parameter count at
full size against the reference (meta device), KV-cache decoding equals a full recompute, greedy ``generate``, and
the ``save_pretrained`` / ``create_model(folder, pretrained=True)`` round trip. The ``torch.export`` smoke runs by
default on the smallest distinct tiny structure of each series (the name's first word: ``mobilellm``, ``mor``, ...),
and on the others under ``-m slow``.

The check functions (tests/model_checks.py) take a model name, like the vision suite's (tests/models/test_models.py).
"""

import pytest
from model_checks import check_lm_cache, check_lm_export, check_lm_generate, check_lm_param_count, check_lm_save_load
from small_lms import lm_representatives, text_generation_models

import zoo

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LMS = text_generation_models()
DEFAULT = lm_representatives(LMS)
# the default run exports the smallest of each series' distinct tiny structures; the other structures under -m slow
_SMALLEST = sorted(DEFAULT, key=lambda n: (zoo.model_info(n)["reference"].get("params") or 0, n))
EXPORTED = sorted({name.split("_", 1)[0]: name for name in reversed(_SMALLEST)}.values())
ALL_LMS = [name if name in EXPORTED else pytest.param(name, marks=pytest.mark.slow) for name in LMS]


@pytest.mark.parametrize("name", LMS)
def test_param_count_at_full_size(name):
    check_lm_param_count(name)


@pytest.mark.parametrize("name", LMS)
def test_cached_decoding_equals_full_recompute(name):
    check_lm_cache(name)


@pytest.mark.parametrize("name", LMS)
def test_greedy_generate(name):
    check_lm_generate(name)


@pytest.mark.parametrize("name", LMS)
def test_save_pretrained_round_trip(name, tmp_path):
    check_lm_save_load(name, tmp_path)


@pytest.mark.export
@pytest.mark.parametrize("name", ALL_LMS)
def test_torch_export_smoke(name):
    check_lm_export(name)


def test_the_suite_sees_the_language_models():
    """The registry's task filter finds the LM families, and the default models are distinct tiny structures."""
    assert {"mobilellm", "recursive"} <= {zoo.model_info(n)["family"] for n in LMS}
    assert set(DEFAULT) <= set(LMS) and lm_representatives(DEFAULT) == DEFAULT
    assert len(DEFAULT) < len(LMS)  # the size variants of one structure share their tiny model
