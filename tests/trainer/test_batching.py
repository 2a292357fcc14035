"""Trajectories → micro-batches: the shift to predicted tokens, the DP split, padding that trains nothing."""

from __future__ import annotations

import random

import pytest
import torch

from rest_megatron.trainer.batching import TrainingSample, make_microbatches, padded_length


def _sample(rng: random.Random, index: int) -> TrainingSample:
    n = rng.randint(3, 30)
    mask = [0] * 2 + [rng.randint(0, 1) for _ in range(n - 2)]
    return TrainingSample(
        token_ids=[index * 100 + t for t in range(n)],
        loss_mask=mask,
        sampling_logprobs=[-0.01 * t if m else 0.0 for t, m in enumerate(mask)],
        region_mask=[1 << (t % 6) for t in range(n)],
        advantage=float(index) - 2.5,
    )


@pytest.mark.parametrize(("num", "dp", "micro"), [(6, 1, 2), (6, 2, 2), (5, 2, 2), (7, 4, 1)])
def test_rows_keep_global_order_and_labels_are_shifted(num: int, dp: int, micro: int) -> None:
    rng = random.Random(num * 10 + dp)
    samples = [_sample(rng, i) for i in range(num)]
    per_rank = [
        make_microbatches(samples, dp_rank=r, dp_size=dp, micro_batch_size=micro, pad_id=-1)
        for r in range(dp)
    ]
    assert len({len(mbs) for mbs in per_rank}) == 1  # every rank runs the same number of micro-batches
    rows = [{k: mb[k][i] for k in mb} for mbs in per_rank for mb in mbs for i in range(mb["tokens"].shape[0])]
    length = padded_length(samples)
    assert length % 8 == 0
    for sample, row in zip(samples, rows):
        n = len(sample.token_ids) - 1
        assert row["tokens"][:n].tolist() == list(sample.token_ids[:-1])
        assert row["labels"][:n].tolist() == list(sample.token_ids[1:])
        assert row["loss_mask"][:n].tolist() == [float(m) for m in sample.loss_mask[1:]]
        assert row["loss_mask"][n:].sum() == 0 and row["advantages"][n:].abs().sum() == 0
        assert torch.equal(row["advantages"][:n] != 0, row["loss_mask"][:n] > 0)
        assert row["region_mask"][:n].tolist() == list(sample.region_mask[1:])
    for row in rows[num:]:  # padding rows exist only to even out the ranks, and train nothing
        assert row["loss_mask"].sum() == 0


def test_field_lengths_must_agree() -> None:
    with pytest.raises(AssertionError, match="disagree in length"):
        TrainingSample(
            token_ids=[1, 2, 3],
            loss_mask=[0, 1],
            sampling_logprobs=[0, 0, 0],
            region_mask=[0, 0, 0],
            advantage=0.0,
        )


def test_an_empty_step_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least one trajectory"):
        make_microbatches([], dp_rank=0, dp_size=1, micro_batch_size=1, pad_id=0)
