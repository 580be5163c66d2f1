"""Counts and sizes a user gives are checked, and what is recorded is what was used: ``eval.py`` counts below 1 are
one line and status 2; a pte's ``prompt_chunk`` past the context is recorded as the chunk it exports; chat-template
filters cannot build huge strings; a resumed run whose shards changed says so with the counts.
"""

import pytest

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
