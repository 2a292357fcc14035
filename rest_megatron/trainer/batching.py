"""Turn scored trajectories into this rank's padded micro-batches, aligned to the predicted token.

A trajectory is one growing list of token ids with, per token, the sampling logprob, the loss mask
(1 where the policy sampled the token) and the region mask. Training predicts token t+1 from tokens
≤ t, so every per-token field is shifted by one: `tokens = ids[:-1]`, `labels = ids[1:]` and the
masks, logprobs and regions of the labels. Rows are split contiguously over data-parallel ranks (the
step keeps its global order, so the gradient does not depend on the DP size) and padded to one length
for the whole step, because pipeline parallelism exchanges activations of a fixed shape.

Packed micro-batches (`pack_microbatches`) put several trajectories end to end in one row of
`micro_batch_size × the step's padded length` tokens instead of padding each one, and record where each
starts in `cu_seqlens` ([segments + 1] int32; segments past `num_trajectories` are padding):
attention stays within a segment (THD on GPU, a block-diagonal causal mask on CPU) and
`position_ids` restart at every segment.
Packing changes which tokens share a row, so anything normalized per row must go through
`unpack_rows`/`pack_rows` to stay per trajectory.
"""

from __future__ import annotations

import itertools
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
        lengths = {
            len(self.token_ids),
            len(self.loss_mask),
            len(self.sampling_logprobs),
            len(self.region_mask),
        }
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


@dataclass(frozen=True)
class Share:
    """What one DP rank trains on in one optimizer update: its trajectories, in the update's order, and
    the shape of its rows. The driver assigns shares (`split_over_dp`) and sends each rank only its own."""

    samples: list[TrainingSample]
    num_rows: int
    """Rows after padding with empty ones (padded rows, or packed rows): equal on every DP rank."""
    length: int
    """Labels per padded row (the step's `padded_length`); a packed row holds micro_batch_size × this."""


def split_over_dp(
    samples: Sequence[TrainingSample],
    *,
    dp_size: int,
    micro_batch_size: int,
    length: int,
    packed: bool = False,
) -> list[Share]:
    """One update's trajectories split contiguously over DP ranks (the update keeps its global order,
    so the gradient does not depend on the DP size); entry r is DP rank r's share."""
    if not samples:
        raise ValueError(
            "a training step needs at least one trajectory; check the rollout and dynamic sampling"
        )
    if packed:
        bins = _bins(samples, micro_batch_size * length)
        per_rank = math.ceil(len(bins) / dp_size)
        return [
            Share([s for b in bins[r * per_rank : (r + 1) * per_rank] for s in b], per_rank, length)
            for r in range(dp_size)
        ]
    per_rank = math.ceil(len(samples) / dp_size / micro_batch_size) * micro_batch_size
    return [Share(list(samples[r * per_rank : (r + 1) * per_rank]), per_rank, length) for r in range(dp_size)]


def share_microbatches(
    share: Share,
    *,
    micro_batch_size: int,
    pad_id: int,
    packed: bool = False,
    device: torch.device | str = "cpu",
) -> list[MicroBatch]:
    """A share's micro-batches on `device`: padded rows stacked micro_batch_size at a time,
    or one packed row each."""
    if packed:
        capacity = micro_batch_size * share.length
        bins = _bins(share.samples, capacity)  # the driver's bins again: next-fit restarts at a bin boundary
        bins += [[]] * (share.num_rows - len(bins))
        return [to_device(_packed_row(b, capacity, pad_id), device) for b in bins]
    rows = [_row(s, share.length, pad_id) for s in share.samples]
    rows += [_padding_row(share.length, pad_id)] * (share.num_rows - len(rows))  # loss_mask 0: trains nothing
    return [
        to_device(
            {key: torch.stack([row[key] for row in rows[i : i + micro_batch_size]]) for key in rows[0]},
            device,
        )
        for i in range(0, share.num_rows, micro_batch_size)
    ]


