"""CPU benchmark of the zoo's SReT against a plain rendition of the authors' forward, on the same weights.

The peer is :mod:`zoo.bench.reference.sret` (manual attention per group, the authors' permutation and reshaping
steps, the shared blocks applied from the authors' aliased state dict). Both run in fp32, eval, under
``torch.inference_mode``; the authors' token permutations come from the global RNG, seeded with 0 before every
pass, and the zoo's seeded permutations (seed 0) reproduce them, so the outputs are compared directly. Timing
rounds alternate between the two. Target: zoo >= 1.5x at batch 32.

    zoo bench sret --models sret_tiny,sret_small [--batch-sizes 1,32] [--runs N]
"""

from collections.abc import Sequence

import torch

from ..factory import create_model
from ..models.sret import checkpoint_filter_fn
from ..weights import load_state_dict_checked
from .harness import Row, default_runs, output_diff, peer_row, time_interleaved
from .reference.sret import make_authors_state_dict, reference_forward

PEER = "authors"
DEFAULT_MODELS = ("sret_tiny", "sret_small")
DEFAULT_BATCH_SIZES = (1, 32)
TARGET = {32: 1.5}
TOLERANCE = 1e-4


def compare(name: str, batch_sizes: Sequence[int], runs: int | None = None, warmup: int = 2) -> list[Row]:
    """The zoo's SReT against the authors' forward on the same weights, at each batch size."""
    state_dict = make_authors_state_dict(name, seed=0)
    model = create_model(name)
    load_state_dict_checked(model, dict(state_dict), "the authors' layout", filter_fn=checkpoint_filter_fn)
    model.eval()
    size = model.pretrained_cfg["input_size"][-1]

    def authors(x):
        torch.manual_seed(0)  # the authors draw their token permutations from the global RNG
        return reference_forward(name, state_dict, x)

    rows = []
    for bs in batch_sizes:
        n = runs or default_runs(bs, base=12, floor=3)
        x = torch.randn(bs, 3, size, size, generator=torch.Generator().manual_seed(bs))
        times = time_interleaved(
            {PEER: lambda x=x: authors(x), "zoo": lambda x=x: model(x)}, n, warmup, desc=f"{name} b{bs}"
        )
        with torch.inference_mode():
            diff = output_diff(model(x), authors(x))
        rows.append(
            peer_row(
                name,
                f"batch {bs}",
                PEER,
                "zoo",
                "img/s",
                times[PEER],
                times["zoo"],
                n,
                TARGET.get(bs, 1.0),
                work=bs,
                **diff,
            )
        )
    return rows
