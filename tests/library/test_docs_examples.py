"""The code blocks that a newcomer copies from README.md and the documentation site run here.

Python blocks run page by page (the blocks of one page share their names, as in a session), in a temporary folder,
against the Hub stand-in (tests/fakehub.py): before a block runs, every ``create_model(NAME, pretrained=True)`` in
it finds random weights of that architecture on the stand-in (or in the local file its ``pretrained_cfg_overlay``
names), and every ``load_lm_tokenizer(FOLDER)`` a small SentencePiece model (on such a page the LMs take its tiny
vocabulary). The default run shrinks the models (a tiny MetaFormer, the LMs at tests/small_lms.py's tiny depth and
widths); ``-m slow`` runs the blocks at full size.

An HTML comment on the lines just above a block changes how it runs:

- ``<!-- test: replace "OLD" "NEW" -->``: the text OLD of the block becomes NEW (both Python string literals; one
  comment may hold several ``replace`` pairs), for what no test can reach (a data set to download);
- ``<!-- test: slow -->``: the block runs only in the slow run;
- ``<!-- not run: REASON -->``: the block is not run, for the reason given (counted below).

Shell blocks: every ``zoo`` command line parses with the ``zoo`` parser (and every ``zoo ...`` in inline code names
a command and its options), ``train.py`` lines resolve their recipe (``--print-config``), ``eval.py`` and ``python
-m zoo...`` lines name options their parser has; ``zoo list``, ``zoo info`` and ``zoo profile convnet_d3`` run.
"""

import argparse
import ast
import contextlib
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from maintainer_tools import load
from small_lms import tiny_lm_args

import zoo
from zoo import cli
from zoo.evaluate import _parser as eval_parser
from zoo.lm.decoder import DecoderLM
from zoo.train.cli import main as train_main
from zoo.weights import save_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
# the pages a newcomer copies from: every python block on them runs (or says why not)
PAGES = [
    "README.md",
    "docs/index.md",
    "docs/getting_started.md",
    *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs" / "models").glob("*.md")),
    "docs/training.md",
    "docs/hub.md",
    "docs/generation.md",
    "docs/compress.md",
    "docs/deploy.md",
    "docs/efficient_data.md",
]
# pages whose python blocks are not run here, and why; their shell commands are still checked
NOT_COPIED = {
    "docs/lm_decoding.md": "reference for the decoding switches; generate's settings run in docs/generation.md",
    "docs/api.md": "the API reference, generated from the docstrings",
}
SHELL_PAGES = [*PAGES, *NOT_COPIED, "docs/benchmarks.md", "docs/contributing.md", "CONTRIBUTING.md"]
# shell lines that are not zoo's to check: set-up, the test runner, the linters, the site, the outside tools shown
OTHER_TOOLS = (
    "python3 -m venv",
    ". .venv",
    "pip ",
    "python -m pytest",
    "ruff ",
    "mkdocs ",
    "uptime",
    "cd ",
    "lm_eval ",
)

