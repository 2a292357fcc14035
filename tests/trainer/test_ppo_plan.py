"""The driver's mini-batch plan (`stages.plan_updates`) and how a step's update metrics are combined."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rest_megatron.trainer.batching import TrainingSample
from rest_megatron.trainer.stages import combine_update_metrics, plan_updates, update_seed


def _samples(num: int) -> list[TrainingSample]:
    rng = random.Random(num)
    out = []
    for index in range(num):
        n = rng.randint(3, 40)
        out.append(
            TrainingSample(
                token_ids=[index] * n,
                loss_mask=[1] * n,
                sampling_logprobs=[0.0] * n,
                region_mask=[1] * n,
                advantage=float(index),
            )
        )
    return out


@pytest.mark.parametrize(
    ("num", "updates", "dp", "micro", "packed"),
    [
        (32, 2, 1, 4, False),
        (32, 8, 2, 2, False),
        (13, 4, 2, 1, False),
        (3, 8, 1, 1, False),
        (24, 2, 2, 2, True),
    ],
)
def test_every_trajectory_is_trained_once_per_epoch_in_a_shuffled_even_split(
    num: int, updates: int, dp: int, micro: int, packed: bool
) -> None:
    samples = _samples(num)
    plan = plan_updates(
        samples,
        num_updates=updates,
        seed=update_seed(7, 3),
        dp_size=dp,
        micro_batch_size=micro,
        length_multiple=8,
        packed=packed,
    )
    assert len(plan) == dp and len({len(p) for p in plan}) == 1  # every rank makes the same number of updates
    made = len(plan[0])
    assert made == min(updates, num)
    per_update = [[s.advantage for rank in plan for s in rank[u].samples] for u in range(made)]
    assert sorted(a for update in per_update for a in update) == [float(i) for i in range(num)]
    assert max(map(len, per_update)) - min(map(len, per_update)) <= 1
    assert [a for update in per_update for a in update] != [float(i) for i in range(num)]  # shuffled
    for u in range(made):  # every DP rank pads to the same rows and all rows share one length
        assert len({rank[u].num_rows for rank in plan}) == 1
        assert len({rank[u].length for rank in plan}) == 1
    again = plan_updates(
        samples,
        num_updates=updates,
        seed=update_seed(7, 3),
        dp_size=dp,
        micro_batch_size=micro,
        length_multiple=8,
        packed=packed,
    )
    assert again == plan  # a function of the seed: a resumed run splits the step the same way


def test_the_split_depends_on_the_step() -> None:
    samples = _samples(32)
    first, second = (
        plan_updates(
            samples,
            num_updates=2,
            seed=update_seed(7, step),
            dp_size=1,
            micro_batch_size=4,
            length_multiple=8,
            packed=False,
        )
        for step in (3, 4)
    )
    assert first != second


def test_update_metrics_combine_as_mean_extremes_and_last() -> None:
    per_update = [
        {
            "loss": 1.0,
            "clip_frac_high": 0.0,
            "ratio_max": 1.0,
            "ratio_min": 1.0,
            "ratio_std": 0.0,
            "lr": 1e-3,
        },
        {
            "loss": 3.0,
            "clip_frac_high": 0.5,
            "ratio_max": 1.7,
            "ratio_min": 0.6,
            "ratio_std": 0.2,
            "lr": 2e-3,
        },
    ]
    out = combine_update_metrics(per_update)
    assert out["num_updates"] == 2.0
    assert out["loss"] == 2.0 and out["clip_frac_high"] == 0.25 and out["ratio_std"] == pytest.approx(0.1)
    assert (out["ratio_max"], out["ratio_min"], out["lr"]) == (1.7, 0.6, 2e-3)
    assert (
        out["clip_frac_high/last"] == 0.5
        and out["ppo/u1/clip_frac_high"] == 0.0
        and out["ppo/u2/ratio_std"] == 0.2
    )
    assert "loss/last" not in out


def test_the_lr_schedule_horizon_counts_every_update_of_every_epoch() -> None:
    from rest_megatron.config import load_config
    from rest_megatron.trainer.optimizer import lr_schedule_steps

    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml")
    config = load_config(recipe, ["optimizer.mini_batch_size=16", "optimizer.ppo_epochs=3"])
    assert config.num_updates_per_step == 32 // 16 * 3
    horizon = lr_schedule_steps(config.optimizer, updates_per_step=config.num_updates_per_step)
    assert horizon == config.optimizer.num_steps * 6
