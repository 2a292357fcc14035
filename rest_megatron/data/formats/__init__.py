"""Published tool-use data sets, converted to our prompt JSONL (`rest-megatron data prepare`).

| name | module | reads |
|---|---|---|
| `toolrl` | `toolrl.py` | ToolRL's rlla data: instruction / input / output with <tool_call> JSON lines |
| `xlam` | `xlam.py` | xlam-function-calling-60k: query, tools and answers as JSON strings |
| `hammer` | `hammer.py` | Hammer's xLAM-shaped data, irrelevance records (no call) included |
| `toolace` | `toolace.py` | ToolACE dialogs: tools in the system prompt, calls as `[f(x=1)]` |
| `bfcl` | `bfcl.py` | BFCL questions with their possible_answer ground truth |
| `apibank` | `apibank.py` | API-Bank eval files: level-1/2 prompt-answer pairs, level-3 tasks, raw dialogs |

Shared pieces: `base.py` (reading by line, outcomes, record building), `schema.py` (tool schemas as
OpenAI-style JSON schema), `pycalls.py` (Python-syntax calls), `validate.py` (the checks every record
passes), `prepare.py` (convert, validate, write atomically, summarise).

A format is a module with `convert(path, options) -> Iterator[Outcome]`; it registers below by name, and
`tests/data/test_formats.py` holds the contract every entry must pass. Modules are imported only when
their format is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rest_megatron.algo.registry import Registry
from rest_megatron.data.formats.base import ConvertOptions, Outcome

Converter = Callable[[Path, ConvertOptions], Iterator[Outcome]]


@dataclass(frozen=True)
class Format:
    """One registered data format."""

    name: str
    module: str
    """Module under rest_megatron.data.formats with a `convert(path, options)` function."""
    summary: str
    """One line for `--help`."""

    def converter(self) -> Converter:
        """The format's `convert` function (imports its module)."""
        return importlib.import_module(f"rest_megatron.data.formats.{self.module}").convert


_FORMATS: Registry[Format] = Registry("data format")
for _name, _summary in (
    ("toolrl", "ToolRL rlla (instruction/input/output, JSON array or JSONL)"),
    ("xlam", "Salesforce xlam-function-calling-60k (query/tools/answers)"),
    ("hammer", "Hammer / XLAM-7.5k-Irrelevance (xLAM fields, empty answers allowed)"),
    ("toolace", "ToolACE (system + conversations, calls as [f(x=1)])"),
    ("bfcl", "BFCL questions; ground truth from possible_answer/ (see --answers)"),
    ("apibank", "API-Bank level-1/2/3 evaluation files and raw dialogs"),
):
    _FORMATS.register(_name)(Format(_name, _name, _summary))

get_format = _FORMATS.get
format_names = _FORMATS.names

__all__ = ["ConvertOptions", "Converter", "Format", "Outcome", "format_names", "get_format"]
