"""Our one hand-written BFCL piece, the Qwen function-calling decoder, against BFCL's own source."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

bfcl_eval = pytest.importorskip("bfcl_eval")

from rest_megatron.eval.bfcl_checker import decode_function_calling  # noqa: E402

QWEN_FC = Path(bfcl_eval.__file__).parent / "model_handler" / "local_inference" / "qwen_fc.py"


def _bfcl_decode_ast() -> Any:
    """`decode_ast` and `_extract_tool_calls` of BFCL's Qwen FC handler, compiled from its source alone
    (the module imports the whole handler tree, which needs packages we do not install)."""
    tree = ast.parse(QWEN_FC.read_text())
    methods = {
        node.name: node
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.FunctionDef)
    }
    wanted = [methods["decode_ast"], methods["_extract_tool_calls"]]
    for node in wanted:
        node.decorator_list = []
    namespace: dict[str, Any] = {"re": re, "json": json}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(QWEN_FC), "exec"), namespace)  # noqa: S102
    handler = SimpleNamespace(_extract_tool_calls=namespace["_extract_tool_calls"])
    return lambda text: namespace["decode_ast"](handler, text, "Python", True)


def _call(name: str, arguments: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


CASES = [
    _call("spotify.play", {"artist": "Taylor Swift", "duration": 20}),
    _call("a", {"x": [1, 2.5, "s"]}) + "\n" + _call("b", {"y": {"nested": True}}),
    "no call at all",
    "<tool_call>\nnot json\n</tool_call>\n" + _call("kept", {}),
    '<tool_call>{"name": "inline", "arguments": {}}</tool_call>',  # no newlines: not a block for BFCL
    "<tool_call>\n[1, 2]\n</tool_call>",
    '<tool_call>\n"just a string"\n</tool_call>',
    "<think>let me call</think>\n" + _call("after_think", {"q": "x"}),
]


@pytest.mark.parametrize("text", CASES)
def test_decoder_agrees_with_bfcls_qwen_handler(text: str) -> None:
    theirs = _bfcl_decode_ast()
    try:
        expected: Any = theirs(text)
    except Exception as exc:  # noqa: BLE001 - BFCL raises several types; a failure is a failure
        expected = type(exc)
    try:
        ours: Any = decode_function_calling(text)
    except ValueError:
        ours = ValueError
    if expected is not ValueError and isinstance(expected, type):
        expected = ValueError  # BFCL's KeyError/AttributeError on a malformed call: ours is a ValueError
    assert ours == expected
