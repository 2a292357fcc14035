"""ResT against GRPO on the tiny task: four weighting arms, several seeds each, in one run.

    nice -n 10 python benchmarks/rest_vs_grpo.py --jobs 2                   # 4 arms x 5 seeds
    python benchmarks/rest_vs_grpo.py --seeds 0 1 --arms rest grpo data.num_prompts_per_step=4

Arms (everything else is the recipe's, `recipes/tiny-cpu-weak.yaml` by default):
- `rest`: paper mode, the region curricula as the recipe sets them (compressed to the run's length);
- `grpo`: uniform token weights;
- `static`: paper mode with constant region weights, each the mean of its curriculum over the run, so
  it differs from `rest` only by the schedule (the paper's "no curriculum" ablation);
- `entropy`: ResT's inverse-gradient-variance weights.
For a given seed every arm gets the same task, the same initial model and the same SFT warm start.

Every run is scored greedily on one fixed held-out set (`--eval-prompts`, from the tiny task's eval
split, which shares no question text with training) after SFT and at the end only. Per arm it reports,
each as a mean over seeds with a 95% interval (Student t): the steps until the training reward
(mean over the step's trajectories, running mean of 3 steps) first reaches `--threshold` (a run
that never does counts as its number of steps + 1), the final held-out reward and its gain, and the
standard deviation over steps of the loss and of the gradient norm (the paper's stability claim).
Writes `rest_vs_grpo.json` and `rest_vs_grpo.png` (training reward by step, mean and 95% band per
arm) to `--out`. Report what it measures, whichever way it comes out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rest_megatron.config import load_config  # noqa: E402
from rest_megatron.data.tiny_task import make_tiny_task  # noqa: E402

EVAL_SEED = 20_261_206
"""Seed of the held-out set: the same questions for every arm and training seed."""


def arm_overrides() -> dict[str, list[str]]:
    """Recipe overrides of each arm. `static` holds each region weight at its curriculum's run mean,
    which assumes the recipe's curricula (`tiny-cpu-weak.yaml`: γ_args 0.6→1.2, γ_reasoning 0.6→1.0
    over its 24 steps)."""
    return {
        "rest": ["algorithm.weights=paper"],
        "grpo": ["algorithm.weights=uniform", "algorithm.weights_params={}"],
        "static": [
            "algorithm.weights=paper",
            "algorithm.weights_params.gamma_args=0.9",
            "algorithm.weights_params.gamma_reasoning=0.8",
        ],
        "entropy": ["algorithm.weights=entropy", "algorithm.weights_params={}"],
    }


def write_eval_set(path: Path, num_prompts: int) -> None:
    """The held-out prompts as a JSONL data file (messages, tools, ground truth)."""
    with path.open("w") as out:
        for sample in make_tiny_task(EVAL_SEED, num_prompts, "eval"):
            record = {
                "messages": sample.messages,
                "tools": sample.tools,
                "ground_truth": {"calls": sample.calls, "answer": sample.answer},
            }
            out.write(json.dumps(record) + "\n")


def train(recipe: Path, seed: int, run_dir: Path, overrides: list[str]) -> list[dict]:
    """Run one recipe to completion; returns its metrics records."""
    command = [
        sys.executable,
        "-m",
        "rest_megatron.cli",
        "train",
        str(recipe),
        f"data.seed={seed}",
        f"logging.run_dir={run_dir}",
        "checkpoint.save_interval=0",
        *overrides,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONWARNINGS": "ignore",
    }
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# Two-sided 95% Student t quantiles by degrees of freedom; 1.96 beyond the table.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% interval (0 for a single value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    return m, _T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def smoothed(curve: list[float], width: int = 3) -> list[float]:
    return [statistics.fmean(curve[max(0, i - width + 1) : i + 1]) for i in range(len(curve))]


def summarize(records: list[dict], threshold: float) -> dict:
    """One run's numbers: the training reward curve, held-out rewards, steps to threshold, spreads."""
    steps = [r for r in records if "reward/mean" in r]
    reward = [r["reward/mean"] for r in steps]
    evals = [r["eval/reward"] for r in records if "eval/reward" in r]
    reached = next((i + 1 for i, v in enumerate(smoothed(reward)) if v >= threshold), len(reward) + 1)
    losses = [r["loss"] for r in steps if "loss" in r]
    norms = [r["grad_norm"] for r in steps if r.get("grad_norm")]  # 0 / absent: no update that step
    return {
        "train_reward": reward,
        "eval_start": evals[0],
        "eval_end": evals[-1],
        "steps_to_threshold": reached,
        "loss_std": _stdev(losses),
        "grad_norm_std": _stdev(norms),
    }


def _stdev(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/tiny-cpu-weak.yaml")
    parser.add_argument("--arms", nargs="+", default=["rest", "grpo", "static", "entropy"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--eval-prompts", type=int, default=256, help="held-out prompts (fixed set)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=-1.0,
        help="training reward for steps-to-threshold [-1: on average half the samples pass the format "
        "check, as malformed ones score -2 and well-formed ones >= 0]",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/rest_vs_grpo"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each is one trainer process)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every arm")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    eval_file = (args.out / "eval.jsonl").resolve()
    write_eval_set(eval_file, args.eval_prompts)
    # Only the held-out rewards after SFT and at the end are reported: skip the recipe's evaluations between.
    num_steps = load_config(args.recipe, args.overrides).optimizer.num_steps
    common = [f"data.eval_path={eval_file}", f"logging.eval_interval={num_steps}", *args.overrides]
    unknown = set(args.arms) - set(arm_overrides())
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {sorted(arm_overrides())}")

    runs: dict[str, dict[int, dict]] = {arm: {} for arm in args.arms}
    started_all = time.perf_counter()

    def one(arm: str, seed: int) -> None:
        started = time.perf_counter()
        overrides = [*arm_overrides()[arm], *common]
        records = train(args.recipe, seed, (args.out / f"{arm}-seed{seed}").resolve(), overrides)
        runs[arm][seed] = summarize(records, args.threshold)
        print(f"{arm} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        for done in [pool.submit(one, arm, seed) for seed in args.seeds for arm in args.arms]:
            done.result()
    wall = time.perf_counter() - started_all

    columns = [
        ("steps to threshold", "steps_to_threshold"),
        ("held-out start", "eval_start"),
        ("held-out final", "eval_end"),
        ("held-out gain", None),
        ("loss std", "loss_std"),
        ("grad-norm std", "grad_norm_std"),
    ]
    print(
        f"{len(args.seeds)} seeds per arm, {args.eval_prompts} held-out prompts, threshold {args.threshold} "
        f"(training reward, running mean of 3 steps); mean ± 95% interval over seeds; {wall / 60:.0f} min\n"
    )
    print("| arm | reached | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for arm, by_seed in runs.items():
        cells = {}
        for name, key in columns:
            values = [r["eval_end"] - r["eval_start"] if key is None else r[key] for r in by_seed.values()]
            cells[name] = interval(values)
        table[arm] = cells
        reached = sum(r["steps_to_threshold"] <= len(r["train_reward"]) for r in by_seed.values())
        print(
            f"| {arm} | {reached}/{len(by_seed)} | "
            + " | ".join(f"{m:.3f} ± {h:.3f}" for m, h in cells.values())
            + " |"
        )

    (args.out / "rest_vs_grpo.json").write_text(
        json.dumps(
            {
                "threshold": args.threshold,
                "wall_s": wall,
                "eval_prompts": args.eval_prompts,
                "overrides": common,
                "runs": runs,
                "table": table,
            },
            indent=1,
        )
    )
    plot(runs, args.out / "rest_vs_grpo.png")


def plot(runs: dict[str, dict[int, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    colors = {"rest": "tab:red", "grpo": "tab:blue", "static": "tab:orange", "entropy": "tab:green"}
    for arm, by_seed in runs.items():
        curves = [r["train_reward"] for r in by_seed.values()]
        length = min(len(c) for c in curves)
        bands = [interval([c[s] for c in curves]) for s in range(length)]
        x = range(1, length + 1)
        mid = [m for m, _ in bands]
        axis.plot(x, mid, color=colors.get(arm), linewidth=2, label=f"{arm} ({len(curves)} seeds)")
        axis.fill_between(
            x, [m - h for m, h in bands], [m + h for m, h in bands], color=colors.get(arm), alpha=0.15
        )
    axis.set_xlabel("RL step")
    axis.set_ylabel("training reward (mean, 95% band over seeds)")
    axis.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
