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
