"""Counts and sizes a user gives are checked, and what is recorded is what was used: ``eval.py`` counts below 1 are
one line and status 2; a pte's ``prompt_chunk`` past the context is recorded as the chunk it exports; chat-template
filters cannot build huge strings; a resumed run whose shards changed says so with the counts.
"""

import pytest
import torch

from zoo import evaluate

EVAL_COUNTS = [
    ("--max-samples", "0"),
    ("--max-samples", "-5"),
    ("--batch-size", "0"),
    ("--max-batches", "-1"),
    ("--seq-len", "0"),
    ("--num-classes", "0"),
]


@pytest.mark.parametrize("flag, value", EVAL_COUNTS)
def test_eval_counts_below_one_are_one_line(flag, value, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("evaluated despite a bad count")

    monkeypatch.setattr(evaluate, "evaluate_model", never)
    assert evaluate.main(["--model", "convnet_d3", "--data", "digits", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{flag} {value}" in err and "1 or more" in err


def test_eval_on_a_device_torch_does_not_find_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(evaluate, "evaluate_model", lambda *a, **k: pytest.fail("evaluated"))
    with pytest.raises(SystemExit) as stop:  # argparse's usage error
        evaluate.main(["--model", "convnet_d3", "--data", "digits", "--device", "cuda"])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(
        "argument --device: cuda, but torch finds no CUDA device here: run on a GPU machine or use cpu"
    )


PROMPT_CHUNKS = [  # asked (None: the default, 32), max_seq_len, the program's form, what export.json records
    (1000, 64, ("chunk", 64), 64),
    (65, 64, ("chunk", 64), 64),
    (64, 64, ("chunk", 64), 64),
    (16, 64, ("chunk", 16), 16),
    (None, 16, ("chunk", 16), None),
]


@pytest.mark.parametrize("asked, context, form, recorded", PROMPT_CHUNKS)
def test_a_prompt_chunk_past_the_context_is_recorded_as_used(asked, context, form, recorded, recwarn):
    from zoo.export.core import ExportSpec
    from zoo.export.lm_runtime import prompt_form

    options = {"backend": "executorch", **({"prompt_chunk": asked} if asked is not None else {})}
    spec = ExportSpec(name="m", task="text-generation", format="pte", max_seq_len=context, options=options)
    assert prompt_form(spec) == form
    assert spec.options.get("prompt_chunk") == recorded  # what export.json records
    said = [str(w.message) for w in recwarn]
    warned = any(f"prompt_chunk={asked}" in m and f"max_seq_len={context}" in m for m in said)
    assert warned == (asked is not None and asked > context)
    assert prompt_form(spec) == form  # asked again (the card's usage): the same, no second warning
    assert len(recwarn) == len(said)


BIG = str(10**7)  # past the bound the test sets (100,000 characters) yet cheap where nothing bounds it
HUGE_STRINGS = [
    # (id, template, what the message names)
    ("center filter", "{{ '' | center(BIG) }}", "center filter would build 10000000 characters"),
    ("center through map", "{{ ['x'] | map('center', BIG) | join }}", "center filter would build"),
    ("indent filter", "{{ 'x\ny' | indent(BIG) }}", "indent filter would build"),
    ("format filter", "{{ '%BIGs' | format('x') }}", "format filter would build"),
    ("replace filter", "{{ 'aaaa' | replace('a', 'b' * 50000) }}", "replace filter would build 200000"),
    ("join filter", "{{ range(1000) | join('x' * 50000) }}", "join filter would build"),
    ("batch filter", "{{ [1] | batch(BIG, 0) | list | length }}", "batch filter would build"),
    ("slice filter", "{{ [1] | slice(BIG) | list | length }}", "slice filter would build"),
    ("wordwrap filter", "{{ ('a ' * 40000) | wordwrap(1, wrapstring='-' * 10) }}", "wordwrap filter would build"),
    ("str.center", "{{ 'x'.center(BIG) }}", ".center() would build 10000000"),
    ("str.ljust", "{{ 'x'.ljust(BIG) }}", ".ljust() would build"),
    ("str.rjust", "{{ 'x'.rjust(BIG) }}", ".rjust() would build"),
    ("str.zfill", "{{ 'x'.zfill(BIG) }}", ".zfill() would build"),
    ("str.expandtabs", "{{ 'a\tb'.expandtabs(BIG) }}", ".expandtabs() would build"),
    ("str.format width", "{{ '{:>BIG}'.format('x') }}", ".format() would build"),
    ("str.format nested width", "{{ '{:>{}}'.format('x', BIG) }}", ".format() would build"),
    ("str.replace", "{{ 'aaaa'.replace('a', 'b' * 50000) }}", ".replace() would build 200000"),
    ("str.join", "{{ ('x' * 50000).join(['a'] * 1000) }}", ".join() would build"),
    ("% width", "{{ '%BIGs' % 'x' }}", "% formatting would build"),
    ("% star width", "{{ '%*s' % (BIG, 'x') }}", "% formatting would build"),
    ("+ of two large strings", "{% set a = 'x' * 60000 %}{{ (a + a) | length }}", "+ would build 120000"),
    ("a namespace doubled in a loop",
     "{% set ns = namespace(s='x' * 50000) %}{% for i in range(10) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
     "{{ ns.s | length }}", "namespace value 's' would build 100000+"),
    ("tojson indent", "{{ [[[1]]] | tojson(indent=10**6) }}", "tojson indents by more than 64 characters"),
]  # fmt: skip
WITHIN = (
    "{{ 'x' | center(5) }}|{{ 'a\nb' | indent(2) }}|{{ '%s-%s' | format('a', 'b') }}|{{ 'a-b' | replace('-', '+') }}|"
    "{{ ['a', 'b'] | join(', ') }}|{{ '{}!'.format('hi') }}|{{ 'y'.rjust(3, '.') }}|{{ '%03d' % 7 }}|{{ 'a' + 'b' }}|"
    "{{ [1] | tojson(indent=1) }}|{{ [1, 2, 3] | batch(2, 0) | list }}"
)


@pytest.mark.parametrize("template, fragment", [r[1:] for r in HUGE_STRINGS], ids=[r[0] for r in HUGE_STRINGS])
def test_chat_template_filters_cannot_build_huge_strings(monkeypatch, template, fragment):
    from zoo.data import lm_tokenizer

    monkeypatch.setattr(lm_tokenizer, "MAX_RENDERED_CHARS", 100_000)
    with pytest.raises(ValueError) as info:
        lm_tokenizer.render_chat_template(template.replace("BIG", BIG), [{"role": "user", "content": "hi"}])
    message = str(info.value)
    assert "the chat template failed" in message
    if fragment.endswith("+"):  # a size past the bound, whichever the first step past it
        assert fragment[: -len("100000+")] in message and "past the 100000" in message
    else:
        assert fragment in message
    rendered = lm_tokenizer.render_chat_template(WITHIN, [])
    assert rendered == "  x  |a\n  b|a-b|a+b|a, b|hi!|..y|007|ab|[\n 1\n]|[[1, 2], [3, 0]]"


def _image_folder(root, per_class):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cow"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _shards(tmp, per_class, per_shard):
    import shutil

    from zoo.data.shards import write_shards

    images = _image_folder(tmp / f"images-{per_class}", per_class)
    out = tmp / f"shards-{per_class}-{per_shard}"
    if not out.exists():
        write_shards(images, out, samples_per_shard=per_shard, progress=False)
    shutil.rmtree(tmp / "data", ignore_errors=True)
    shutil.copytree(out, tmp / "data")  # the run's data.path: the same folder, its shards written again
    return tmp / "data"


def _shard_recipe(tmp):
    from pathlib import Path

    from zoo.train.config import load_recipe

    digits = Path(__file__).resolve().parents[2] / "configs" / "quickstart_digits.yaml"
    return load_recipe(str(digits), [
        "--model_kwargs.depths", "[1,1,1,1]", "--model_kwargs.dims", "[8,8,8,8]", "--data.image_size", "32",
        "--data.name", "wds", "--data.path", str(tmp / "data"), "--data.train_split", "train",
        "--train.epochs", "2", "--train.batch_size", "4", "--train.threads", "1",
        "--export.enabled", "false", "--checkpoint.every_steps", "1", "--sched.warmup_epochs", "0",
        "--output_dir", str(tmp / "run"),
    ])  # fmt: skip


SHARD_CHANGES = [  # (id, images per class and per shard now; the run had 4 and 5: 12 samples in 3 shards)
    ("images added", 5, 5, "holds 15 samples in 3 shards now, and the checkpoint's run trained on 12 samples in 3"),
    (
        "written again in other shards",
        4,
        4,
        "12 samples in 3 shards (shard 0: 4 samples) now, and the checkpoint's "
        "run trained on 12 samples in 3 shards (shard 0: 5 samples)",
    ),
    ("written again in fewer shards", 4, 6, "holds 12 samples in 2 shards now"),
]


@pytest.mark.parametrize(
    "per_class, per_shard, fragment", [c[1:] for c in SHARD_CHANGES], ids=[c[0] for c in SHARD_CHANGES]
)
def test_resuming_a_run_whose_shards_changed_is_refused_with_the_counts(
    tmp_path, monkeypatch, per_class, per_shard, fragment
):
    from zoo.train import loop
    from zoo.train.config import RecipeError

    _shards(tmp_path, 4, 5)
    real = loop._Run._after_step

    def killed(self, k, mean_loss):
        real(self, k, mean_loss)
        if self.global_step == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop._Run, "_after_step", killed)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_shard_recipe(tmp_path), progress=False)
    monkeypatch.setattr(loop._Run, "_after_step", real)
    _shards(tmp_path, per_class, per_shard)
    with pytest.raises(RecipeError) as e:
        loop.train(_shard_recipe(tmp_path), resume="auto", progress=False)
    assert "cannot resume" in str(e.value) and fragment in str(e.value)
    assert "start a new run" in str(e.value)
    _shards(tmp_path, 4, 5)  # the shards it trained on: the run continues to its end
    assert loop.train(_shard_recipe(tmp_path), resume="auto", progress=False)["steps"] == 6
