"""The name and layout map between Hugging Face tensors and Megatron's global tensors.

Megatron's distributed checkpoint (and `GPTModel.sharded_state_dict()`) describes every parameter
as a *global* tensor, keyed by a layout-independent name, of which each TP/PP rank holds a
rectangle. Those global layouts do not depend on TP or PP:

| Megatron key (per layer `decoder.layers.` + …)            | global rows (dim 0)                         |
|-----------------------------------------------------------|---------------------------------------------|
| `self_attention.linear_qkv.weight` / `.bias`              | per KV group g: q heads of g, then k_g, v_g |
| `mlp.linear_fc1.weight`                                   | [gate; up] (Megatron's swiglu factory)      |
| `embedding.word_embeddings.weight`, `output_layer.weight` | the vocabulary, 0-padded to 128·TP multiple |
| everything else                                           | the Hugging Face tensor unchanged           |

Layers are stacked along an extra leading axis (global layer index). TP splits the QKV rows by whole
groups and the fc1 rows as two halves (gate and up shards separately), so any rectangle of the
global tensor is a list of row runs of Hugging Face tensors.

A `Rule` states one Megatron tensor as a concatenation along dim 0 of `Block`s (row runs of
Hugging Face tensors, or zero padding). The same blocks drive the three directions:

- import: `read_rows` reads only the rows/columns a rank needs, straight from the safetensors
  slices (`safe_open(...).get_slice`);
- export: `split_global` cuts a full global tensor back into Hugging Face tensors (padding
  dropped);
- validation: `Rule.hf_shapes` is the shape each Hugging Face tensor must have for a config.

Shapes are declared with symbolic sizes (`hidden`, `ffn`, `q`, `kv`, `head_dim`, `vocab`) that
`dims(spec)` resolves from the `ModelSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch

from rest_megatron.model.builder import ModelSpec

LAYER_PREFIX = "decoder.layers."
"""Megatron's key prefix of per-layer tensors (stacked along a leading layer axis)."""
HF_LAYER_PREFIX = "model.layers.{layer}."
"""Hugging Face's name prefix of layer `layer`'s tensors."""


def dims(spec: ModelSpec) -> dict[str, int]:
    """The symbolic sizes that rule shapes are written in, for `spec`."""
    return {
        "hidden": spec.hidden_size,
        "ffn": spec.ffn_hidden_size,
        "q": spec.num_attention_heads * spec.head_dim,
        "kv": spec.num_query_groups * spec.head_dim,
        "head_dim": spec.head_dim,
        "vocab": spec.vocab_size,
    }


@dataclass(frozen=True)
class Block:
    """`rows` rows of Megatron's global tensor taken from rows [start, start+rows) of `hf` (None: zeros)."""

    hf: str | None
    start: int
    rows: int