def to_device(batch: MicroBatch, device: torch.device | str) -> MicroBatch:
    """The micro-batch with every tensor on `device` (the runtime's: where the model and loss run)."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def make_microbatches(
    samples: Sequence[TrainingSample],
    *,
    dp_rank: int,
    dp_size: int,
    micro_batch_size: int,
    pad_id: int,
    length_multiple: int = 8,
    device: torch.device | str = "cpu",
) -> list[MicroBatch]:
    """This DP rank's micro-batches of the step, on `device`. Rows are padded up so every rank
    gets the same count."""
    if not samples:
        raise ValueError(
            "a training step needs at least one trajectory; check the rollout and dynamic sampling"
        )
    shares = split_over_dp(
        samples,
        dp_size=dp_size,
        micro_batch_size=micro_batch_size,
        length=padded_length(samples, length_multiple),
    )
    return share_microbatches(
        shares[dp_rank], micro_batch_size=micro_batch_size, pad_id=pad_id, device=device
    )


def pack_microbatches(
    samples: Sequence[TrainingSample],
    *,
    dp_rank: int,
    dp_size: int,
    micro_batch_size: int,
    pad_id: int,
    length_multiple: int = 8,
    device: torch.device | str = "cpu",
) -> list[MicroBatch]:
    """This DP rank's packed micro-batches on `device`: [1, L] rows holding whole trajectories back to back.

    L = micro_batch_size × the step's padded length, so a packed row never holds fewer trajectories
    than a padded micro-batch would. Trajectories keep their global order and fill rows next-fit (one
    open row; the next trajectory that does not fit starts a new one); rows are split contiguously over
    DP ranks, empty rows (loss_mask 0) even out the count.
    """
    if not samples:
        raise ValueError(
            "a training step needs at least one trajectory; check the rollout and dynamic sampling"
        )
    shares = split_over_dp(
        samples,
        dp_size=dp_size,
        micro_batch_size=micro_batch_size,
        length=padded_length(samples, length_multiple),
        packed=True,
    )
    return share_microbatches(
        shares[dp_rank], micro_batch_size=micro_batch_size, pad_id=pad_id, packed=True, device=device
    )


def _bins(samples: Sequence[TrainingSample], capacity: int) -> list[list[TrainingSample]]:
    """Next-fit in order: a new row starts when the next trajectory would overflow the current one."""
    bins: list[list[TrainingSample]] = [[]]
    used = 0
    for sample in samples:
        n = len(sample.token_ids) - 1
        if used + n > capacity and bins[-1]:
            bins.append([])
            used = 0
        bins[-1].append(sample)
        used += n
    return bins if bins[0] else []


def _packed_row(samples: Sequence[TrainingSample], capacity: int, pad_id: int) -> MicroBatch:
    lengths = [len(s.token_ids) - 1 for s in samples]
    rows = [_row(s, n, pad_id) for s, n in zip(samples, lengths)]
    if capacity > sum(lengths):  # the rest of the row: one padding segment that trains nothing
        lengths.append(capacity - sum(lengths))
        rows.append(_padding_row(lengths[-1], pad_id))
    batch = {key: torch.cat([row[key] for row in rows])[None] for key in rows[0]}  # [1, L]
    batch["position_ids"] = torch.cat([torch.arange(n) for n in lengths])[None]
    batch["cu_seqlens"] = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    batch["num_trajectories"] = torch.tensor(len(samples))  # the segments after these are padding
    return batch


def _padding_row(length: int, pad_id: int) -> dict[str, torch.Tensor]:
    zeros = torch.zeros(length)
    pad = torch.full((length,), pad_id, dtype=torch.long)
    return {
        "tokens": pad,
        "labels": pad,
        "loss_mask": zeros,
        "sampling_logprobs": zeros,
        "region_mask": torch.zeros(length, dtype=torch.long),
        "advantages": zeros,
    }


def unpack_rows(values: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[1, L] packed per-token values -> [segments, longest] rows, zero-padded
    (the inverse of `pack_rows`)."""
    bounds = cu_seqlens.tolist()
    lengths = [b - a for a, b in zip(bounds, bounds[1:])]
    out = values.new_zeros(len(lengths), max(lengths))
    for i, (start, n) in enumerate(zip(bounds, lengths)):
        out[i, :n] = values[0, start : start + n]
    return out


def pack_rows(rows: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[segments, longest] rows -> [1, L] packed per-token values, following `cu_seqlens`."""
    bounds = cu_seqlens.tolist()
    return torch.cat([rows[i, : b - a] for i, (a, b) in enumerate(zip(bounds, bounds[1:]))])[None]
