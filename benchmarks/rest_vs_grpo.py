"""ResT against plain GRPO on the tiny task: both tiny recipes, several seeds each, in one run.

    python benchmarks/rest_vs_grpo.py                          # seeds 0 1 2, the recipes as written
    python benchmarks/rest_vs_grpo.py --seeds 0 1 --threshold 0.9 optimizer.num_steps=12

The two recipes differ only in `algorithm.weights` (paper vs uniform), so each seed gives both the same
task, the same initial model and the same SFT warm start. Every run evaluates the held-out split
(greedy) after every step. Prints the held-out reward by step per seed, the first step at which it
reaches `--threshold` (steps-to-threshold; "-" if never), the means, and writes `rest_vs_grpo.json`
and `rest_vs_grpo.png` to `--out`. This is the small-scale analogue of the paper's ResT-beats-GRPO
claim: report what it measures, whichever way it comes out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"rest": "recipes/tiny-cpu.yaml", "grpo": "recipes/tiny-cpu-grpo.yaml"}


def train(recipe: str, seed: int, run_dir: Path, overrides: list[str]) -> list[float]:
    """Run one recipe and return its held-out reward at steps 0 (after SFT), 1, 2, ..."""
    command = [sys.executable, "-m", "rest_megatron.cli", "train", str(ROOT / recipe), f"data.seed={seed}",
               f"logging.run_dir={run_dir}", "logging.eval_interval=1", "checkpoint.save_interval=0", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONWARNINGS": "ignore"}
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["eval/reward"] for r in records if "eval/reward" in r]


def steps_to(curve: list[float], threshold: float) -> int | None:
    return next((step for step, value in enumerate(curve) if value >= threshold), None)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=0.95, help="held-out reward for steps-to-threshold")
    parser.add_argument("--out", type=Path, default=Path("runs/rest_vs_grpo"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each is one trainer process)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to both recipes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    curves: dict[str, dict[int, list[float]]] = {name: {} for name in RECIPES}

    def one(name: str, seed: int) -> None:
        started = time.perf_counter()
        curves[name][seed] = train(RECIPES[name], seed, args.out / f"{name}-seed{seed}", args.overrides)
        print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        for done in [pool.submit(one, name, seed) for seed in args.seeds for name in RECIPES]:
            done.result()
    curves = {name: dict(sorted(runs.items())) for name, runs in curves.items()}

    num_points = min(len(c) for runs in curves.values() for c in runs.values())
    header = "| recipe | seed | " + " | ".join(f"step {s}" for s in range(num_points)) + " | steps to ≥ threshold |"
    print(f"held-out greedy reward by step (step 0 = after SFT); threshold {args.threshold}\n")
    print(header)
    print("|" + "---|" * (num_points + 3))
    for name, runs in curves.items():
        for seed, curve in runs.items():
            reached = steps_to(curve, args.threshold)
            print(f"| {name} | {seed} | " + " | ".join(f"{v:.3f}" for v in curve[:num_points])
                  + f" | {'-' if reached is None else reached} |")
        mean_curve = [mean([c[s] for c in runs.values()]) for s in range(num_points)]
        reached = [steps_to(c, args.threshold) for c in runs.values()]
        hits = [r for r in reached if r is not None]
        summary = f"{mean(hits):.1f} ({len(hits)}/{len(reached)} reached)" if hits else "-"
        print(f"| {name} | mean | " + " | ".join(f"{v:.3f}" for v in mean_curve) + f" | {summary} |")
    gains = {name: mean([c[num_points - 1] - c[0] for c in runs.values()]) for name, runs in curves.items()}
    print("\nmean change from step 0 to the last step: " + ", ".join(f"{k} {v:+.3f}" for k, v in gains.items()))

    (args.out / "rest_vs_grpo.json").write_text(json.dumps({"threshold": args.threshold, "curves": curves}, indent=1))
    plot(curves, num_points, args.out / "rest_vs_grpo.png")


def plot(curves: dict[str, dict[int, list[float]]], num_points: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    for color, (name, runs) in zip(("tab:red", "tab:blue"), curves.items()):
        for curve in runs.values():
            axis.plot(range(num_points), curve[:num_points], color=color, alpha=0.25)
        axis.plot(range(num_points), [mean([c[s] for c in runs.values()]) for s in range(num_points)],
                  color=color, linewidth=2, label=f"{name} (mean of {len(runs)} seeds)")
    axis.set_xlabel("RL step (0 = after SFT)")
    axis.set_ylabel("held-out greedy reward")
    axis.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
