"""BFCL's own verdict code, loaded from the installed bfcl-eval without its model-handler tree.

bfcl-eval is installed with `--no-deps`; its checker modules import only `bfcl_eval.constants.model_config`
from the handler side (for `MODEL_CONFIG_MAPPING[model].underscore_to_dot`, which maps "." in function
names to "_" for API models that cannot send dots). That module imports every model handler (and their
SDKs), so a stand-in holding one config with `underscore_to_dot=False` is registered before the import:
our models receive function names unchanged, as BFCL's local Qwen/Llama handlers send them.

What runs is BFCL's code, unmodified:
- `ast_checker` (single-turn answer keys), `is_function_calling_format_output` and `is_empty_output`
  (what its runner checks after decoding), `state_checker` and `response_checker` (multi-turn);
- the runner's aggregation (`calculate_*_accuracy` of `eval_runner_helper.py`) and the prompting-mode
  decoder (`default_decode_ast_prompting`, `ast_parse`, `resolve_ast_*` of `model_handler/utils.py`) are
  compiled from those files' source, function by function, because the files' top-level imports need
  pandas, tenacity and tree-sitter, which the functions themselves never touch.

The one piece written here is the function-calling decoder of BFCL's Qwen FC handler
(`model_handler/local_inference/qwen_fc.py`, `decode_ast`): `<tool_call>\\n{json}\\n</tool_call>` blocks,
unparsable ones skipped, each call turned into `{name: arguments}`. It is ten lines whose module imports
the handler base classes, and `tests/eval/test_bfcl_checker.py` compares the two on BFCL's own examples
when those classes import.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rest_megatron.eval.bfcl_data import BfclUnavailable, package_dir


@dataclass(frozen=True)
class _LocalModelConfig:
    underscore_to_dot: bool = False


class _AnyModel(dict):
    """`MODEL_CONFIG_MAPPING` stand-in: every model name maps to a local model's config."""

    def __missing__(self, key: str) -> _LocalModelConfig:
        return _LocalModelConfig()


@functools.cache
def bfcl() -> types.SimpleNamespace:
    """BFCL's checker functions (see the module docstring), imported once.

    Raises:
        BfclUnavailable: bfcl-eval is missing or its checker does not import; the message says why.
    """
    root = package_dir()
    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:
        stand_in = types.ModuleType(name)
        stand_in.MODEL_CONFIG_MAPPING = _AnyModel()  # type: ignore[attr-defined]
        sys.modules[name] = stand_in
    try:
        from bfcl_eval.constants import default_prompts
        from bfcl_eval.constants.enums import Language, ReturnFormat
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
        from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import response_checker, state_checker
        from bfcl_eval.utils import is_empty_output, is_function_calling_format_output
    except ImportError as exc:
        raise BfclUnavailable(
            f"bfcl-eval's checker does not import ({exc}); reinstall the `bfcl` extra "
            f"(scripts/setup.sh) or `pip install {exc.name}`"
        ) from exc
    helper = _compile_functions(
        root / "eval_checker" / "eval_runner_helper.py",
        [
            "calculate_weighted_accuracy",
            "calculate_unweighted_accuracy",
            "calculate_percentage_weighted_accuracy",
        ],
        {},
    )
    decoding = _compile_functions(
        root / "model_handler" / "utils.py",
        ["default_decode_ast_prompting", "ast_parse", "resolve_ast_call", "resolve_ast_by_type"],
        {"ast": ast, "re": re, "ReturnFormat": ReturnFormat},
    )
    return types.SimpleNamespace(
        ast_checker=ast_checker,
        is_function_calling_format_output=is_function_calling_format_output,
        is_empty_output=is_empty_output,
        state_checker=state_checker,
        response_checker=response_checker,
        Language=Language,
        ReturnFormat=ReturnFormat,
        default_prompts=default_prompts,
        **helper,
        **decoding,
    )


