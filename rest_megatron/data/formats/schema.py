"""Tool schemas of every published format, rewritten as OpenAI-style function schemas.

The data sets describe parameters in three dialects:
- JSON-schema-like objects with Python type names (BFCL, ToolACE): {"type": "dict", "properties": {...},
  "required": [...]}, with "float", "tuple", "any", Java's "HashMap"/"long" and so on;
- flat maps (xLAM, Hammer, ToolRL, API-Bank): {"param": {"type": "str, optional", "description", "default"}};
- Python typing strings inside either: "List[int]", "Optional[str]", "Dict[str, Any]".

`function_schema` turns any of them into {"name", "description", "parameters": {"type": "object",
"properties", "required"}} whose types are JSON-schema types. Choices:
- "any"/"Any" becomes "string", as BFCL's own OpenAI conversion does; an empty type string is dropped
  (JSON schema's "anything"). Unknown type names are rejected, not guessed: the record is reported.
- A flat-map parameter is required unless its type says optional or it has a default (xLAM's rule:
  "str, optional" and `default` both mark optional ones). An empty-string default of a non-string
  parameter means "none" in xLAM and is dropped, as it would not be a valid value.
- BFCL's non-standard "optional" keys are dropped; `required` alone says what is optional.
"""

from __future__ import annotations

import re
from typing import Any

from rest_megatron.data.formats.base import RecordError

JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})

_TYPE_NAMES = {
    **dict.fromkeys(
        ("str", "string", "text", "char", "any", "datetime", "date", "time", "path", "url"), "string"
    ),
    **dict.fromkeys(("int", "integer", "long", "short", "byte", "bigint"), "integer"),
    **dict.fromkeys(("float", "double", "number", "decimal", "numeric"), "number"),
    **dict.fromkeys(("bool", "boolean"), "boolean"),
    **dict.fromkeys(
        ("list", "array", "tuple", "set", "sequence", "arraylist", "queue", "stack", "iterable"), "array"
    ),
    **dict.fromkeys(("dict", "object", "map", "mapping", "hashmap", "hashtable", "json"), "object"),
    **dict.fromkeys(("none", "null", "nonetype"), "null"),
}
_GENERIC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*\[(.*)\]\s*$", re.DOTALL)
_OPTIONAL_SUFFIX = re.compile(r",?\s*\(?\s*optional\s*\)?\s*$", re.IGNORECASE)


def _split_top(text: str) -> list[str]:
    """Split "int, List[str]" at top-level commas."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def type_spec(raw: Any) -> tuple[dict[str, Any], bool]:
    """({"type": ..., maybe "items"}, marked_optional) for a type name or typing string of any dialect."""
    if isinstance(raw, list):  # a JSON-schema union
        specs = [type_spec(t)[0].get("type") for t in raw]
        return ({"type": [t for t in specs if t]} if all(specs) else {}), False
    if not isinstance(raw, str):
        raise RecordError("bad_tool_schema", f"a parameter type must be a string, got {raw!r}")
    text = raw.strip()
    optional = False
    if _OPTIONAL_SUFFIX.search(text) and text.lower() != "optional":
        text, optional = _OPTIONAL_SUFFIX.sub("", text).strip(), True
    if not text:
        return {}, optional
    generic = _GENERIC.match(text)
    if generic:
        outer, inner = generic.group(1).rsplit(".", 1)[-1].lower(), _split_top(generic.group(2))
        if outer in ("optional", "union"):
            non_null = [t for t in inner if t.lower() not in ("none", "nonetype")]
            spec = type_spec(non_null[0])[0] if non_null else {"type": "null"}
            return spec, optional or outer == "optional" or len(non_null) < len(inner)
        base = _TYPE_NAMES.get(outer)
        if base is None:
            raise RecordError("bad_tool_schema", f"unknown parameter type {raw!r}")
        if base == "array" and len(inner) == 1 and outer != "tuple":
            items = type_spec(inner[0])[0]
            return ({"type": "array", "items": items} if items else {"type": "array"}), optional
        return {"type": base}, optional
    base = _TYPE_NAMES.get(text.lower())
    if base is None:
        raise RecordError("bad_tool_schema", f"unknown parameter type {raw!r}")
    return {"type": base}, optional


def property_schema(spec: Any, where: str) -> dict[str, Any]:
    """One parameter's schema with JSON-schema types, recursing into items and nested properties."""
    if not isinstance(spec, dict):
        raise RecordError(
            "bad_tool_schema", f"parameter {where} must be an object, got {type(spec).__name__}"
        )
    out = type_spec(spec["type"])[0] if "type" in spec else {}
    if "items" in spec:
        out.pop("items", None)
    out.update(
        (k, v) for k, v in spec.items() if k not in ("type", "optional", "properties", "items", "required")
    )
    if isinstance(spec.get("items"), dict):
        out["items"] = property_schema(spec["items"], f"{where}[]")
    if isinstance(spec.get("additionalProperties"), dict):
        out["additionalProperties"] = property_schema(spec["additionalProperties"], f"{where}{{}}")
    if "properties" in spec:
        nested = object_schema(spec, where)
        out.update(type="object", properties=nested["properties"])
        if nested.get("required"):
            out["required"] = nested["required"]
    if out.get("default") == "" and out.get("type") not in ("string", None):
        del out["default"]
    return out


def object_schema(params: dict[str, Any], where: str) -> dict[str, Any]:
    """A JSON-schema-like parameters object: properties converted, `required` checked against them."""
    properties = params.get("properties") or {}
    if not isinstance(properties, dict):
        raise RecordError("bad_tool_schema", f"{where}: 'properties' must be an object")
    required = params.get("required") or []
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise RecordError("bad_tool_schema", f"{where}: 'required' must be a list of parameter names")
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise RecordError(
            "bad_tool_schema", f"{where}: required parameters {unknown} are not among its properties"
        )
    converted = {name: property_schema(spec, f"{where}.{name}") for name, spec in properties.items()}
    return {"type": "object", "properties": converted, "required": list(required)}


def flat_schema(params: dict[str, Any], where: str) -> dict[str, Any]:
    """xLAM's {"param": {"type", "description", "default"}} map as a parameters object."""
    properties, required = {}, []
    for name, spec in params.items():
        if not isinstance(spec, dict):
            raise RecordError(
                "bad_tool_schema", f"parameter {where}.{name} must be an object, got {type(spec).__name__}"
            )
        optional = "default" in spec or spec.get("required") is False
        if isinstance(spec.get("type"), str):
            optional = type_spec(spec["type"])[1] or optional
        prop = property_schema({k: v for k, v in spec.items() if k != "required"}, f"{where}.{name}")
        properties[name] = prop
        if not optional:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def function_schema(tool: Any, where: str = "tool") -> dict[str, Any]:
    """{"name", "description", "parameters"} from a tool of any dialect (bare or OpenAI-wrapped)."""
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        tool = tool["function"]
    if not isinstance(tool, dict):
        raise RecordError("bad_tool_schema", f"{where} must be an object, got {type(tool).__name__}")
    name = tool.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RecordError("bad_tool_schema", f"{where} has no name")
    where = f"tool {name!r}"
    description = tool.get("description") or ""
    if not isinstance(description, str):
        raise RecordError("bad_tool_schema", f"{where}: description must be a string")
    params = tool.get("parameters", tool.get("input_parameters"))
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RecordError(
            "bad_tool_schema", f"{where}: parameters must be an object, got {type(params).__name__}"
        )
    is_object = "properties" in params or str(params.get("type", "")).lower() in ("dict", "object")
    parameters = object_schema(params, where) if is_object else flat_schema(params, where)
    return {"name": name.strip(), "description": description, "parameters": parameters}


def function_schemas(tools: Any, where: str = "tools") -> list[dict[str, Any]]:
    """A list of tools converted; duplicate names are an error (a call could not say which one it means)."""
    if not isinstance(tools, list):
        raise RecordError("bad_tool_schema", f"{where} must be a list of tools, got {type(tools).__name__}")
    out = [function_schema(tool, f"{where}[{i}]") for i, tool in enumerate(tools)]
    names = [t["name"] for t in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RecordError("bad_tool_schema", f"{where} declare {duplicates} more than once")
    return out
