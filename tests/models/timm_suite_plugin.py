"""A pytest plugin for a run of timm's own ``tests/test_models.py`` (unchanged) on the zoo's vision models.

``tests/models/timm_suite.py`` starts that run in a subprocess with ``-p timm_suite_plugin`` (``tests/models/`` on
``PYTHONPATH``) and ``ZOO_TIMM_MODELS=name,name``. The project's own test run never loads it. Before timm's file is
imported (its parametrization lists timm's registry at import) the plugin:

1. imports the zoo, so that its vision models join timm's registry (``zoo.factory.register_in_timm``);
2. points timm's entries of the names timm owns that are asked for (``poolformer_s12``, ``caformer_s18``, ...) at the
   zoo's builder, with the zoo's pretrained cfgs, for this run only: the names stay timm's outside it;
3. has ``timm.list_models``, as the file's parametrization calls it, list only the models asked for (collecting
   timm's 18,000 other items takes longer than running these) and count the zoo's models among the ones timm
   selects by module for its ``forward_intermediates()`` tests (``FEAT_INTER_FILTERS``: the models with
   ``forward_intermediates()`` and the ``FeatureGetterNet`` wrapper, which every zoo vision model has; the zoo's
   entries are in timm's registry under the module ``timm_models``);
4. keeps only the items whose ``model_name`` is one of ``ZOO_TIMM_MODELS`` (with or without a ``.tag``): the items
   of tests written for named timm models and of tests without a model are deselected;
5. skips the tests of pretrained weights, with the reason, when the Hub (``HF_ENDPOINT``) cannot be reached.
"""

import os
import sys
import warnings

import pytest
import timm
from huggingface_hub import constants as hf_constants
from timm.models import _registry as timm_registry

import zoo
from zoo import factory
from zoo.hub import endpoint_reachable, offline_mode
from zoo.registry import get_entry

MODELS_ENV = "ZOO_TIMM_MODELS"
# the tests of timm's file that download each model's pretrained weights
PRETRAINED_TESTS = ("test_model_load_pretrained", "test_model_features_pretrained")
# timm's list by module of the models with forward_intermediates() and FeatureGetterNet support holds these
_FEAT_INTER_MARKS = {"vision_transformer", "resnet", "convnext", "efficientnet"}
# what timm's registry records as the zoo's entries' module (the last part of the entry points' module name)
_ZOO_MODULE = factory._timm_entrypoint("").__module__.rpartition(".")[2]


def requested_models() -> list[str]:
    names = [n.strip() for n in os.environ.get(MODELS_ENV, "").split(",") if n.strip()]
    if not names:
        raise pytest.UsageError(f"{MODELS_ENV} names no model: set it to zoo vision model names, comma separated")
    vision = set(zoo.list_models(task="image-classification"))
    unknown = [n for n in names if n not in vision]
    if unknown:
        raise pytest.UsageError(f"{MODELS_ENV}: {', '.join(unknown)} are not zoo vision models")
    return names


def point_timm_at_zoo(name: str) -> None:
    """timm's registry entry of a name timm owns -> the zoo's builder, with the zoo's pretrained cfgs and tags."""
    entrypoint = factory._timm_entrypoint(name)
    module = sys.modules[entrypoint.__module__]
    module.default_cfgs[name] = factory.timm_default_cfg(get_entry(name))
    with warnings.catch_warnings():  # "Overwriting poolformer_s12 in registry": what is meant here
        warnings.simplefilter("ignore")
        timm_registry.register_model(entrypoint)  # timm's module, tags and cfgs of the name give way


def _for_the_run(list_models, models):
    """timm's ``list_models`` as test_models.py's parametrization sees it in this run: only ``models`` (with or
    without a ``.tag``; collecting timm's 18,000 other items would take longer than running these), and the zoo's
    module counted in a module filter of timm's forward_intermediates list (:data:`_FEAT_INTER_MARKS`)."""

    def wrapped(filter="", module="", *args, **kwargs):
        modules = [module] if isinstance(module, str) else list(module or ())
        if _FEAT_INTER_MARKS <= set(modules) and _ZOO_MODULE not in modules:
            module = [*modules, _ZOO_MODULE]
        return [n for n in list_models(filter, module, *args, **kwargs) if n.partition(".")[0] in models]

    wrapped.__wrapped__ = list_models
    wrapped.__doc__ = list_models.__doc__
    return wrapped


def pytest_configure(config):
    models = requested_models()
    config._zoo_timm_models = set(models)
    for name in models:
        if get_entry(name).timm_owns_name:
            point_timm_at_zoo(name)
    # test_models.py takes ``from timm import list_models`` at its import, after this
    timm.list_models = _for_the_run(timm.list_models, config._zoo_timm_models)


def _model_param(item):
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("model_name") if callspec is not None else None
    return name.partition(".")[0] if isinstance(name, str) else None


def pytest_collection_modifyitems(config, items):
    models = config._zoo_timm_models
    kept, dropped = [], []
    for item in items:
        (kept if _model_param(item) in models else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    pretrained = [i for i in kept if getattr(i, "originalname", i.name) in PRETRAINED_TESTS]
    if pretrained:
        endpoint = hf_constants.ENDPOINT
        if offline_mode() or not endpoint_reachable(endpoint):
            skip = pytest.mark.skip(reason=f"the Hub ({endpoint}) cannot be reached: no pretrained weights to load")
            for item in pretrained:
                item.add_marker(skip)


def pytest_report_header(config):
    versions = f"timm {timm.__version__}, zoo {zoo.__version__}"
    return f"timm's test_models.py on the zoo's models ({versions}): {', '.join(sorted(config._zoo_timm_models))}"
