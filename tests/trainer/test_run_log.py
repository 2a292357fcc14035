"""The run log: JSON lines that reopen on resume, region means, and a learning-curve PNG."""

from __future__ import annotations

import json

import torch

from rest_megatron.algo.regions import Region, region_bit
from rest_megatron.trainer.run_log import RunLogger, region_means


def test_region_means_use_primary_regions_and_trained_tokens_only() -> None:
    region_mask = torch.tensor(
        [
            [
                region_bit(Region.TOOL_NAME) | region_bit(Region.FORMAT_TAG),
                region_bit(Region.ANSWER),
                region_bit(Region.ANSWER),
                region_bit(Region.REASONING),
            ]
        ]
    )
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    loss_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert region_means(values, region_mask, loss_mask) == {"tool_name": 1.0, "answer": 3.0}


def test_log_appends_across_reopen_and_plots(tmp_path) -> None:
    first = RunLogger(tmp_path)
    first.log(0, {"reward/mean": 0.1, "entropy/answer": 2.0, "weight/answer": 1.0})
    first.close()
    second = RunLogger(tmp_path)  # a resumed run appends
    second.log(1, {"reward/mean": 0.4, "entropy/answer": 1.5, "weight/answer": 1.1, "eval/reward": 0.3})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1] and lines[1]["reward/mean"] == 0.4
    png = second.plot()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_console_line_shows_entropy_by_region_and_truncate_drops_redone_steps(tmp_path) -> None:
    logger = RunLogger(tmp_path)
    with logger.console.capture() as captured:
        logger.log(
            1, {"reward/mean": 0.5, "entropy/tool_args": 1.25, "entropy/answer": 0.5, "tokens_per_s": 300.0}
        )
    line = " ".join(captured.get().split())  # the console wraps at its width
    assert "reward/mean 0.5" in line and "tool_args 1.25" in line and "answer 0.5" in line
    logger.log(2, {"reward/mean": 0.6})
    logger.truncate_after(1)  # a run resumed from the step-1 checkpoint redoes step 2
    assert [r["step"] for r in logger.records()] == [1]


def test_a_skipped_step_says_so_on_the_console(tmp_path) -> None:
    logger = RunLogger(tmp_path)
    with logger.console.capture() as captured:
        logger.log(1, {"reward/mean": 1.0, "skipped": 1.0})
        logger.log(2, {"reward/mean": 0.5, "loss": 0.1})
    first, second = (" ".join(chunk.split()) for chunk in captured.get().split("step ")[1:])
    assert "no update: every advantage was zero" in first
    assert "no update" not in second
