"""timm's own test suite on the zoo's vision models: ``tests/test_models.py`` of the installed timm's sdist, unchanged.

Each item runs timm's file in a pytest subprocess on one zoo model (``tests/models/timm_suite.py`` fetches the file
once, ``tests/models/timm_suite_plugin.py`` points the run at the zoo), reads its junit XML and checks that timm's tests
ran on the model and that every failure is one of :data:`ALLOWED_DIFFERENCES`, the differences the authors' code forces.
An allowed difference that no longer fails is reported as a failure too: the list says exactly what differs.

``-m slow`` (CI's second step) takes the smallest model of every family, with CAFormer for the MetaFormers (both of
their token mixers, and a name timm owns), PoolFormer v1 (the other name timm owns whose structure differs: its norm
of the whole map) and RandFormer (its allowed difference); ``-m sweep`` every other zoo vision model, the other
MetaFormer series among them. By hand, for any models::

    ZOO_TIMM_MODELS=identityformer_s12,sret_tiny PYTHONPATH=tests python -m pytest -p timm_suite_plugin \\
        -c ~/.cache/zoo/tests/timm-tests/$(python -c "import timm; print(timm.__version__)")/pyproject.toml \\
        ~/.cache/zoo/tests/timm-tests/$(python -c "import timm; print(timm.__version__)")/tests/test_models.py
"""

import fnmatch
import time

import pytest
import timm_suite

import zoo

# under slow (CI; about a CPU-minute a model: timm's suite builds each a dozen times): the smallest model of each
# family, CAFormer standing for the MetaFormer series whose blocks it holds (SepConv and attention mixers, timm's tags and
# pooling on one of timm's names), PoolFormer v1 (its norm of the whole map) and RandFormer (its allowed difference);
# every other zoo vision model under sweep (-m sweep, by hand)
SLOW_MODELS = ["caformer_s18", "poolformer_s12", "randformer_s12", "slak_tiny", "sret_tiny", "convnet_d3"]
SWEEP_MODELS = [n for n in zoo.list_models(task="image-classification") if n not in SLOW_MODELS]

_NO_GRAD = (
    "RandFormer's token mixer is the authors' frozen random matrix (a parameter with requires_grad=False, kept so "
    "that their checkpoints load): it gets no gradient, and timm's backward tests require one for every parameter"
)
# (timm's test function, zoo model pattern, why): the only failures allowed, each forced by the authors' design
ALLOWED_DIFFERENCES = [
    ("test_model_backward", "randformer_*", _NO_GRAD),
    ("test_model_backward_fx", "randformer_*", _NO_GRAD),
]


def allowed(test: str, model: str) -> str | None:
    """Why ``test`` may fail on ``model``, or None."""
    for name, pattern, why in ALLOWED_DIFFERENCES:
        if name == test and fnmatch.fnmatchcase(model, pattern):
            return why
    return None


def check_suite(model: str, tmp_path) -> None:
    start = time.perf_counter()
    try:
        result = timm_suite.run_suite([model], tmp_path / "junit.xml")
    except timm_suite.SuiteUnavailable as e:
        pytest.skip(str(e))
    ran = {t: o for t, o in result.outcomes.items() if timm_suite.model_of(t, {model}) == model}
    counts = {o: sum(v == o for v in ran.values()) for o in ("passed", "failed", "error", "skipped")}
    print(f"{model}: {counts} in {time.perf_counter() - start:.1f} s (tests {result.seconds:.1f} s)")
    assert counts["passed"] + counts["failed"] + counts["error"] > 0, (
        f"timm's suite ran no test on {model} (exit status {result.returncode}):\n{result.output[-3000:]}"
    )
    bad = [t for t, o in ran.items() if o in ("failed", "error") and not allowed(timm_suite.test_name_of(t), model)]
    by_test: dict[str, list[str]] = {}
    for t, o in ran.items():
        by_test.setdefault(timm_suite.test_name_of(t), []).append(o)
    stale = [
        f"{name} on {model} ({', '.join(sorted(set(by_test.get(name, ['not run']))))})"
        for name, pattern, _ in ALLOWED_DIFFERENCES
        if fnmatch.fnmatchcase(model, pattern) and not {"failed", "error"} & set(by_test.get(name, ()))
    ]
    problems = [f"{t}: {result.messages.get(t, '')}" for t in sorted(bad)]
    problems += [f"allowed difference that no longer fails, remove it from ALLOWED_DIFFERENCES: {s}" for s in stale]
    assert not problems, f"timm's suite on {model}, {counts}:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("model", SLOW_MODELS)
def test_timm_suite_passes(model, tmp_path):
    check_suite(model, tmp_path)


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.parametrize("model", SWEEP_MODELS)
def test_timm_suite_passes_every_model(model, tmp_path):
    check_suite(model, tmp_path)


def test_allowed_differences_name_models_and_tests_that_exist():
    """Every entry names a zoo vision model pattern that matches, a test of timm's file, and a reason."""
    try:
        source = (timm_suite.suite_dir() / "tests" / "test_models.py").read_text()
    except timm_suite.SuiteUnavailable as e:
        pytest.skip(str(e))
    vision = zoo.list_models(task="image-classification")
    for name, pattern, why in ALLOWED_DIFFERENCES:
        assert f"def {name}(" in source, f"timm's test_models.py has no {name}"
        assert fnmatch.filter(vision, pattern), f"{pattern} matches no zoo vision model"
        assert len(why) > 20
    assert sorted(SLOW_MODELS + SWEEP_MODELS) == sorted(vision)
