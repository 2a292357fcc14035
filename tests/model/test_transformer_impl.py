"""`model.transformer_impl`: a missing or broken Transformer Engine is an error naming the fix, never a
silent fallback to the local layers (which on a GPU would lose flash attention and THD packing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rest_megatron.assets import tiny_hf_config
from rest_megatron.config import ConfigError, load_config
from rest_megatron.model.builder import layer_spec, model_spec_from_hf, resolve_transformer_impl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken_transformer_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `transformer_engine` package whose import fails the way a build without libcuda does."""
    package = tmp_path / "transformer_engine"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n == "transformer_engine" or n.startswith("transformer_engine.")]:
        monkeypatch.delitem(sys.modules, name)


def _assert_names_the_fix(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert (
        "Transformer Engine" in message and "[gpu]" in message and "model.transformer_impl=local" in message
    )


def test_broken_transformer_engine_is_an_error_naming_the_fix(broken_transformer_engine) -> None:
    with pytest.raises(RuntimeError) as error:
        resolve_transformer_impl("transformer_engine")
    _assert_names_the_fix(error)
    assert "libcuda.so.1" in str(error.value)  # the underlying cause is kept


def test_auto_on_a_gpu_does_not_hide_a_broken_install(broken_transformer_engine) -> None:
    with pytest.raises(RuntimeError) as error:
        resolve_transformer_impl("auto", gpu=True)
    _assert_names_the_fix(error)
    assert resolve_transformer_impl("auto", gpu=False) == "local"  # a CPU host picks local on purpose


def test_missing_transformer_engine_is_an_error_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformer_engine", None)  # import raises ModuleNotFoundError
    with pytest.raises(RuntimeError) as error:
        layer_spec(model_spec_from_hf(tiny_hf_config("tiny-qwen3")), transformer_impl="transformer_engine")
    _assert_names_the_fix(error)


def test_local_needs_no_transformer_engine(broken_transformer_engine) -> None:
    spec = layer_spec(model_spec_from_hf(tiny_hf_config("tiny-qwen3")), transformer_impl="local")
    assert "transformer_engine" not in repr(spec)


def test_unknown_impl_is_refused() -> None:
    with pytest.raises(ValueError, match="must be one of auto, transformer_engine, local"):
        resolve_transformer_impl("te")


def test_config_refuses_transformer_engine_on_cpu() -> None:
    with pytest.raises(ConfigError, match="set model.transformer_impl=local"):
        load_config(ROOT / "recipes" / "tiny-cpu.yaml", ["model.transformer_impl=transformer_engine"])