def _compile_functions(path: Path, names: list[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """The named top-level functions of a Python file, compiled alone into `namespace` (its imports
    skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    missing = set(names) - {node.name for node in found}
    if missing:
        raise BfclUnavailable(
            f"{path} lacks {', '.join(sorted(missing))}; this bfcl-eval release is not the one "
            "rest-megatron pins (scripts/setup.sh installs bfcl-eval==2026.3.23)"
        )
    namespace = dict(namespace)
    exec(compile(ast.Module(body=found, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102 - BFCL's code
    return {name: namespace[name] for name in names}


def decode_function_calling(text: str) -> list[dict[str, Any]]:
    """BFCL's Qwen FC handler's `decode_ast`: `<tool_call>` JSON blocks as `[{name: {argument: value}}]`.

    Raises:
        ValueError: a block decodes to something other than a call object (BFCL: a decoding failure).
    """
    calls = []
    for block in re.findall(r"<tool_call>\n(.*?)\n</tool_call>", text, re.DOTALL):
        try:
            calls.append(json.loads(block))
        except ValueError:
            continue  # BFCL skips an unparsable block and keeps the others
    if any(type(call) is not dict for call in calls):
        raise ValueError(f"Model did not return a list of function calls: {text}")
    try:
        return [{call["name"]: dict(call["arguments"].items())} for call in calls]
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"a tool call lacks a name or an arguments object: {exc}") from exc


def decode_prompting(text: str) -> list[dict[str, Any]]:
    """BFCL's prompting-mode decoder (`default_decode_ast_prompting`) for Python-syntax call lists."""
    return bfcl().default_decode_ast_prompting(text, bfcl().ReturnFormat.PYTHON)


def decode(text: str, mode: str) -> list[dict[str, Any]]:
    """The model's text decoded as BFCL's handler of `mode` ("fc" or "prompting") decodes it."""
    if mode == "fc":
        return decode_function_calling(text)
    if mode == "prompting":
        return decode_prompting(text)
    raise ValueError(f"unknown BFCL mode {mode!r}; use fc or prompting")


def language_of(category: str) -> Any:
    """BFCL's `Language` of a category's answer key (Java and JavaScript keys hold literals as strings)."""
    languages = bfcl().Language
    if category.endswith("_java"):
        return languages.JAVA
    if category.endswith("_javascript"):
        return languages.JAVASCRIPT
    return languages.PYTHON


def ast_verdict(
    category: str, functions: list[dict[str, Any]], text: str, answer: list[Any], mode: str = "fc"
) -> str | None:
    """BFCL's verdict on an answer-key entry (its runner's `_evaluate_single_ast_entry`): None if correct,
    else BFCL's error text."""
    checker = bfcl()
    try:
        decoded = decode(text, mode)
    except Exception as exc:  # noqa: BLE001 - BFCL counts any decoding failure as a wrong answer
        return f"Invalid syntax. Failed to decode AST. {exc}"
    if not checker.is_function_calling_format_output(decoded):
        return "Did not output in the specified format."
    result = checker.ast_checker(functions, decoded, answer, language_of(category), category, "rest-megatron")
    if result["valid"]:
        return None
    return f"{result.get('error_type', 'error')}: {'; '.join(map(str, result.get('error', [])))}"


def relevance_verdict(category: str, text: str, mode: str = "fc") -> str | None:
    """BFCL's verdict on irrelevance (no call wanted) and relevance (a call wanted) entries."""
    try:
        made_call = not bfcl().is_empty_output(decode(text, mode))
        error = ""
    except Exception as exc:  # noqa: BLE001 - a decoding failure is "no call" for BFCL
        made_call, error = False, str(exc)
    if "irrelevance" in category:
        return (
            "irrelevance_error:decoder_success: a call was decoded although no function fits"
            if made_call
            else None
        )
    return None if made_call else f"relevance_error:decoder_failed: no call decoded {error}".rstrip()


def multi_turn_decode(text: str, mode: str) -> list[dict[str, Any]]:
    """One step's calls as `[{"name", "arguments"}]`; [] where BFCL's runner skips the step (no call, or
    a decoding failure: "we only care about the decoded function call")."""
    try:
        decoded = decode(text, mode)
    except Exception:  # noqa: BLE001 - see the docstring
        return []
    if not bfcl().is_function_calling_format_output(decoded):
        return []
    return [{"name": name, "arguments": arguments} for call in decoded for name, arguments in call.items()]
