"""The package's layers import one way only (CONTRIBUTING.md draws them).

Every import of a zoo module, at module level or inside a function, must point to a lower floor (or, inside one
package of a floor, to a sibling without closing a cycle); no module imports zoo modules inside functions to dodge
a cycle, and nothing inside the package does ``import zoo``. Read from the source with ``ast``: nothing is run.
"""

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "zoo"

# floor of each module (the longest matching prefix decides); a module may import only from its floor or below
FLOORS = {
    "zoo._version": 0,
    "zoo.platform": 0,
    "zoo.kernels": 1,
    "zoo.layers": 2,
    "zoo.lm": 2,
    "zoo.data": 2,
    "zoo.weights": 3,
    "zoo.output_folder": 3,
    "zoo.run_layout": 3,
    "zoo.config_rules": 3,
    "zoo.lm_loading": 3,
    "zoo.registry": 3,
    "zoo.registry_cli": 3,
    "zoo.models": 4,
    "zoo.hub": 5,
    "zoo.weight_record": 5,
    "zoo.factory": 6,
    "zoo.profile": 7,
    "zoo.profile_cli": 7,
    "zoo.cards": 8,
    "zoo.compress": 8,
    "zoo.publish": 9,
    "zoo.publish_cli": 9,
    "zoo.export": 10,
    "zoo.train": 10,
    "zoo.evaluate": 10,
    "zoo.condense": 11,
    "zoo.run_cli": 11,
    "zoo.bench": 12,
    "zoo.cli": 13,
    "zoo.__main__": 13,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _floor(module: str) -> int:
    prefixes = [prefix for prefix in FLOORS if module == prefix or module.startswith(prefix + ".")]
    assert prefixes, f"{module} is on no floor: add it to FLOORS (and to CONTRIBUTING.md's picture)"
    return FLOORS[max(prefixes, key=len)]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@functools.cache
def _zoo_imports(module: str) -> tuple:
    """(imported zoo module, line, inside a function) for every import of a zoo module in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.split(".")[0] == "zoo")
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child)
                if target.split(".")[0] == "zoo":
                    for alias in child.names:  # `from . import x` names a submodule
                        sub = f"{target}.{alias.name}"
                        found.append((sub if sub in MODULES else target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return tuple(found)


def _edges():
    return {m: [t for t, _, _ in _zoo_imports(m) if t in MODULES and t != m] for m in MODULES if m != "zoo"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "zoo"))
def test_imports_point_down(module):
    wrong = []
    for target, line, in_function in _zoo_imports(module):
        where = f"{MODULES[module].name}:{line}"
        if target == "zoo":
            wrong.append(f"{where}: `import zoo` inside the package; import the module that defines the name")
        elif in_function:
            wrong.append(f"{where}: function-local import of {target}; import it at the top (a lower floor)")
        elif target in MODULES and _floor(target) > _floor(module):
            wrong.append(f"{where}: {module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})")
    assert not wrong, "\n".join(wrong)


def test_family_files_do_not_import_each_other():
    families = {m for m in MODULES if m.startswith("zoo.models.") and not m.split(".")[-1].startswith("_")}
    edges = _edges()
    crossing = [(m, t) for m in families for t in edges[m] if t in families]
    assert not crossing, crossing


def test_no_import_cycles():
    edges, state, cycles = _edges(), {}, []

    def walk(node, stack):
        state[node] = "open"
        for nxt in edges.get(node, []):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_has_a_floor():
    # a new top-level module must be placed on a floor here (and in CONTRIBUTING.md's picture)
    for module in MODULES:
        if module != "zoo":
            _floor(module)


# ------------------------------------------------------------------------------------------------------------------
# CONTRIBUTING.md's floor table is rendered from FLOORS (and these lines), never kept by hand: `python
# tests/library/test_layering.py` prints it, `python tests/library/test_layering.py --write` puts it between the
# markers.

CONTRIBUTING = ROOT.parent / "CONTRIBUTING.md"
TABLE_START, TABLE_END = "<!-- floors:start -->", "<!-- floors:end -->"

# one line per FLOORS prefix: what lives there
DESCRIPTIONS = {
    "zoo._version": "the package version",
    "zoo.platform": "what the process runs on: the CPU's name, the C allocator's policy, huge pages",
    "zoo.kernels": "the C++ CPU kernels: their sources, the build at first use, their loading and the one CPU dispatch",
    "zoo.layers": "shared blocks: the vision face, large kernels, recursion, saving hooks",
    "zoo.lm": "the LM wing, one front door: config, decoder, blocks, KV cache, generation, quantization, prune plan, "
    "static decoder, routing caches",
    "zoo.data": "data behind one resolver (a name -> a source -> splits): images, benchmark files, text, shards, "
    "streams, synthetic-set folders, DSA augmentation",
    "zoo.weights": "weight I/O and loading errors",
    "zoo.output_folder": "a command's output folder, checked and swapped in whole",
    "zoo.run_layout": "a training run's folder: its files' names, named once",
    "zoo.config_rules": "what a config.json that comes with weights may say",
    "zoo.lm_loading": "what only a language model's weights carry: the quantization record held against the "
    "tensors (QAT scales converted, int8/int4 codes never read as float), the generation config",
    "zoo.registry": "the model table (knows no family)",
    "zoo.registry_cli": "`zoo list` and `zoo info`",
    "zoo.models": "one file per family (+ `_builder.py`, timm's `build_model_with_cfg`)",
    "zoo.hub": "Hub download with verification, a repo's config.json",
    "zoo.weight_record": "what a weight source holds, read once: state dict, config.json, the architecture it "
    "names, the arguments it records",
    "zoo.factory": "`create_model`: resolves the weight source once, builds, loads; timm entry points",
    "zoo.profile": "params, MACs (fvcore + handles), latency, memory; `zoo.profile(...)`",
    "zoo.profile_cli": "`zoo profile`",
    "zoo.cards": "model cards (the zoo's own and published ones) and the model table",
    "zoo.compress": "structural pruning (Torch-Pruning's dependency graph), widths as builder arguments; `zoo prune`",
    "zoo.publish": "the publishable folder (safetensors, config.json, card) and the Hub upload",
    "zoo.publish_cli": "`zoo convert` and `zoo publish`",
    "zoo.export": "deployment artefacts (pt2, ONNX, pte, GGUF), transformers' Auto* classes for the zoo's LMs",
    "zoo.train": "the training engine: builders, tasks, loop, checkpoints, distributed, sparse, distillation",
    "zoo.evaluate": "held-out evaluation (`eval.py`)",
    "zoo.condense": "efficient data: condensation and coreset methods, the synthetic-set folder, the protocol",
    "zoo.run_cli": "`zoo run`: a model, or an export folder, on a seeded input",
    "zoo.bench": "benchmarks: harness, peers, reference renditions, deployed forms; `zoo bench NAME`",
    "zoo.cli": "the `zoo` command: one entry per command, each command's arguments beside its code",
    "zoo.__main__": "`python -m zoo`",
}


def _where(prefix: str) -> str:
    """``zoo.bench`` -> ``zoo/bench/``; ``zoo.cli`` -> ``zoo/cli.py``."""
    path = ROOT.parent / prefix.replace(".", "/")
    return f"{path.relative_to(ROOT.parent).as_posix()}/" if path.is_dir() else f"{prefix.replace('.', '/')}.py"


def render_floor_table() -> str:
    """The floor table of CONTRIBUTING.md, top floor first, from FLOORS and DESCRIPTIONS."""
    lines = ["| floor | module | what it holds |", "|---:|---|---|"]
    for floor in sorted(set(FLOORS.values()), reverse=True):
        for prefix in (p for p in FLOORS if FLOORS[p] == floor):
            lines.append(f"| {floor} | `{_where(prefix)}` | {DESCRIPTIONS.get(prefix, '?')} |")
    return "\n".join(lines)


def _table_in_contributing() -> str | None:
    text = CONTRIBUTING.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        return None
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


def test_every_floor_has_a_description():
    missing = [p for p in FLOORS if p not in DESCRIPTIONS]
    stale = [p for p in DESCRIPTIONS if p not in FLOORS]
    assert not missing, f"add a line for {missing} to DESCRIPTIONS in tests/library/test_layering.py"
    assert not stale, f"{stale} left FLOORS: remove them from DESCRIPTIONS"


def test_contributing_draws_the_floors_from_floors():
    table = _table_in_contributing()
    assert table is not None, f"CONTRIBUTING.md lacks the markers {TABLE_START} ... {TABLE_END}"
    assert table == render_floor_table(), (
        "CONTRIBUTING.md's floor table differs from FLOORS: run `python tests/library/test_layering.py --write`"
    )


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        text = CONTRIBUTING.read_text()
        head, _, rest = text.partition(TABLE_START)
        _, _, tail = rest.partition(TABLE_END)
        CONTRIBUTING.write_text(f"{head}{TABLE_START}\n{render_floor_table()}\n{TABLE_END}{tail}")
    else:
        print(render_floor_table())
