"""Bad model arguments and inputs, and honest profiles and cards (issue: reliability).

Each row is an input, the error it must raise and a fragment of the message; the profile and card checks assert
what a user reads: the same peak memory whatever ran first, MACs named MACs, no tracer warnings, plural-correct
and load-annotated latency lines.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cards import _latency_text

ROOT = Path(__file__).resolve().parents[1]

# small widths and one block per stage: the same code paths as the full models, built in milliseconds
SMALL = {
    "poolformer_s12": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "poolformerv2_s12": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "identityformer_s12": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "convformer_s18": dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "caformer_s18": dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "slak_tiny": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
}


def _small(name: str, **kwargs):
    return zoo.create_model(name, num_classes=5, **SMALL.get(name, {}), **kwargs).eval()


@pytest.mark.parametrize("name", list(SMALL) + ["sret_tiny"])
def test_an_empty_batch_gives_an_empty_batch(name):
    model = _small(name) if name in SMALL else zoo.create_model(name, num_classes=5).eval()
    size = 32 if name in SMALL else 224
    with torch.no_grad():
        out = model(torch.zeros(0, 3, size, size))
        feats = model.forward_intermediates(torch.zeros(0, 3, size, size), intermediates_only=True)
    assert out.shape == (0, 5)
    assert all(f.shape[0] == 0 for f in feats)


BAD_ARGS = [
    # (model, kwargs, error, message fragment)
    ("poolformer_s12", dict(drop_path_rate=2.0), ValueError, "drop_path_rate is a probability in [0, 1)"),
    ("convformer_s18", dict(drop_path_rate=-0.1), ValueError, "drop_path_rate is a probability in [0, 1)"),
    ("caformer_s18", dict(drop_rate=1.0), ValueError, "drop_rate is a probability in [0, 1)"),
    ("poolformerv2_s12", dict(head_dropout=1.5), ValueError, "head_dropout is a probability in [0, 1)"),
    ("slak_tiny", dict(drop_path_rate=2.0), ValueError, "drop_path_rate is a probability in [0, 1)"),
    ("slak_tiny", dict(drop_rate="0.1"), ValueError, "drop_rate is a probability in [0, 1)"),
    ("sret_tiny", dict(drop_path_rate=1.0), ValueError, "drop_path_rate is a probability in [0, 1)"),
]


@pytest.mark.parametrize("name,kwargs,error,fragment", BAD_ARGS, ids=[f"{r[0]}-{r[1]}" for r in BAD_ARGS])
def test_bad_arguments_are_refused_at_build_time(name, kwargs, error, fragment):
    with pytest.raises(error) as info:
        zoo.create_model(name, **SMALL.get(name, {}), **kwargs)
    assert fragment in str(info.value)


BAD_INPUTS = [
    # (model, input shape, message fragment)
    ("slak_tiny", (1, 3, 16, 16), "needs >= 32x32"),
    ("poolformer_s12", (1, 3, 16, 16), "needs >= 32x32"),
    ("slak_tiny", (1, 1, 32, 32), "channel"),
]


@pytest.mark.parametrize("name,shape,fragment", BAD_INPUTS, ids=[f"{r[0]}-{r[1]}" for r in BAD_INPUTS])
def test_bad_inputs_are_named(name, shape, fragment):
    model = _small(name)
    with pytest.raises(ValueError) as info, torch.no_grad():
        model(torch.zeros(shape))
    assert fragment in str(info.value)


def test_peak_memory_does_not_depend_on_latency_running_first():
    model = zoo.create_model("poolformer_s12").eval()
    alone = zoo.profile(model, memory=True).peak_memory["bytes"]
    after = zoo.profile(model, latency=True, memory=True, runs=5, warmup=1).peak_memory["bytes"]
    assert alone > 2**20 and after > 2**20, (alone, after)  # one 224x224 forward works on megabytes
    assert 0.5 < after / alone < 2.0, (alone, after)


def test_breakdown_names_its_column_macs():
    table = zoo.profile(_small("poolformer_s12"), input_size=(3, 32, 32), breakdown=True).module_table
    assert "#macs" in table and "#flops" not in table


def test_lm_profile_fits_a_short_context():
    model = zoo.create_model(
        "mobilellm_125m",
        num_hidden_layers=1,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
        max_position_embeddings=128,
    )
    prof = zoo.profile(model)
    assert prof.input_size == (1, 127) and prof.lm["seq_len"] == 127


def test_profiling_prints_no_tracer_deprecation():
    code = (
        "import warnings; warnings.simplefilter('always'); import zoo, zoo.train.metrics; "
        "zoo.profile('poolformer_s12', input_size=(3, 64, 64), breakdown=True)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.jit" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "summary,present,absent",
    [
        (dict(latency_ms=3.0, threads=1), ["1 thread,"], ["1 threads"]),
        (dict(latency_ms=3.0, threads=2, latency_runs=20), ["of 20 runs", "2 threads"], []),
        (dict(latency_ms=3.0, threads=2, load_average=0.1, cores=2), ["load average 0.10 on 2 cores"], ["busy"]),
        (dict(latency_ms=3.0, threads=2, load_average=3.5, cores=2), ["a busy machine"], []),
    ],
)
def test_card_latency_line(summary, present, absent):
    text = _latency_text(summary)
    assert all(p in text for p in present), text
    assert not any(a in text for a in absent), text


def test_exported_files_have_the_umask_mode(tmp_path):
    from zoo.publish import export_pretrained

    umask = os.umask(0o022)
    try:
        out = export_pretrained(
            _small("poolformer_s12"), tmp_path / "export", model_name="poolformer_s12", latency_runs=0
        )
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in Path(out).iterdir()}
    assert {"model.safetensors", "config.json", "README.md"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes
