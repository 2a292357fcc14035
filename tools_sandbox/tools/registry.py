"""The tool registry: environments (groups of tools that share state in a session), by name.

An environment is what a session is built from: `python` (one tool, a persistent interpreter),
`calculator` and `lookup_price` (run in the service: a bounded parser and a dictionary lookup, not
code execution; `SERVICE_TOOLS`), each BFCL
multi-turn class (`GorillaFileSystem`, `TwitterAPI`, ...; tools are its methods), and user tool
modules. A session is created from environment names or tool names; a tool name pulls in its
environment. Tool names are unique across the registry, because the model calls tools by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tools_sandbox.tools import calculator, catalogue

PYTHON_SCHEMA = {
    "name": "python",
    "description": (
        "Run Python code in a sandbox (no network; files only in the working directory). In a "
        "session, variables persist between calls. Returns what the code prints; the value of a "
        "final expression is printed like in a REPL."
    ),
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python source to execute."}},
        "required": ["code"],
    },
}


SERVICE_TOOLS: dict[str, Callable[[dict], tuple[bool, str, str | None]]] = {
    "calculator": calculator.call,
    "lookup_price": catalogue.call,
}
"""Tools cheap and safe enough to run in the service process: name -> fn(arguments) -> (ok, output, error)."""


@dataclass(frozen=True)
class EnvSpec:
    """One environment: its kind, its tool schemas and where its code lives."""

    name: str
    kind: str
    """"service" (runs in the service process), "python", "bfcl" (a BFCL class) or "module" (user tools)."""
    schemas: tuple[dict, ...]
    module: str | None = None
    attr: str | None = None
    readonly_paths: tuple[str, ...] = ()
    """Host paths the sandbox must see read-only for this environment's code (user modules)."""
    sys_path: tuple[str, ...] = ()

    @property
    def in_service(self) -> bool:
        """True when the tools run in the service process instead of a sandbox worker."""
        return self.kind == "service"

    @property
    def tool_names(self) -> list[str]:
        """Names of this environment's tools."""
        return [s["name"] for s in self.schemas]

    def worker_spec(self, config: Any = None) -> dict:
        """The `init` entry the sandbox worker needs to build this environment."""
        return {
            "name": self.name,
            "kind": self.kind,
            "module": self.module,
            "attr": self.attr,
            "config": config,
            "tools": self.tool_names,
        }


def as_function_tool(schema: dict) -> dict:
    """Wrap a schema the way chat templates (`apply_chat_template(tools=...)`) expect it."""
    return {"type": "function", "function": schema}


class ToolRegistry:
    """Environments and tools by name."""

    def __init__(self) -> None:
        self.envs: dict[str, EnvSpec] = {}
        self.tool_env: dict[str, str] = {}

    def register(self, env: EnvSpec) -> None:
        """Add an environment; its name and tool names must be new.

        Raises:
            ValueError: a name is taken (the message names the owner).
        """
        if env.name in self.envs:
            raise ValueError(f"environment {env.name!r} is already registered; give the module an ENV_NAME.")
        for tool in env.tool_names:
            if tool in self.tool_env:
                raise ValueError(
                    f"tool {tool!r} of {env.name!r} clashes with the tool of the same name in "
                    f"{self.tool_env[tool]!r}; rename one of them."
                )
        for schema in env.schemas:
            if not isinstance(schema.get("name"), str) or not isinstance(schema.get("parameters"), dict):
                raise ValueError(
                    f"tool schema {schema!r} of {env.name!r} needs a 'name' and a 'parameters' object."
                )
        self.envs[env.name] = env
        self.tool_env.update({tool: env.name for tool in env.tool_names})

    def env_of(self, tool: str) -> EnvSpec:
        """The environment that owns `tool`; KeyError with the known names if none."""
        if tool not in self.tool_env:
            raise KeyError(f"unknown tool {tool!r}; known tools: {', '.join(sorted(self.tool_env))}")
        return self.envs[self.tool_env[tool]]

    def resolve(self, names: Iterable[str]) -> list[EnvSpec]:
        """Environments for a list of environment or tool names, without duplicates, in order.

        Raises:
            KeyError: a name is neither; the message lists what exists.
        """
        out: list[EnvSpec] = []
        for name in names:
            if name in self.envs:
                env = self.envs[name]
            elif name in self.tool_env:
                env = self.envs[self.tool_env[name]]
            else:
                raise KeyError(
                    f"unknown environment or tool {name!r}; environments: {', '.join(sorted(self.envs))}"
                )
            if env not in out:
                out.append(env)
        return out

    def schemas(self, names: Iterable[str] | None = None) -> list[dict]:
        """Function-tool schemas for `names` (environments or tools), or for everything."""
        envs = self.resolve(names) if names is not None else list(self.envs.values())
        return [as_function_tool(schema) for env in envs for schema in env.schemas]


def builtin_registry(*, bfcl: bool = True) -> ToolRegistry:
    """The registry with calculator, lookup_price, python and (when `bfcl-eval` is installed) the BFCL
    classes."""
    from tools_sandbox.tools import bfcl as bfcl_tools

    registry = ToolRegistry()
    registry.register(EnvSpec("calculator", "service", (calculator.SCHEMA,)))
    registry.register(EnvSpec("lookup_price", "service", (catalogue.SCHEMA,)))
    registry.register(EnvSpec("python", "python", (PYTHON_SCHEMA,)))
    if bfcl:
        for env in bfcl_tools.environments():
            registry.register(env)
    return registry
