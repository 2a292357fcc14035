"""`rest-megatron plan`: per-GPU memory of a recipe and a TP/PP/DP layout that fits N GPUs.

- `architectures.py`: the model's shape from its config.json, or a table of the recipes' models.
- `memory.py`: the byte formulas (parameters, gradients, Adam, activations, output head, rollout server).
- `search.py`: valid layouts and the preference among those that fit.
- `planner.py`: the rollout share, the search over the trainer GPUs, refusals with the fix.
- `report.py` / `main.py`: the printed table and the command line.
"""
