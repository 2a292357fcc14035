"""Every config field is read by the code that runs: a field that only validation and `plan` look at
promises a setting that does nothing. The check is generic over the schema, so new fields fall under
it: each leaf `section.field` must be read (`config.section.field`, or `field` of an alias of the
section, or by its key in a string) somewhere in `rest_megatron/`, `tools_sandbox/`, `slurm/` or
`scripts/` outside `config/` and `plan/`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from rest_megatron.config import schema

ROOT = Path(__file__).resolve().parents[2]
EXCLUDED = (ROOT / "rest_megatron" / "config", ROOT / "rest_megatron" / "plan")


def _leaf_fields(cls: type, prefix: str = "") -> list[str]:
    names = []
    for f in dataclasses.fields(cls):
        inner = (
            getattr(schema, str(f.type).split("|")[0].strip(), None) if isinstance(f.type, str) else f.type
        )
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            names += _leaf_fields(inner, f"{prefix}{f.name}.")
        else:
            names.append(f"{prefix}{f.name}")
    return names


def _runtime_files() -> list[Path]:
    python = [
        p
        for d in ("rest_megatron", "tools_sandbox")
        for p in (ROOT / d).rglob("*.py")
        if not any(p.is_relative_to(e) for e in EXCLUDED)
    ]
    shell = [p for d in ("slurm", "scripts") for p in (ROOT / d).rglob("*") if p.suffix in (".sh", ".sbatch")]
    return python + shell


def _reads(text: str, section: str, name: str) -> bool:
    """`<section>.name` (in Python, or as a key in a shell script), or `alias.name` where
    `alias = <...>.<section>` in the same file; never a method call `.name(`."""
    aliases = {section, *re.findall(rf"(\w+)\s*=\s*[\w.]*\.{section}\b(?!\.)", text)}
    if re.search(rf"\b(?:{'|'.join(map(re.escape, aliases))})\.{name}\b(?!\s*\()", text):
        return True
    return False


def unread_fields() -> list[str]:
    texts = [p.read_text(errors="replace") for p in _runtime_files()]
    unread = []
    for key in _leaf_fields(schema.Config):
        section, _, name = key.rpartition(".")
        if not any(_reads(text, section.rsplit(".", 1)[-1], name) for text in texts):
            unread.append(key)
    return unread


KNOWN_UNREAD = {
    "parallel.dp": "read by Config.data_parallel_size in schema.py itself, which this scan leaves out",
    **dict.fromkeys(
        ("algorithm.clip_low", "algorithm.clip_high", "algorithm.dual_clip"),
        "read by name: algo/policy_loss.py policy_loss_params matches the loss's signature to the fields",
    ),
}
"""Open debts, each with its reason; an entry that becomes read must leave this list."""


def test_every_config_field_is_read_outside_validation_and_plan() -> None:
    unread = unread_fields()
    assert sorted(set(unread) - set(KNOWN_UNREAD)) == [], (
        "these fields are read by nothing but validation and plan: make the code their docstring names "
        "read them, or remove them from config/schema.py"
    )
    assert sorted(set(KNOWN_UNREAD) - set(unread)) == [], "these are read now: drop them from KNOWN_UNREAD"


def test_the_check_catches_a_field_nothing_reads(monkeypatch) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Probe:
        never_read_anywhere_xyz: int = 0

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class WithProbe(schema.Config):
        probe: Probe = dataclasses.field(default_factory=Probe)

    monkeypatch.setattr(schema, "Config", WithProbe)
    monkeypatch.setattr(schema, "Probe", Probe, raising=False)  # annotations are strings, resolved in schema
    assert set(unread_fields()) - set(KNOWN_UNREAD) == {"probe.never_read_anywhere_xyz"}
