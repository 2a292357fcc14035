"""Turn scored trajectories into this rank's padded micro-batches, aligned to the predicted token.

A trajectory is one growing list of token ids with, per token, the sampling logprob, the loss mask
(1 where the policy sampled the token) and the region mask. Training predicts token t+1 from tokens
≤ t, so every per-token field is shifted by one: `tokens = ids[:-1]`, `labels = ids[1:]` and the
masks, logprobs and regions of the labels. Rows are split contiguously over data-parallel ranks (the
step keeps its global order, so the gradient does not depend on the DP size) and padded to one length
for the whole step, because pipeline parallelism exchanges activations of a fixed shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

MicroBatch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainingSample:
    """One trajectory as the trainer sees it (all lists have one entry per token)."""

    token_ids: Sequence[int]
    loss_mask: Sequence[int]
    sampling_logprobs: Sequence[float]
    """Logprob of each sampled token under the rollout engine; anything (e.g. 0) where loss_mask is 0."""
    region_mask: Sequence[int]
    advantage: float

    def __post_init__(self) -> None:
        lengths = {len(self.token_ids), len(self.loss_mask), len(self.sampling_logprobs), len(self.region_mask)}
        assert len(lengths) == 1, f"per-token fields disagree in length: {lengths}"


def padded_length(samples: Sequence[TrainingSample], multiple: int = 8) -> int:
    """The step's common sequence length (labels per row), rounded up to `multiple`."""
    longest = max(len(s.token_ids) for s in samples) - 1
    return max(multiple, math.ceil(longest / multiple) * multiple)


def _row(sample: TrainingSample, length: int, pad_id: int) -> dict[str, torch.Tensor]:
    ids = torch.full((length + 1,), pad_id, dtype=torch.long)
    ids[: len(sample.token_ids)] = torch.tensor(sample.token_ids, dtype=torch.long)
    n = len(sample.token_ids) - 1  # number of real labels

    def shifted(values: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros(length, dtype=dtype)
        out[:n] = torch.tensor(values[1:], dtype=dtype)
        return out

    loss_mask = shifted(sample.loss_mask, torch.float32)
    return {
        "tokens": ids[:-1],
        "labels": ids[1:],
        "loss_mask": loss_mask,
        "sampling_logprobs": shifted(sample.sampling_logprobs, torch.float32),
        "region_mask": shifted(sample.region_mask, torch.long),
        "advantages": torch.full((length,), float(sample.advantage)) * (loss_mask > 0),
    }


def make_microbatches(
    samples: Sequence[TrainingSample],
    *,
    dp_rank: int,
    dp_size: int,
    micro_batch_size: int,
    pad_id: int,
    length_multiple: int = 8,
) -> list[MicroBatch]:
    """This DP rank's micro-batches of the step. Rows are padded up so every rank gets the same count."""
    if not samples:
        raise ValueError("a training step needs at least one trajectory; check the rollout and dynamic sampling")
    length = padded_length(samples, length_multiple)
    per_rank = math.ceil(len(samples) / dp_size / micro_batch_size) * micro_batch_size
    rows = [_row(s, length, pad_id) for s in samples]
    empty = {k: torch.zeros_like(v) for k, v in rows[0].items()}  # loss_mask 0: contributes nothing
    rows += [empty] * (per_rank * dp_size - len(rows))
    local = rows[dp_rank * per_rank : (dp_rank + 1) * per_rank]
    return [
        {key: torch.stack([row[key] for row in local[i : i + micro_batch_size]]) for key in local[0]}
        for i in range(0, per_rank, micro_batch_size)
    ]
