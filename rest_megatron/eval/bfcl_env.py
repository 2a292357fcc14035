"""BFCL multi-turn environments run in this process, for the model's calls and the ground truth alike.

    episode = MultiTurnEpisode(entry)
    for turn in range(len(entry.turns)):
        ... results = episode.execute(calls)      # each step's calls, results go back to the model
        reason = episode.end_turn(turn)           # ground truth of the turn, then BFCL's checks

Why in-process and not through tools_sandbox: scoring compares the environment *objects* after the
model's calls with those after the ground-truth calls (BFCL's state check), and the sandbox's session
API returns call outputs only, with no way to read a session's state back. The classes are BFCL's
simulated APIs (an in-memory file system, a fake trading bot, ...): a call is a method lookup among
their public methods with JSON arguments, never `eval` of model text. A call that runs too long is
interrupted with SIGALRM (main thread only; a single C-level operation such as a huge power cannot be
interrupted before it returns).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import inspect
import json
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rest_megatron.algo.tool_calls import ToolCall
from rest_megatron.eval.bfcl_checker import bfcl
from rest_megatron.eval.bfcl_data import BfclEntry, BfclUnavailable
from tools_sandbox.tools.bfcl import CLASSES, MODULE_PREFIX

STATELESS = frozenset({"MathAPI"})
"""Classes BFCL builds without a scenario."""


class _CallTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _CallTimeout in the block after `seconds` (a no-op off the main thread, where signals cannot
    go)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _CallTimeout(f"the call ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_instances(entry: BfclEntry) -> dict[str, Any]:
    """Fresh instances of the entry's classes, loaded with its `initial_config` (as BFCL builds them).

    Raises:
        BfclUnavailable: a dependency of a class is missing (MathAPI needs `mpmath`); the message names it.
    """
    config = entry.extra.get("initial_config", {})
    instances = {}
    for name in entry.extra.get("involved_classes", []):
        try:
            module = importlib.import_module(f"{MODULE_PREFIX}.{CLASSES[name][0]}")
        except ImportError as exc:
            raise BfclUnavailable(
                f"BFCL class {name} cannot be imported ({exc}); install what it needs "
                f"(`pip install {exc.name or 'mpmath'}`)"
            ) from exc
        instance = getattr(module, name)()
        if name not in STATELESS:
            # BFCL's runner loads long-context scenarios (extra files, longer listings) for that category
            instance._load_scenario(
                copy.deepcopy(config.get(name, {})), long_context="long_context" in entry.category
            )
        instances[name] = instance
    return instances


def methods_of(instances: Mapping[str, Any]) -> dict[str, Any]:
    """{method name: bound method} over the public methods of the instances (a later class wins a clash)."""
    return {
        name: method
        for instance in instances.values()
        for name, method in inspect.getmembers(instance, inspect.ismethod)
        if not name.startswith("_")
    }


def parse_call_string(text: str) -> tuple[str, list[Any], dict[str, Any]]:
    """ "mv(source='a', destination='b')" -> ("mv", [], {...}); literal arguments only (ground truth)."""
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"{text!r} is not a call like name(arg=value)")
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
    return node.func.id, args, kwargs


def keyword_call(text: str, methods: Mapping[str, Any]) -> dict[str, Any]:
    """A ground-truth call string as `{"name", "arguments"}`, positional arguments named by the method's
    signature."""
    name, args, kwargs = parse_call_string(text)
    if args:
        if name not in methods:
            raise ValueError(f"ground-truth call {text!r} names no method of the entry's classes")
        kwargs = dict(inspect.signature(methods[name]).bind_partial(*args, **kwargs).arguments)
    return {"name": name, "arguments": kwargs}


def result_text(value: Any) -> str:
    """A call's return value as the text the model reads (BFCL's rendering: dicts as JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def run_call(methods: Mapping[str, Any], name: str, arguments: Mapping[str, Any], timeout_s: float) -> str:
    """Execute one call; failures come back as "Error during execution: ..." text, never raised."""
    method = methods.get(name)
    if method is None:
        return f"Error during execution: unknown function {name!r}; available: {', '.join(sorted(methods))}"
    try:
        with _time_limit(timeout_s):
            return result_text(method(**arguments))
    except Exception as exc:  # noqa: BLE001 - the model's mistakes are the tool's output
        return f"Error during execution: {exc}"


class MultiTurnEpisode:
    """One entry's two environments (the model's and the ground truth's) and BFCL's per-turn checks."""

    def __init__(self, entry: BfclEntry, *, call_timeout_s: float = 10.0) -> None:
        assert entry.answer is not None, "multi-turn entries carry their ground truth"
        self.entry = entry
        self.call_timeout_s = call_timeout_s
        self.model = load_instances(entry)
        self.truth = load_instances(entry)
        self._model_methods = methods_of(self.model)
        self._truth_methods = methods_of(self.truth)
        self.model_results: list[str] = []
        """Every execution result of the model's calls so far, all turns (BFCL's response check reads
        them)."""
        self._calls_this_turn = 0

    def execute(self, calls: Sequence[ToolCall | Mapping[str, Any]]) -> list[str]:
        """Run one step's calls on the model's environment, in order; returns their results."""
        results = []
        for call in calls:
            name, arguments = (
                (call.name, call.arguments)
                if isinstance(call, ToolCall)
                else (call["name"], call.get("arguments", {}))
            )
            results.append(run_call(self._model_methods, name, arguments, self.call_timeout_s))
        self.model_results += results
        self._calls_this_turn += len(calls)
        return results

    def truth_calls(self, turn: int) -> list[dict[str, Any]]:
        """The turn's ground-truth calls as `{"name", "arguments"}` (keyword arguments only)."""
        return [keyword_call(text, self._truth_methods) for text in self.entry.answer[turn]]

    def end_turn(self, turn: int) -> str | None:
        """Apply the turn's ground truth, then check: a call was made, same state, expected results seen.

        Returns why the turn fails, or None. A turn whose ground truth is empty is not checked (BFCL
        checks those only in its irrelevance categories).
        """
        made, self._calls_this_turn = self._calls_this_turn, 0
        calls = self.truth_calls(turn)
        truth_results = [
            run_call(self._truth_methods, c["name"], c["arguments"], self.call_timeout_s) for c in calls
        ]
        if not calls:
            return None
        if not made:
            return f"turn {turn}: no tool call, expected {len(calls)} ({', '.join(c['name'] for c in calls)})"
        checker = bfcl()
        for result in (
            checker.state_checker(self.model, self.truth),
            checker.response_checker(self.model_results, truth_results, turn),
        ):
            if not result["valid"]:
                return f"turn {turn}: {result['error_type']}: {result['error_message']}"
        return None