@dataclass(frozen=True)
class Rule:
    """One Megatron tensor and the Hugging Face tensors it is made of.

    `megatron` and `hf` are relative to the layer prefixes when `layered`; an `hf` name may contain
    `{part}`, which the `grouped_qkv` kind fills with q, k and v. `shape` is each Hugging Face
    tensor's shape in symbolic sizes (for q/k/v the first size is the part's own: `q` or `kv`).
    """

    megatron: str
    hf: tuple[str, ...]
    shape: tuple[str, ...]
    kind: str = "concat"
    """How the Hugging Face tensors form the Megatron rows: concat, grouped_qkv or padded_vocab."""
    layered: bool = True
    when: str | None = None
    """A `ModelSpec` attribute that must be true for the rule to apply (e.g. `qkv_bias`)."""

    def applies(self, spec: ModelSpec) -> bool:
        return self.when is None or bool(getattr(spec, self.when))

    def only_when(self, attribute: str) -> Rule:
        """This rule, applied only where `spec.<attribute>` is true."""
        return replace(self, when=attribute)

    def megatron_key(self) -> str:
        return LAYER_PREFIX + self.megatron if self.layered else self.megatron

    def hf_shapes(self, d: dict[str, int], layer: int | None = None) -> dict[str, tuple[int, ...]]:
        """Each Hugging Face tensor's full name (for `layer`) and the shape the config implies."""
        prefix = HF_LAYER_PREFIX.format(layer=layer) if self.layered else ""
        assert not self.layered or layer is not None, f"layer index needed for {self.megatron}"
        shapes: dict[str, tuple[int, ...]] = {}
        for template in self.hf:
            for part in ("q", "k", "v") if "{part}" in template else ("",):
                sizes = [d[_PART_ROWS[part]] if i == 0 and part else d[s] for i, s in enumerate(self.shape)]
                shapes[prefix + template.replace("{part}", part)] = tuple(sizes)
        return shapes

    def megatron_rows(self, d: dict[str, int]) -> int | None:
        """Rows of the global Megatron tensor the config implies (None: padded, any size >= vocab)."""
        if self.kind == "padded_vocab":
            return None
        return sum(shape[0] for shape in self.hf_shapes(d, 0).values())

    def blocks(self, d: dict[str, int], rows: int, layer: int | None = None) -> list[Block]:
        """The row runs that make up the global Megatron tensor of `rows` rows."""
        return _LAYOUTS[self.kind](self, d, rows, layer)


_PART_ROWS = {"q": "q", "k": "kv", "v": "kv"}


def _concat(rule: Rule, d: dict[str, int], rows: int, layer: int | None) -> list[Block]:
    return [Block(name, 0, shape[0]) for name, shape in rule.hf_shapes(d, layer).items()]


def _grouped_qkv(rule: Rule, d: dict[str, int], rows: int, layer: int | None) -> list[Block]:
    # Megatron's fused QKV: for each query group g, its q heads, then k_g, then v_g (so TP can
    # split whole groups).
    q, k, v = rule.hf_shapes(d, layer)
    head_dim = d["head_dim"]
    groups = d["kv"] // head_dim
    q_rows = d["q"] // groups
    blocks: list[Block] = []
    for g in range(groups):
        blocks += [
            Block(q, g * q_rows, q_rows),
            Block(k, g * head_dim, head_dim),
            Block(v, g * head_dim, head_dim),
        ]
    return blocks


def _padded_vocab(rule: Rule, d: dict[str, int], rows: int, layer: int | None) -> list[Block]:
    (name,) = rule.hf_shapes(d, layer)
    if rows < d["vocab"]:
        raise ValueError(
            f"Megatron tensor {rule.megatron} has {rows} vocabulary rows but config.json says "
            f"vocab_size={d['vocab']}; use the config.json of the model this checkpoint came from"
        )
    return [Block(name, 0, d["vocab"])] + ([Block(None, 0, rows - d["vocab"])] if rows > d["vocab"] else [])


_LAYOUTS = {"concat": _concat, "grouped_qkv": _grouped_qkv, "padded_vocab": _padded_vocab}


def copy(megatron: str, hf: str, shape: tuple[str, ...], *, layered: bool = True) -> Rule:
    """The Hugging Face tensor unchanged."""
    return Rule(megatron, (hf,), shape, layered=layered)


def concat(megatron: str, hf: tuple[str, ...], shape: tuple[str, ...]) -> Rule:
    """Hugging Face tensors stacked along dim 0 (fc1 = [gate; up])."""
    return Rule(megatron, hf, shape)


def grouped_qkv(megatron: str, hf: str, shape: tuple[str, ...]) -> Rule:
    """q/k/v projections (`hf` contains `{part}`) fused per KV group; `shape[0]` is the part's rows."""
    return Rule(megatron, (hf,), shape, kind="grouped_qkv")


def padded_vocab(megatron: str, hf: str) -> Rule:
    """A [vocab, hidden] tensor; Megatron pads the rows with zeros (import) that export drops."""
    return Rule(megatron, (hf,), ("vocab", "hidden"), kind="padded_vocab", layered=False)


