"""Failed and aborted trajectories: masked out of the loss, counted per status, and a step with too
many of them stops the run with the first one's reason."""

from __future__ import annotations

import pytest
import torch

from rest_megatron.rollout.trajectory import Trajectory, TrajectoryStatus
from rest_megatron.rollout.types import RolloutFailed
from rest_megatron.trainer.rollout_stage import rollout_status_metrics
from rest_megatron.trainer.stages import to_samples


def _trajectory(status: TrajectoryStatus, reason: str = "", error: str | None = None) -> Trajectory:
    t = Trajectory(sample_id=f"s-{status.value}", messages=[])
    t.append("prompt", [1, 2, 3], turn=-1)
    t.append("assistant", [4, 5], logprobs=[-0.5, -0.25], region_masks=[1, 1], turn=0)
    if error:
        t.errors.append(error)
    t.finish(status, reason or status.value)
    return t


def test_failed_and_aborted_trajectories_train_no_token() -> None:
    statuses = [
        TrajectoryStatus.ANSWERED,
        TrajectoryStatus.FAILED,
        TrajectoryStatus.ABORTED,
        TrajectoryStatus.TRUNCATED,
    ]
    samples = to_samples(
        [_trajectory(s) for s in statuses],
        torch.tensor([1.0, -1.0, 0.5, -0.5]),
        torch.ones(4, dtype=torch.bool),
    )
    assert [sum(s.loss_mask) for s in samples] == [2, 0, 0, 2]
    assert samples[1].sampling_logprobs == [0.0] * 5  # nothing of the failed rollout reaches the loss
    assert [s.advantage for s in samples] == [1.0, -1.0, 0.5, -0.5]  # rows stay: the groups keep their size


def test_statuses_are_counted_and_too_many_failures_stop_the_step() -> None:
    batch = [_trajectory(TrajectoryStatus.ANSWERED)] * 6 + [
        _trajectory(
            TrajectoryStatus.FAILED, "inference failed", "ServerUnavailable: no inference server is healthy"
        ),
        _trajectory(TrajectoryStatus.ABORTED, "turn 0 aborted by http://a"),
    ]
    metrics = rollout_status_metrics(batch, max_failed_fraction=0.25)
    assert metrics["rollout/answered_frac"] == pytest.approx(0.75)
    assert metrics["rollout/failed_frac"] == pytest.approx(0.125)
    assert metrics["rollout/aborted_frac"] == pytest.approx(0.125)
    assert metrics["rollout/untrained_frac"] == pytest.approx(0.25)
    with pytest.raises(RolloutFailed, match="2 of 8.*no inference server is healthy"):
        rollout_status_metrics(batch, max_failed_fraction=0.2)
