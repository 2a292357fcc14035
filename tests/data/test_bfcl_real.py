"""The BFCL data files shipped in the installed bfcl-eval package convert without a single rejection.

Beyond "no rejection", each canonical call is checked against BFCL's own answer lists: every argument
value is one BFCL accepts, and every argument left out is one BFCL allows to be left out.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from rest_megatron.data.formats.prepare import DATA_FILE, prepare
from rest_megatron.data.prompts import load_prompts

spec = importlib.util.find_spec("bfcl_eval")
if spec is None or spec.submodule_search_locations is None:
    pytest.skip(
        "bfcl_eval is not importable (install the `bfcl` extra) - its data files are what this tests",
        allow_module_level=True,
    )
DATA = Path(next(iter(spec.submodule_search_locations))) / "data"
CATEGORIES = {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200}


def accepted(value: Any, alternatives: list[Any]) -> bool:
    """BFCL's rule, structurally: the value equals an alternative; dict alternatives hold lists again."""
    for alternative in alternatives:
        if isinstance(alternative, dict) and isinstance(value, dict):
            if all(accepted(value[k], v) if k in value else "" in v for k, v in alternative.items()) and set(
                value
            ) <= set(alternative):
                return True
        elif isinstance(alternative, list) and isinstance(value, list) and len(alternative) == len(value):
            if all(accepted(v, [a]) for v, a in zip(value, alternative)):
                return True
        elif alternative != "" and type(alternative) is type(value) and alternative == value:
            return True
    return False


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_real_bfcl_category_converts_with_zero_rejections(category: str, tmp_path: Path) -> None:
    summary = prepare("bfcl", DATA / f"BFCL_v4_{category}.json", tmp_path)
    assert summary.rejections == [], summary.rejections[:3]
    assert summary.num_read == summary.num_written == CATEGORIES[category]
    prompts = load_prompts(str(tmp_path / DATA_FILE), "eval", seed=0)
    assert len(prompts) == CATEGORIES[category]
    for line in (tmp_path / DATA_FILE).read_text().splitlines():
        truth = json.loads(line)["ground_truth"]
        assert len(truth["calls"]) == len(truth["bfcl_ground_truth"])
        for call, expected in zip(truth["calls"], truth["bfcl_ground_truth"]):
            ((name, alternatives),) = expected.items()
            assert call["name"] == name
            for arg, values in alternatives.items():
                if arg in call["arguments"]:
                    assert accepted(call["arguments"][arg], values), (
                        name,
                        arg,
                        call["arguments"][arg],
                        values,
                    )
                else:
                    assert "" in values, (name, arg)
