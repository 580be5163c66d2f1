"""``peer_row``: the one constructor of a peer-against-zoo row gives, for the same timings, the very rows (and the same
JSON bytes) the bench modules built by hand before it: rates as ``work / median seconds``, per worker, per phase."""

import json
import statistics
from dataclasses import asdict

from zoo.bench.harness import Row, format_rows, peer_row

PEER = "peer"
# odd, uneven passes so that a formula computed in another order would round differently
PASSES = {
    PEER: {"total": [0.0137, 0.0129, 0.0151, 0.0133, 0.0142]},
    "zoo": {"total": [0.0113, 0.0121, 0.0109, 0.0117, 0.0127]},
    "other": {"total": [0.0171, 0.0163, 0.0169]},
}
PHASES = {
    PEER: {"prefill": [0.31, 0.29, 0.33], "decode": [1.7, 1.9, 1.8], "total": [2.01, 2.19, 2.13]},
    "mor": {"prefill": [0.27, 0.26, 0.3], "decode": [1.3, 1.45, 1.4], "total": [1.57, 1.71, 1.7]},
}
DIFF = {"max_abs_diff": 3.1e-6, "rel_diff": 2.7e-7}


def med(side, phase="total"):
    return statistics.median(side[phase])


def same(row: Row, want: Row) -> None:
    assert json.dumps({**asdict(row), "ratio": row.ratio}) == json.dumps({**asdict(want), "ratio": want.ratio})
    assert format_rows([row]) == format_rows([want])


def test_timed_sides_give_work_over_median_and_both_sides_passes():  # vision, sret, slak, train, lm prefill
    bs = 7
    want = Row(
        "m",
        f"batch {bs}",
        PEER,
        "zoo",
        "img/s",
        bs / med(PASSES[PEER]),
        bs / med(PASSES["zoo"]),
        5,
        1.1,
        **DIFF,
        extra={"note": 1},
        times_s={PEER: PASSES[PEER]["total"], "zoo": PASSES["zoo"]["total"]},
    )
    row = peer_row(
        "m",
        f"batch {bs}",
        PEER,
        "zoo",
        "img/s",
        PASSES[PEER],
        PASSES["zoo"],
        5,
        1.1,
        work=bs,
        **DIFF,
        extra={"note": 1},
    )
    same(row, want)
    assert row == want and list(row.times_s) == [PEER, "zoo"]


def test_one_candidate_of_several():  # slak: the peer and one key of many, no target
    want = Row(
        "m",
        "batch 3",
        PEER,
        "other",
        "img/s",
        3 / med(PASSES[PEER]),
        3 / med(PASSES["other"]),
        3,
        None,
        times_s={PEER: PASSES[PEER]["total"], "other": PASSES["other"]["total"]},
    )
    same(peer_row("m", "batch 3", PEER, "other", "img/s", PASSES[PEER], PASSES["other"], 3, work=3), want)


def test_a_phase():  # mor: prefill and decode tokens of the same timed passes
    for phase, tokens in (("prefill", 4 * 128), ("decode", 4 * 32)):
        want = Row(
            "mor_135m",
            f"{phase} batch 4",
            PEER,
            "mor",
            "tok/s",
            tokens / med(PHASES[PEER], phase),
            tokens / med(PHASES["mor"], phase),
            3,
            extra={"blocks": 10},
            times_s={PEER: PHASES[PEER][phase], "mor": PHASES["mor"][phase]},
        )
        row = peer_row(
            "mor_135m",
            f"{phase} batch 4",
            PEER,
            "mor",
            "tok/s",
            PHASES[PEER],
            PHASES["mor"],
            3,
            work=tokens,
            phase=phase,
            extra={"blocks": 10},
        )
        same(row, want)


def test_per_worker():  # the loader: images / median / workers
    images, workers = 10_000, 3
    want = Row(
        f"{images} images 64px",
        f"{workers} worker(s)",
        PEER,
        "zoo",
        "img/s/worker",
        images / med(PASSES[PEER]) / workers,
        images / med(PASSES["zoo"]) / workers,
        3,
        1.5,
        times_s={PEER: PASSES[PEER]["total"], "zoo": PASSES["zoo"]["total"]},
    )
    row = peer_row(
        f"{images} images 64px",
        f"{workers} worker(s)",
        PEER,
        "zoo",
        "img/s/worker",
        PASSES[PEER],
        PASSES["zoo"],
        3,
        1.5,
        work=images,
        per=workers,
    )
    same(row, want)


def test_a_label_other_than_the_timed_key_and_given_passes():  # prune ("pruned 50% MACs"), lm decode (+ floor)
    times = {"dense": PASSES[PEER], "pruned": PASSES["zoo"], "floor": PASSES["other"]}
    every = {k: v["total"] for k, v in times.items()}
    want = Row(
        "m",
        "batch 32",
        "dense",
        "pruned 50% MACs",
        "img/s",
        32 / med(times["dense"]),
        32 / med(times["pruned"]),
        4,
        1.3,
        extra={"dense ms": 1e3 * med(times["dense"])},
        times_s=every,
    )
    row = peer_row(
        "m",
        "batch 32",
        "dense",
        "pruned 50% MACs",
        "img/s",
        times["dense"],
        times["pruned"],
        4,
        1.3,
        work=32,
        extra={"dense ms": 1e3 * med(times["dense"])},
        times_s=every,
    )
    same(row, want)


def test_rates_as_measured():  # deployed and formats: rates already computed, nan for a peer not measured
    rate = {"zoo eager": 7 / med(PASSES[PEER]), "zoo onnxruntime": 7 / med(PASSES["zoo"])}
    want = Row(
        "m", "batch 7", "zoo eager", "zoo onnxruntime", "img/s", rate["zoo eager"], rate["zoo onnxruntime"], 5, 1.0
    )
    same(peer_row("m", "batch 7", "zoo eager", "zoo onnxruntime", "img/s", *rate.values(), 5, 1.0), want)
    want = Row("m", "decode 32 int4", "-", "zoo int4 compiled", "tok/s", float("nan"), 123.4, 3, extra={"x": 1})
    same(
        peer_row("m", "decode 32 int4", "-", "zoo int4 compiled", "tok/s", float("nan"), 123.4, 3, extra={"x": 1}), want
    )


def test_a_timed_peer_against_a_measured_rate():  # train --e2e: the model-only step against train.py's own rate
    want = Row("m", "b 8 10 steps", "model only", "train.py", "img/s", 8 / med(PASSES[PEER]), 512.25, 10, 0.9)
    row = peer_row("m", "b 8 10 steps", "model only", "train.py", "img/s", PASSES[PEER], 512.25, 10, 0.9, work=8)
    same(row, want)
    assert row.times_s == {}
