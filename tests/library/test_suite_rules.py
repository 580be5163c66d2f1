"""How the test suite is put together: the test modules sit in one folder per room of the package (tests/models,
tests/lm, tests/export, ...); they share setup through the conftest.py files (tests/conftest.py for what several groups
use, a group's own for what it alone uses) and the helper modules, never by importing one another; the subject
markers are registered and follow from what a test does."""

import ast
import functools
import re
from collections import Counter
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
GROUPS = sorted(p for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py")))
SUBJECTS = ("export", "hub", "ddp", "parity")


@pytest.fixture(scope="module")
def conftest(pytestconfig):
    """tests/conftest.py as pytest loaded it: ``import conftest`` would give whichever group's conftest.py was
    loaded last (pytest imports each under the same name)."""
    path = TESTS / "conftest.py"
    plugins = pytestconfig.pluginmanager.get_plugins()
    [module] = [p for p in plugins if getattr(p, "__file__", None) and Path(p.__file__).resolve() == path]
    return module


def test_every_test_module_sits_in_a_group_folder_under_a_name_of_its_own():
    """tests/ holds the shared conftest.py and helper modules, and one folder per room; test modules are imported by
    their bare name (no ``__init__.py``), so two with the same name in two groups would collide."""
    assert not sorted(p.name for p in TESTS.glob("test_*.py")), "move the test module into its room's folder"
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py")
    assert not [name for name, n in names.items() if n > 1]
    assert not [p for p in TESTS.rglob("test_*.py") if p.parent.parent != TESTS], "one level of folders"


@functools.cache
def _nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of ``path``'s syntax tree, parsed once for the module's checks."""
    return tuple(ast.walk(ast.parse(path.read_text(), str(path))))


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (anywhere in the file, inside functions too)."""
    names = set()
    for node in _nodes(path):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_a_test_module():
    """A test module is not a library: what two modules share lives in conftest.py or a helper module."""
    test_modules = {p.stem for p in TESTS.rglob("test_*.py")}
    imported = {p.name: _imported_modules(p) & test_modules for p in sorted(TESTS.rglob("*.py"))}
    offenders = {name: sorted(modules) for name, modules in imported.items() if modules}
    assert not offenders, f"modules importing test modules (move the shared code to a helper module): {offenders}"


def _fixtures(path: Path) -> set[str]:
    """The fixtures ``path`` defines, except those that extend a fixture of the same name (take it as argument)."""
    found = set()
    for node in _nodes(path):
        if isinstance(node, ast.FunctionDef) and node.name not in {a.arg for a in node.args.args}:
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if ast.unparse(target) in ("pytest.fixture", "fixture"):
                    found.add(node.name)
    return found


def _conftests(module: Path) -> list[Path]:
    """The conftest.py files whose fixtures ``module`` sees: tests/conftest.py and its group's, where it has one."""
    return [p for p in (TESTS / "conftest.py", module.parent / "conftest.py") if p.is_file()]


def test_no_test_module_redefines_a_shared_fixture():
    assert {"one_thread", "hub", "image_folder"} <= _fixtures(TESTS / "conftest.py")
    defined = {}
    for p in sorted(TESTS.rglob("test_*.py")):
        shared = set().union(*(_fixtures(c) for c in _conftests(p)))
        defined[p.name] = _fixtures(p) & shared
    redefined = {name: sorted(fixtures) for name, fixtures in defined.items() if fixtures}
    assert not redefined, f"fixtures that shadow a conftest.py's: {redefined}"


def _requested(path: Path) -> set[str]:
    """The fixture names ``path`` asks for: its functions' arguments and ``usefixtures`` strings."""
    names = set()
    for node in _nodes(path):
        if isinstance(node, ast.FunctionDef):
            names.update(a.arg for a in node.args.args)
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("usefixtures"):
            names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return names


def test_tests_conftest_holds_what_several_groups_use():
    """A fixture one group alone uses lives in that group's conftest.py; a group's conftest.py does not repeat one of
    tests/conftest.py's."""
    shared = _fixtures(TESTS / "conftest.py")
    requested = [(g.name, _requested(p)) for g in GROUPS for p in g.glob("*.py")]  # each module parsed once
    users = {name: sorted({group for group, names in requested if name in names}) for name in shared}
    alone = {name: groups for name, groups in users.items() if len(groups) < 2 and not name.startswith("_")}
    assert not alone, f"fixtures of tests/conftest.py used by one group or none (move them to its conftest.py): {alone}"
    for group in GROUPS:
        own = _fixtures(group / "conftest.py") if (group / "conftest.py").is_file() else set()
        assert not own & shared, (group.name, sorted(own & shared))


def test_markers_are_registered_and_the_default_run_leaves_out_slow(pytestconfig):
    registered = {m.split(":")[0] for m in pytestconfig.getini("markers")}
    assert {"slow", "sweep", *SUBJECTS} <= registered
    addopts = " ".join(pytestconfig.getini("addopts"))
    assert "not slow" in addopts and "--strict-markers" in addopts
    used = set()
    for path in TESTS.rglob("*.py"):
        used.update(re.findall(r"pytest\.mark\.([a-z_]+)", path.read_text()))
    builtin = {"parametrize", "skipif", "skip", "xfail", "usefixtures", "filterwarnings", "timeout"}
    assert used - builtin <= registered, sorted(used - builtin - registered)


@pytest.mark.parametrize(
    "name, fixtures, source, marks",
    [
        ("test_push_then_load", ("tmp_path", "hub"), "", ["hub"]),
        ("test_two_gloo_processes_match", ("tmp_path",), "    _ok([*TORCHRUN, *cmd])", ["ddp"]),
        ("test_spawned", (), "mp.spawn(worker.run, nprocs=2)", ["ddp"]),
        ("test_layer_sharing_parity_with_unrolled_llama", (), "", ["parity"]),
        ("test_dm_step_equals_the_authors", (), "", ["parity"]),
        ("test_generate_equals_transformers_llama", (), "", ["parity"]),
        ("test_vision_training_step_against_timm", (), "", ["parity"]),
        ("test_param_count_matches_authors", (), "", []),
        ("test_hub_repo_names_are_checked", ("tmp_path",), "torch.distributed.is_initialized()", []),
    ],
)
def test_subject_markers_follow_from_what_a_test_does(conftest, name, fixtures, source, marks):
    assert conftest.subject_marks(name, fixtures, source) == marks


@pytest.mark.parametrize("command", ["TORCHRUN"])
def _decorated(command):
    return command


def test_the_source_rule_reads_the_function_not_its_decorators(conftest):
    """A parametrize list that names TORCHRUN (as the cases above do) does not make a test a ddp test."""
    source = conftest._source(_decorated)
    assert source.startswith("def _decorated") and "TORCHRUN" not in source
    assert conftest.subject_marks("_decorated", (), source) == []


def test_a_test_that_uses_the_hub_is_marked_hub(request):
    """The marks are on the collected items (added before -m selects by them)."""
    items = [i for i in request.session.items if "hub" in getattr(i, "fixturenames", ())]
    assert all(i.get_closest_marker("hub") for i in items)
    assert request.node.get_closest_marker("hub") is None