TINY_METAFORMER = {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    comments: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def directive(self, word: str) -> str | None:
        for c in self.comments:
            m = re.fullmatch(rf"<!--\s*{word}:\s*(.*?)\s*-->", c, re.S)
            if m:
                return m.group(1)
        return None

    @property
    def not_run(self) -> str | None:
        return self.directive("not run")

    @property
    def slow(self) -> bool:
        return any(re.search(r"\bslow\b", t) for t in self._tests())

    def _tests(self) -> list[str]:
        return [m.group(1) for c in self.comments for m in [re.fullmatch(r"<!--\s*test:\s*(.*?)\s*-->", c, re.S)] if m]

    def source(self) -> str:
        code = self.code
        for t in self._tests():
            for old, new in re.findall(r'replace\s+("(?:[^"\\]|\\.)*")\s+("(?:[^"\\]|\\.)*")', t):
                old, new = ast.literal_eval(old), ast.literal_eval(new)
                assert old in code, f"{self.where}: `replace` names {old!r}, which the block does not hold"
                code = code.replace(old, new)
        return code


def blocks(page: str) -> list[Block]:
    lines = (REPO / page).read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        comments, j = [], i - 1
        while j >= 0 and lines[j].strip().startswith("<!--") and lines[j].strip().endswith("-->"):
            comments.insert(0, lines[j].strip())
            j -= 1
        end = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
        found.append(Block(page, i + 1, m.group(1), "\n".join(lines[i + 1 : end]) + "\n", comments))
        i = end + 1
    return found


def python_blocks(page: str) -> list[Block]:
    return [b for b in blocks(page) if b.lang == "python"]


# ----------------------------------------------------------------------------------------------------------------
# python blocks


def _is_create(call: ast.Call) -> bool:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name == "create_model" and bool(call.args) and isinstance(call.args[0], ast.Constant)


def _registered(name) -> bool:
    return isinstance(name, str) and name in zoo.list_models()


def _tiny_args(name: str, own_vocab: bool = True, sizes: bool = True) -> dict:
    """What shrinks ``name``: its depth and widths (``sizes``) and, unless ``own_vocab``, an LM's vocabulary to the
    tiny one of the page's tokenizer (:func:`_tokenizer_folder`)."""
    family = zoo.model_info(name)["family"].lower()
    if "metaformer" in family or name.startswith(("poolformer", "caformer", "convformer", "identityformer", "rand")):
        return dict(TINY_METAFORMER) if sizes else {}
    with torch.device("meta"):
        lm = isinstance(zoo.create_model(name), DecoderLM)
    if not lm:
        return {}
    vocab = lambda k: k == "vocab_size" or k.endswith("_token_id")  # noqa: E731
    return {k: v for k, v in tiny_lm_args(name).items() if (sizes and not vocab(k)) or (not own_vocab and vocab(k))}


class _Shrink(ast.NodeTransformer):
    """``create_model(NAME, ...)`` with the tiny sizes of NAME added; ``zoo.profile(NAME)`` profiles the tiny
    model (:func:`_tiny_args`)."""

    def __init__(self, own_vocab: bool = True, sizes: bool = True):
        self.own_vocab, self.sizes = own_vocab, sizes

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        f = node.func
        if _is_create(node) and _registered(node.args[0].value):
            given = {k.arg for k in node.keywords}
            extra = {
                k: v for k, v in _tiny_args(node.args[0].value, self.own_vocab, self.sizes).items() if k not in given
            }
            node.keywords += [ast.keyword(k, ast.parse(repr(v), mode="eval").body) for k, v in extra.items()]
        elif (
            isinstance(f, ast.Attribute)
            and f.attr == "profile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and _registered(node.args[0].value)
        ):
            name = node.args[0].value
            tiny = _tiny_args(name, self.own_vocab, self.sizes)
            if tiny:
                node.args[0] = ast.parse(f"zoo.create_model({name!r}, **{tiny!r})", mode="eval").body
        return node


_NOT_ARCHITECTURE = {"pretrained", "pretrained_cfg_overlay", "quantize", "features_only", "out_indices", "num_classes"}


def _weights_bytes(model: torch.nn.Module, filename: str, tmp: Path) -> bytes:
    if filename.endswith(".safetensors"):
        return save_state_dict(model, tmp / "weights.safetensors").read_bytes()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def _tokenizer_folder(folder: Path) -> None:
    """A SentencePiece model of the tiny LMs' vocabulary size (tests/small_lms.py), trained on this file's words."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    words = re.findall(r"[a-z]+", Path(__file__).read_text().lower())
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=tiny_lm_args("mobilellm_125m")["vocab_size"],
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
    )


def _prepare(tree: ast.AST, hub, cwd: Path) -> None:
    """Weights for every pretrained build of a registered name in the block, and tokenizers it loads."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func == "load_lm_tokenizer" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and not (cwd / arg.value).exists():
                _tokenizer_folder(cwd / arg.value)
        if not (_is_create(node) and _registered(node.args[0].value)):
            continue
        kwargs = {}
        for k in node.keywords:
            with contextlib.suppress(ValueError):
                kwargs[k.arg] = ast.literal_eval(k.value)
        if kwargs.get("pretrained") is not True:
            continue
        name = node.args[0].value
        model = zoo.create_model(name, **{k: v for k, v in kwargs.items() if k not in _NOT_ARCHITECTURE})
        local = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
        if local:
            (cwd / local).parent.mkdir(parents=True, exist_ok=True)
            (cwd / local).write_bytes(_weights_bytes(model, local, cwd))
        else:
            cfg = zoo.model_info(name)["pretrained_cfg"]
            filename = cfg["hf_hub_filename"]
            hub.repos.setdefault(cfg["hf_hub_id"], {})[filename] = _weights_bytes(model, filename, cwd)


def _run_page(page: str, full_size: bool, hub, tmp_path, monkeypatch) -> int:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    page_text = "".join(b.source() for b in python_blocks(page))
    ran = 0
    for block in python_blocks(page):
        if block.not_run is not None or (block.slow and not full_size):
            continue
        tree = ast.parse(block.source(), filename=block.where)
        shrink = _Shrink(own_vocab="load_lm_tokenizer" not in page_text, sizes=not full_size)
        tree = ast.fix_missing_locations(shrink.visit(tree))
        _prepare(tree, hub, tmp_path)
        torch.manual_seed(0)
        try:
            exec(compile(tree, block.where, "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"the block at {block.where} fails: {type(e).__name__}: {e}") from e
        ran += 1
    return ran


def _pages_with_python():
    return [p for p in PAGES if any(b.not_run is None for b in python_blocks(p))]


@pytest.mark.parametrize("page", _pages_with_python())
def test_python_blocks_run(page, hub, tmp_path, monkeypatch):
    expected = [b for b in python_blocks(page) if b.not_run is None and not b.slow]
    assert _run_page(page, False, hub, tmp_path, monkeypatch) == len(expected)


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_python())
def test_python_blocks_run_at_full_size(page, hub, tmp_path, monkeypatch):
    expected = [b for b in python_blocks(page) if b.not_run is None]
    assert _run_page(page, True, hub, tmp_path, monkeypatch) == len(expected)


def test_every_python_block_runs_or_says_why():
    pages = sorted({p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md") if not p.is_symlink()})
    with_python = [p for p in ["README.md", *pages] if not p.startswith(("docs/model_cards", "docs/results"))]
    with_python = [p for p in with_python if python_blocks(p)]
    unplaced = [p for p in with_python if p not in PAGES and p not in NOT_COPIED]
    assert not unplaced, f"pages with python blocks in neither PAGES nor NOT_COPIED: {unplaced}"
    every = [b for p in PAGES for b in python_blocks(p)]
    skipped = [b for b in every if b.not_run is not None]
    assert all(b.not_run.strip() for b in skipped), "a `not run` comment gives its reason"
    run = [b for b in every if b.not_run is None]
    assert len(run) + len(skipped) == len(every) and len(run) >= 15, (len(run), [b.where for b in skipped])


# ----------------------------------------------------------------------------------------------------------------
# shell blocks and inline commands


def _shell_lines(page: str):
    """(where, line) for every command of the page's shell blocks: continuations joined, comments and prompts cut,
    ``a && b`` split."""
    for block in blocks(page):
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        text = re.sub(r"\\\n\s*", " ", block.code)
        for n, raw in enumerate(text.splitlines()):
            line = raw.strip().removeprefix("$ ")
            line = re.sub(r"\s+#.*$", "", line) if not line.startswith("#") else ""
            for part in filter(None, (p.strip() for p in line.split("&&"))):
                yield f"{block.where}+{n + 1}", part


def _argv(line: str) -> list[str]:
    return shlex.split(line)


def _parse_zoo(argv: list[str], where: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            cli.build_parser().parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"{where}: `zoo {' '.join(argv)}` does not parse: {err.getvalue().strip()}") from e


def _help_of(module: str) -> str:
    """The --help text of ``python -m MODULE`` (its ``main(argv)``), without running anything else."""
    mod = __import__(module, fromlist=["main"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        mod.main(["--help"])
    return out.getvalue()


def _help_of_script(path: str) -> str:
    """The --help text of a checkout script, ``python tools/NAME.py`` or ``python examples/NAME.py``."""
    folder, name = path.removesuffix(".py").split("/")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        load(name, folder).main(["--help"])
    return out.getvalue()


def _check_flags(argv: list[str], help_text: str, where: str) -> None:
    flags = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    missing = [f for f in flags if not re.search(rf"{re.escape(f)}\b", help_text)]
    assert not missing, f"{where}: {missing} are not options of `{' '.join(argv[:3])}`"


def _check_line(where: str, line: str, checked: dict) -> None:
    argv = _argv(line)
    if argv[:1] == ["torchrun"]:
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] != "-m":
            rest = rest[1:] if "=" in rest[0] else rest[2:]
        argv = ["python", *rest]
    if argv[0] == "zoo":
        _parse_zoo(argv[1:], where)
        checked["zoo"] += 1
    elif argv[:3] == ["python", "-m", "zoo"]:
        _parse_zoo(argv[3:], where)
        checked["zoo"] += 1
    elif argv[:2] == ["python", "-m"] and argv[2].startswith("zoo."):
        _check_flags(argv[3:], _help_of(argv[2]), where)
        checked["modules"] += 1
    elif argv[0] == "python" and re.fullmatch(r"(tools|examples)/\w+\.py", argv[1]):
        assert (REPO / argv[1]).is_file(), f"{where}: `{line}`: the checkout has no {argv[1]}"
        _check_flags(argv[2:], _help_of_script(argv[1]), where)
        checked["modules"] += 1
    elif argv[:2] == ["python", "train.py"]:
        args = argv[2:]
        if "--config" in args:
            out = io.StringIO()
            resume = [a for a in args if a not in ("--resume", "auto")]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                rc = train_main([*resume, "--print-config"])
            assert rc == 0, f"{where}: the recipe of `{line}` does not resolve (train.py --print-config)"
        checked["train"] += 1
    elif argv[:2] == ["python", "eval.py"]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                eval_parser().parse_args(argv[2:])
            except SystemExit as e:
                raise AssertionError(f"{where}: `{line}` does not parse: {err.getvalue().strip()}") from e
        checked["eval"] += 1
    else:
        assert line.startswith(OTHER_TOOLS), f"{where}: `{line}`: no check knows this command (OTHER_TOOLS?)"


def test_shell_commands_parse():
    checked = {"zoo": 0, "modules": 0, "train": 0, "eval": 0}
    for page in SHELL_PAGES:
        for where, line in _shell_lines(page):
            _check_line(where, line, checked)
    # the benchmarks are shown as `zoo bench NAME` (counted under "zoo"); "modules": python tools/ and examples/ scripts
    assert checked["zoo"] >= 20 and checked["train"] >= 8 and checked["modules"] >= 2 and checked["eval"] >= 2, checked


def test_inline_zoo_commands_name_real_options():
    """`zoo COMMAND [--flag ...]` in inline code (the README's command table): the command and each flag exist."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    seen = 0
    for page in ("README.md", *PAGES[1:]):
        for code in re.findall(r"`(zoo [^`]+)`", (REPO / page).read_text()):
            words = code.split()
            if words[1].startswith("-") or words[1].isupper():
                continue
            assert words[1] in sub.choices, f"{page}: `{code}`: zoo has no command {words[1]!r}"
            command, rest = sub.choices[words[1]], words[2:]
            while rest:  # `zoo data shard ...`: down to the innermost command named
                inner = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
                if not inner or rest[0] not in inner[0].choices:
                    break
                command, rest = inner[0].choices[rest[0]], rest[1:]
            options = {s for a in command._actions for s in a.option_strings}
            flags = [w.strip("[]").split("=")[0] for w in words if w.strip("[]").startswith("--")]
            unknown = [f for f in flags if f not in options]
            assert not unknown, f"{page}: `{code}`: zoo {words[1]} has no {unknown}"
            seen += 1
    assert seen >= 15


def test_cheap_commands_run(capsys):
    assert cli.main(["list", "poolformer_s1*"]) == 0
    assert "poolformer_s12" in capsys.readouterr().out
    assert cli.main(["info", "poolformer_s12"]) == 0
    assert '"family"' in capsys.readouterr().out
    assert cli.main(["profile", "convnet_d3"]) == 0  # a small model: the README's `zoo profile NAME`
    assert "MACs" in capsys.readouterr().out


def test_a_broken_command_is_caught():
    with pytest.raises(AssertionError, match="does not parse"):
        _check_line("here", "zoo prune runs/x --target-maks 50% --out y", {"zoo": 0})
    with pytest.raises(AssertionError, match="are not options"):
        _check_line("here", "python tools/headline.py --batch-size 1", {"modules": 0})
    block = Block("page.md", 1, "python", 'x = "a"\n', ['<!-- test: replace "b" "c" -->'])
    with pytest.raises(AssertionError, match="does not hold"):
        block.source()
