"""Synthetic training text for the tiny tokenizer, generated deterministically from a seed.

The text imitates what a tool-calling chat model reads and writes: questions, `<think>` reasoning,
Hermes-style `<tool_call>` JSON, tool schemas, tool responses, numbers and a little Python. The BPE
trained on it therefore learns merges for JSON keys, digits, punctuation runs such as `"}}` and the
pieces of the chat tags, so token boundaries in tests look like those of a real Qwen/Llama vocabulary.
Only `random.Random(seed)` is used, which is stable across platforms and Python versions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

WORDS = """
the a an of to and in is it that for on with as was at by be this have from or one had not but what all
were when we there can your which their said if do will each about how up out them then she many some so
these would other into has more her two like him see time could no make than first been its who now people
my made over did down only way find use may water long little very after words called just where most know
get through back much before go good new write our used me man too any day same right look think also around
another came come work three word must because does part even place well such here take why help put different
away again off went old number great tell men say small every found still between name should home big give
air line set own under read last never us left end along while might next sound below saw something thought
both few those always show large often together asked house world going want school important until form food
keep children feet land side without boy once animal life enough took four head above kind began almost live
page got earth need far hand high year mother light country father let night picture being study second soon
story since white ever paper hard near sentence better best across during today however sure knew try told
weather city price stock flight hotel search result answer question user assistant tool call function value
temperature celsius fahrenheit currency convert amount date calculate sum total average list file data query
""".split()

CITIES = [
    "Paris",
    "London",
    "Tokyo",
    "Berlin",
    "New York",
    "Madrid",
    "Rome",
    "Beijing",
    "Cairo",
    "Lima",
    "Oslo",
]
UNITS = ["celsius", "fahrenheit", "kelvin"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CNY"]

# (tool name, description, {param: (json type, value generator name)})
TOOLS: list[tuple[str, str, dict[str, tuple[str, str]]]] = [
    (
        "get_weather",
        "Get the current weather in a city",
        {"city": ("string", "city"), "unit": ("string", "unit")},
    ),
    (
        "search_web",
        "Search the web for a query",
        {"query": ("string", "sentence"), "top_k": ("integer", "small")},
    ),
    ("calculate", "Evaluate an arithmetic expression", {"expression": ("string", "expr")}),
    (
        "convert_currency",
        "Convert an amount between currencies",
        {"amount": ("number", "float"), "from": ("string", "cur"), "to": ("string", "cur")},
    ),
    (
        "book_flight",
        "Book a flight between two cities",
        {"origin": ("string", "city"), "destination": ("string", "city"), "date": ("string", "date")},
    ),
    ("get_stock_price", "Get the latest price of a stock", {"symbol": ("string", "symbol")}),
    ("run_python", "Run Python code and return stdout", {"code": ("string", "code")}),
    (
        "list_files",
        "List the files in a directory",
        {"path": ("string", "path"), "recursive": ("boolean", "bool")},
    ),
]


class _Gen:
    """One seeded generator; every helper draws from the same `random.Random`."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def words(self, lo: int, hi: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(lo, hi)))

    def sentence(self) -> str:
        s = self.words(3, 12)
        return s[0].upper() + s[1:] + self.rng.choice([".", ".", "?", "!", ":"])

    def number(self) -> str:
        kind = self.rng.random()
        if kind < 0.5:
            return str(self.rng.randint(0, 10_000))
        if kind < 0.8:
            return f"{self.rng.uniform(-1000, 1000):.{self.rng.randint(1, 4)}f}"
        return str(self.rng.randint(0, 10**12))

    def expr(self) -> str:
        ops = ["+", "-", "*", "/", "**", "%"]
        parts = [str(self.rng.randint(0, 999))]
        for _ in range(self.rng.randint(1, 4)):
            parts += [self.rng.choice(ops), str(self.rng.randint(0, 999))]
        return " ".join(parts)

    def code(self) -> str:
        name = self.rng.choice(["f", "g", "total", "scale", "parse", "main"])
        var = self.rng.choice(["x", "y", "n", "items", "data", "value"])
        body = self.rng.choice(
            [
                f"return {var} * {self.rng.randint(2, 9)}",
                f"return sum({var}) / len({var})",
                f"return [v + {self.rng.randint(1, 9)} for v in {var}]",
                f"print({var}[{self.rng.randint(0, 5)}])\n    return None",
                f'return {{"{var}": {var}, "ok": True}}',
            ]
        )
        return f"def {name}({var}):\n    {body}\n\nprint({name}({self.rng.randint(0, 99)}))"

    def value(self, gen: str) -> object:
        r = self.rng
        return {
            "city": lambda: r.choice(CITIES),
            "unit": lambda: r.choice(UNITS),
            "sentence": self.sentence,
            "small": lambda: r.randint(1, 10),
            "expr": self.expr,
            "float": lambda: round(r.uniform(1, 5000), 2),
            "cur": lambda: r.choice(CURRENCIES),
            "date": lambda: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            "symbol": lambda: "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(r.randint(2, 4))),
            "code": self.code,
            "path": lambda: (
                "/" + "/".join(r.choice(["home", "data", "src", "tmp", "logs"]) for _ in range(2))
            ),
            "bool": lambda: r.random() < 0.5,
        }[gen]()

    def tool_call(self) -> str:
        name, _, params = self.rng.choice(TOOLS)
        args = {k: self.value(g) for k, (_, g) in params.items()}
        return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"

    def schema(self) -> str:
        name, desc, params = self.rng.choice(TOOLS)
        props = {k: {"type": t, "description": self.words(2, 6)} for k, (t, _) in params.items()}
        fn = {"name": name, "description": desc, "parameters": {"type": "object", "properties": props}}
        fn["parameters"]["required"] = list(params)
        return json.dumps({"type": "function", "function": fn})

    def tool_response(self) -> str:
        payload = {"result": self.value(self.rng.choice(["float", "sentence", "small", "city"])), "ok": True}
        return "<tool_response>\n" + json.dumps(payload) + "\n</tool_response>"

    def think(self) -> str:
        return (
            "<think>\n" + " ".join(self.sentence() for _ in range(self.rng.randint(1, 4))) + "\n</think>\n\n"
        )

    def conversation(self) -> str:
        system = "You are a helpful assistant.\n\n# Tools\n\n<tools>\n" + self.schema() + "\n</tools>"
        turns = [f"<|im_start|>system\n{system}<|im_end|>", f"<|im_start|>user\n{self.sentence()}<|im_end|>"]
        answer = self.think() if self.rng.random() < 0.5 else ""
        answer += "\n".join(self.tool_call() for _ in range(self.rng.randint(1, 2)))
        turns.append(f"<|im_start|>assistant\n{answer}<|im_end|>")
        turns.append(f"<|im_start|>user\n{self.tool_response()}<|im_end|>")
        turns.append(f"<|im_start|>assistant\nThe answer is {self.number()}.<|im_end|>")
        return "\n".join(turns) + "\n"

    def sample(self) -> str:
        kinds = [self.conversation, self.tool_call, self.schema, self.think, self.code, self.tool_response]
        kinds += [self.sentence, lambda: " ".join(self.number() for _ in range(8)), self.expr]
        return self.rng.choice(kinds)()


def corpus(seed: int, num_samples: int) -> Iterator[str]:
    """Yield `num_samples` synthetic documents; the same seed always yields the same text."""
    gen = _Gen(seed)
    for _ in range(num_samples):
        yield gen.sample()
