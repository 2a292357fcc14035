"""Recipe YAML → `Config` and back: `base:` inheritance, `key=value` overrides, type checking.

    recipe.yaml ──(base: chain, deep merge)──► dict ──(key=value overrides)──► dict
        ──(type-check against schema.py annotations)──► Config ──(fill run_dir, checkpoint.dir)──►
        validate() ──► Config

`save_config` writes the resolved result as `resolved_config.yaml`; loading that file gives back an
equal `Config` (the recipe is the source, the dump is the record).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from rest_megatron.config.errors import ConfigError
from rest_megatron.config.schema import Config
from rest_megatron.config.validation import validate

RESOLVED_CONFIG_NAME = "resolved_config.yaml"
"""File name `save_config` writes into the run directory."""


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader with two YAML 1.1 surprises removed: `1e-5` is a float (YAML 1.1 needs `1.0e-5`)
    and `2024-01-01` stays a string instead of becoming a date."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_value(text: str) -> Any:
    """Parse one override value as a YAML scalar/flow value (`2` → int, `true` → bool, `[1,2]` → list)."""
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


# ---------------------------------------------------------------- recipe files


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe and the chain of recipes it names with `base:` (relative to its own dir).

    A child's keys win; nested mappings merge key by key, lists and scalars are replaced whole.
    """
    return _read_recipe(Path(path), ())


def _read_recipe(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        where = f" (named by 'base' in {chain[-1]})" if chain else ""
        raise ConfigError(f"recipe not found: {path}{where}; pass the path of a YAML recipe (see recipes/)")
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"recipe 'base' chain loops: {cycle}; remove one of the 'base' keys")
    try:
        data = yaml.load(path.read_text(), Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"recipe {path} must be a mapping of keys (model:, data:, ...), got {type(data).__name__}"
        )
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"'base' in {path} must be one recipe file name, got {base!r}")
    parent = _read_recipe(path.parent / base, (*chain, resolved))
    return deep_merge(parent, data)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: `override` on top of `base`, merging nested mappings key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A new dict with each `dotted.key=value` override set; values are parsed by `parse_value`."""
    result = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. algorithm.weights=entropy")
        try:
            value = parse_value(text)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"cannot parse the value of override {item!r} as YAML ({err}); quote it"
            ) from None
        parts = key.split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                parent = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"cannot set '{key}': '{parent}' is a value, not a group; set '{parent}' itself"
                )
            node = child
        node[parts[-1]] = value
    return result


# ---------------------------------------------------------------- dict <-> dataclass


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a `Config` from plain data, type-checking every value against its annotation.

    No semantic validation here (that is `validate`), and no defaults are resolved.
    """
    return _build(Config, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-safe data (dicts, lists, scalars) for a `Config` or any of its groups."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        where = f"'{prefix.rstrip('.')}'" if prefix else "the config"
        raise ConfigError(f"{where} must be a mapping of keys, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(f"{prefix}{key}", cls, prefix))
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}{name}"
        if name in data:
            kwargs[name] = _check(data[name], hints[name], path)
        elif dataclasses.is_dataclass(hints[name]) and f.default_factory is dataclasses.MISSING:
            kwargs[name] = _build(hints[name], {}, f"{path}.")  # names the missing leaf, not the group
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{path}'; set it in the recipe or pass {path}=...")
    return cls(**kwargs)


def _check(value: Any, tp: Any, path: str) -> Any:
    """`value` converted to annotation `tp` (int → float, list → tuple), or a ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, f"{path}.")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # schema uses only `X | None` unions
        if _accepts(value, inner):
            return _check(value, inner, path)
        raise _type_error(path, f"{_type_name(inner)} or null", value)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, str) and value in allowed:
            return value
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{path} must be one of {choices}; got {value!r}")
    if not _accepts(value, tp):
        raise _type_error(path, _type_name(tp), value)
    if tp is float:
        return float(value)
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        return tuple(_check(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        return copy.deepcopy(value)
    return value


def _accepts(value: Any, tp: Any) -> bool:
    """Whether `value` has the right Python type for `tp` (before element checks)."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True  # Literal and dataclass values are checked by _check itself


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _type_error(path: str, expected: str, value: Any) -> ConfigError:
    got = "null" if value is None else f"{type(value).__name__} {value!r}"
    return ConfigError(f"{path} must be {expected}, got {got}")


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass tree, groups and leaves."""
    keys = []
    for name, tp in _hints(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys.extend(_all_keys(tp, f"{prefix}{name}."))
    return keys


def _unknown_key_message(path: str, cls: type, prefix: str) -> str:
    """'unknown key ...; did you mean ...?' with the closest sibling, else the closest key anywhere."""
    leaf = path[len(prefix) :]
    siblings = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{path}'; did you mean '{prefix}{close[0]}'?"
    # A key put in the wrong group (`tp=2` instead of `parallel.tp=2`): match leaves anywhere.
    everywhere = _all_keys(Config)
    by_leaf = {key.rsplit(".", 1)[-1]: key for key in everywhere}
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
    if close:
        return f"unknown key '{path}'; did you mean '{by_leaf[close[0]]}'?"
    group = f" in '{prefix.rstrip('.')}'" if prefix else ""
    return f"unknown key '{path}'; valid keys{group} are: {', '.join(siblings)}"


# ---------------------------------------------------------------- load / save


def load_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    world_size: int | None = None,
    now: datetime | None = None,
) -> Config:
    """Load a recipe, apply `key=value` overrides, resolve defaults and validate.

    Args:
        path: the recipe YAML (may name a `base:` recipe).
        overrides: dotted `key=value` strings, e.g. `("parallel.tp=2", "algorithm.weights=entropy")`.
        world_size: the trainer's actual world size, when known (e.g. under torchrun); defaults to
            `launch.nnodes × launch.nproc_per_node`.
        now: the time used for `{timestamp}` in `logging.run_dir` (default: the current time).

    Raises:
        ConfigError: the message names the full dotted key and the fix.
    """
    if isinstance(overrides, str):  # a lone "a=1" would otherwise be read character by character
        raise TypeError(f"overrides must be a sequence of 'key=value' strings, got the string {overrides!r}")
    data = apply_overrides(read_recipe(path), overrides)
    config = resolve(config_from_dict(data), recipe_name=Path(path).stem, now=now)
    validate(config, world_size=world_size)
    return config


def resolve(config: Config, *, recipe_name: str, now: datetime | None = None) -> Config:
    """Fill the load-time defaults: `{recipe}`/`{timestamp}` in `logging.run_dir`, `checkpoint.dir`."""
    timestamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    try:
        run_dir = config.logging.run_dir.format(recipe=recipe_name, timestamp=timestamp)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"logging.run_dir {config.logging.run_dir!r} has a bad placeholder ({err}); only {{recipe}} and "
            "{timestamp} are filled in (write {{ and }} for literal braces)"
        ) from None
    checkpoint_dir = config.checkpoint.dir or str(Path(run_dir) / "checkpoints")
    return dataclasses.replace(
        config,
        logging=dataclasses.replace(config.logging, run_dir=run_dir),
        checkpoint=dataclasses.replace(config.checkpoint, dir=checkpoint_dir),
    )


def save_config(config: Config, run_dir: str | Path) -> Path:
    """Write the resolved config to `<run_dir>/resolved_config.yaml` and return that path."""
    target = Path(run_dir) / RESOLVED_CONFIG_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by rest-megatron: the fully resolved config of this run. Load it with load_config.\n"
    target.write_text(header + yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return target
