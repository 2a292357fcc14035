"""What a user sees of a run: metrics.jsonl, a rich console line per step, wandb, and learning curves.

Everything goes to the run directory: `metrics.jsonl` (one JSON object per step, the record),
`learning_curves.png` (reward, and entropy and mean ResT weight per region over steps) written at the
end, and a wandb run when `logging.wandb_project` is set (offline mode without an API key). Only the
rank that drives the run logs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from rest_megatron.algo.regions import Region
from rest_megatron.algo.weights import primary_region


def region_means(
    values: torch.Tensor, region_mask: torch.Tensor, loss_mask: torch.Tensor
) -> dict[str, float]:
    """Mean of `values` over trained tokens of each primary region
    ([B, S] inputs; regions with no token omitted)."""
    primary = primary_region(region_mask)
    out = {}
    for region in Region:
        selected = (primary == int(region)) & (loss_mask > 0)
        if selected.any():
            out[region.name.lower()] = float(values[selected].double().mean())
    return out


CONSOLE_KEYS = (
    "reward/mean",
    "eval/reward",
    "reward/answer",
    "loss",
    "entropy",
    "grad_norm",
    "clip_frac_low",
    "clip_frac_high",
    "logprob_drift",
    "tokens_per_s",
    "time/rollout",
    "time/update",
)
"""What the one console line per step shows; everything goes to metrics.jsonl."""


class RunLogger:
    """Append-only step log of a run; safe to reopen on resume (it appends)."""

    def __init__(
        self, run_dir: str | Path, *, wandb_project: str | None = None, config: dict[str, Any] | None = None
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self.started = time.monotonic()
        self._wandb = None
        if wandb_project:
            import wandb

            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
            self._wandb = wandb.init(
                project=wandb_project, dir=str(self.run_dir), config=config, mode=mode, resume="allow"
            )
        from rich.console import Console

        self.console = Console(highlight=False)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record one step: a JSON line, a console line and (if on) a wandb point."""
        record = {"step": step, "elapsed_s": round(time.monotonic() - self.started, 2), **metrics}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(record, step=step)
        shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in CONSOLE_KEYS if k in metrics)
        by_region = " ".join(
            f"{k[len('entropy/') :]} {v:.3g}" for k, v in metrics.items() if k.startswith("entropy/")
        )
        if by_region:
            shown += f"  [dim]H by region:[/dim] {by_region}"
        if metrics.get("skipped"):  # rl_step's marker: every advantage was zero
            shown += "  [yellow]no update: every advantage was zero (all groups had equal rewards)[/yellow]"
        self.console.print(f"[bold]step {step}[/bold]  {shown}  ({record['elapsed_s']:.0f}s)")

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after `step` (a resumed run redoes them), atomically."""
        kept = [r for r in self.records() if r["step"] <= step]
        if len(kept) == len(self.records()):
            return
        partial = self.path.with_suffix(".jsonl.partial")
        partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
        partial.replace(self.path)

    def records(self) -> list[dict[str, Any]]:
        """Every step logged so far in this run directory."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def plot(self) -> Path:
        """Write learning_curves.png: reward, entropy per region and mean weight per region over steps."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self.records()
        steps = [r["step"] for r in records]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for key, style in (("reward/mean", "-"), ("eval/reward", "o--")):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                axes[0].plot(*zip(*points), style, label=key)
        axes[0].set_title("reward")
        for axis, prefix in ((axes[1], "entropy/"), (axes[2], "weight/")):
            names = sorted({k[len(prefix) :] for r in records for k in r if k.startswith(prefix)})
            for name in names:
                axis.plot(steps, [r.get(prefix + name, float("nan")) for r in records], label=name)
            axis.set_title(f"{prefix[:-1]} by region")
        for axis in axes:
            axis.set_xlabel("step")
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=8)
        fig.tight_layout()
        out = self.run_dir / "learning_curves.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
