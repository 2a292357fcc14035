"""Hugging Face <-> Megatron conversion: one adapter per model family, one map for every direction.

    adapters/          the map per family (Qwen2/2.5, Qwen3, Llama 3.x): common rules + the family's own
    mapping.py         rules and blocks: how Hugging Face tensors form Megatron's global tensors
    pieces.py          the rectangles of those global tensors this rank holds (from Megatron itself)
    hf_files.py        Hugging Face folders: sliced safetensors reads, validation, metadata files
    from_hf.py         HF folder -> distributed checkpoint on TP×PP ranks        (`convert from-hf`)
    to_hf.py           distributed checkpoint at any TP/PP -> HF folder, streamed (`convert to-hf`)
    live.py            HF-named full tensors from a live sharded model, for weight sync
    cli.py             the two commands

Import, export and the live gather all go through `mapping.Rule.blocks`, so they cannot disagree
about a layout; `tests/distributed/test_convert.py` checks each family against transformers' logits.
"""
