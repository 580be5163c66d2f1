"""Plain rendition of InfoBatch's sampler (NUS-HPC-AI-Lab/InfoBatch, ``infobatch/infobatch.py``: the ``InfoBatch``
dataset wrapper's ``update``, ``prune``, ``no_prune`` and ``reset_weights``, and ``IBSampler.reset``).

Their structure and arithmetic are kept: the scores start at 3 (``torch.ones(n) * 3``), the well-learned samples
are those scored below the mean (a float32 torch mean), ``int(keep_ratio * count)`` of them are drawn with
``np.random.choice(..., replace=False)`` from numpy's global generator, seeded with the sampler's iteration count
before every epoch (``np.random.seed(self.iterations)``), the kept ones are weighted ``1 / keep_ratio``, appended
after the samples kept whole and the list is shuffled with ``np.random.shuffle``; ``keep_ratio`` is
``min(1, max(0.1, 1 - prune_ratio))``. The sampler resets once when it is built (iteration 0) and again at every
``iter()``, so epoch ``e`` draws with seed ``e + 1`` and prunes while ``e + 1 <= num_epochs * delta``.
``update(values)`` writes the batch's (unweighted) losses as the samples' scores and returns the mean of the
weighted losses.

Two things of theirs are kept as they are and noted: the weights are reset to 1 only when the iteration count
equals ``num_epochs * delta + 1`` exactly (an integer), so with a fractional ``num_epochs * delta`` the last
pruned epoch's weights stay on during annealing (the zoo resets them: the paper trains on the full data,
unweighted, then); the DDP wrapper (``DistributedIBSampler``), which reshuffles the kept list with torch and
strides it by rank, is not rendered (the zoo cuts global batches into ranks' pieces instead).

``tests/train/test_data_pruning.py`` checks :class:`zoo.train.data_pruning.Pruner` against this.
"""

import numpy as np
import torch

__all__ = ["InfoBatchReference"]


class InfoBatchReference:
    """The ``InfoBatch`` wrapper and its ``IBSampler`` for ``n`` samples: :meth:`epoch` is one ``iter(sampler)``."""

    def __init__(self, n: int, num_epochs: int, prune_ratio: float = 0.5, delta: float = 0.875):
        self.n = n
        self.keep_ratio = min(1.0, max(1e-1, 1.0 - prune_ratio))
        self.num_epochs = num_epochs
        self.delta = delta
        self.scores = torch.ones(n) * 3
        self.weights = torch.ones(n)
        self.num_pruned_samples = 0
        self.stop_prune = num_epochs * delta
        self.iterations = 0
        self.sample_indices: list[int] = []
        self.reset()  # IBSampler.__init__

    # InfoBatch ------------------------------------------------------------------------------------------------
    def update(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        weights = self.weights[indices]
        self.scores[indices.long()] = values.detach().clone()
        return (values * weights).mean()

    def prune(self) -> list:
        well_learned_mask = (self.scores < self.scores.mean()).numpy()
        well_learned_indices = np.where(well_learned_mask)[0]
        remained_indices = np.where(~well_learned_mask)[0].tolist()
        selected_indices = np.random.choice(
            well_learned_indices, int(self.keep_ratio * len(well_learned_indices)), replace=False
        )
        self.reset_weights()
        if len(selected_indices) > 0:
            self.weights[selected_indices] = 1 / self.keep_ratio
            remained_indices.extend(selected_indices)
        self.num_pruned_samples += self.n - len(remained_indices)
        np.random.shuffle(remained_indices)
        return remained_indices

    def no_prune(self) -> list:
        samples_indices = list(range(self.n))
        np.random.shuffle(samples_indices)
        return samples_indices

    def reset_weights(self) -> None:
        self.weights[:] = 1

    # IBSampler ------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        np.random.seed(self.iterations)
        if self.iterations > self.stop_prune:
            if self.iterations == self.stop_prune + 1:
                self.reset_weights()
            self.sample_indices = self.no_prune()
        else:
            self.sample_indices = self.prune()
        self.iterations += 1

    def epoch(self) -> list[int]:
        """The next epoch's sample order (``iter(sampler)``)."""
        self.reset()
        return [int(i) for i in self.sample_indices]