# ------------------------------------------------------------------------------------ import / export
def read_rows(
    read: Callable[[str, slice, slice | None], torch.Tensor],
    blocks: list[Block],
    rows: slice,
    cols: slice | None,
    *,
    dtype: torch.dtype,
    width: int | None,
) -> torch.Tensor:
    """Rows `rows` (columns `cols`) of the global tensor made of `blocks`, reading only those slices.

    `read(hf_name, row_slice, col_slice)` returns that slice of a Hugging Face tensor (col_slice is
    None for 1-D tensors); `width` is the number of columns read (None for 1-D), for padding rows.
    """
    pieces: list[torch.Tensor] = []
    position = 0
    for block in blocks:
        lo, hi = max(rows.start, position), min(rows.stop, position + block.rows)
        if lo < hi:
            if block.hf is None:
                pieces.append(torch.zeros((hi - lo,) if width is None else (hi - lo, width), dtype=dtype))
            else:
                start = block.start + lo - position
                pieces.append(read(block.hf, slice(start, start + hi - lo), cols).to(dtype))
        position += block.rows
    assert position >= rows.stop, f"rows {rows} beyond the {position} rows the blocks describe"
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


def split_global(blocks: list[Block], tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut a full global Megatron tensor into its Hugging Face tensors (padding rows dropped)."""
    parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    position = 0
    for block in blocks:
        if block.hf is not None:
            parts.setdefault(block.hf, []).append((block.start, tensor[position : position + block.rows]))
        position += block.rows
    assert position == tensor.shape[0], f"blocks cover {position} rows, the tensor has {tensor.shape[0]}"
    out: dict[str, torch.Tensor] = {}
    for name, runs in parts.items():
        runs.sort(key=lambda run: run[0])
        # clone: safetensors refuses tensors that share storage, and views would pin the whole tensor.
        out[name] = torch.cat([piece for _, piece in runs]).clone()
        assert out[name].shape[0] == sum(p.shape[0] for _, p in runs)
    return out


def join_hf(blocks: list[Block], tensors: dict[str, torch.Tensor], rows: int) -> torch.Tensor:
    """The full global Megatron tensor from whole Hugging Face tensors (the inverse of split_global)."""

    def read(name: str, row_slice: slice, col_slice: slice | None) -> torch.Tensor:
        return tensors[name][row_slice]

    sample = next(iter(tensors.values()))
    width = sample.shape[1] if sample.dim() > 1 else None
    return read_rows(read, blocks, slice(0, rows), None, dtype=sample.dtype, width=width)


# ------------------------------------------------------------------------------------------- units
@dataclass(frozen=True)
class Unit:
    """Tensors exported together, in Hugging Face order: the embedding, one layer, the head."""

    name: str
    rules: tuple[Rule, ...]
    layer: int | None = None


def units(rules: Iterable[Rule], num_layers: int) -> list[Unit]:
    """Embedding, layers 0..L-1, then the final norm and output layer: the order files are written in."""
    rules = list(rules)
    top = [r for r in rules if not r.layered]
    layered = tuple(r for r in rules if r.layered)
    first = tuple(r for r in top if r.megatron.startswith("embedding."))
    last = tuple(r for r in top if not r.megatron.startswith("embedding."))
    return (
        [Unit("embedding", first)]
        + [Unit(f"layer {i}", layered, i) for i in range(num_layers)]
        + [Unit("head", last)]
    )


def rules_by_key(rules: Iterable[Rule]) -> dict[str, Rule]:
    return {rule.megatron_key(): rule for rule in rules}


def describe(spec: ModelSpec) -> dict[str, Any]:
    """The config facts a shape error should quote."""
    return {
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.ffn_hidden_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_query_groups,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "num_hidden_layers": spec.num_layers,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }
