"""A key-value lookup tool: the unit price of an item in a small fixed shop catalogue.

The tiny tool-use task asks for totals that need the price first, so the model has to call this tool
before it can compute anything. It is a dictionary lookup, so it runs in the service process like the
calculator. Unknown items are an error that lists what the catalogue has, as a real API would.
"""

from __future__ import annotations

PRICES: dict[str, int] = {
    "apple": 3,
    "banana": 2,
    "bread": 4,
    "butter": 6,
    "candle": 7,
    "carrot": 1,
    "cheese": 9,
    "coffee": 12,
    "eggs": 5,
    "flour": 3,
    "honey": 11,
    "lamp": 25,
    "milk": 2,
    "notebook": 4,
    "onion": 1,
    "pen": 2,
    "pepper": 8,
    "rice": 6,
    "salt": 1,
    "soap": 3,
    "sugar": 4,
    "tea": 10,
    "towel": 14,
    "umbrella": 19,
}
"""Item -> unit price in dollars."""

SCHEMA = {
    "name": "lookup_price",
    "description": "Look up the unit price, in dollars, of one item in the shop's catalogue.",
    "parameters": {
        "type": "object",
        "properties": {
            "item": {
                "type": "string",
                "description": "The item's name, singular and lower case, e.g. 'apple'.",
            }
        },
        "required": ["item"],
    },
}


def call(arguments: dict) -> tuple[bool, str, str | None]:
    """The tool entry point: (ok, output, error)."""
    item = arguments.get("item")
    if not isinstance(item, str):
        return False, "", 'lookup_price: \'item\' must be a string, e.g. {"item": "apple"}'
    price = PRICES.get(item.strip().lower())
    if price is None:
        return (
            False,
            "",
            f"lookup_price: no item {item!r} in the catalogue; it has: {', '.join(sorted(PRICES))}",
        )
    return True, str(price), None
