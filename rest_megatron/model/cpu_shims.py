"""Shims that let megatron-core 0.16 run on a CPU-only host with the gloo backend.

megatron-core assumes CUDA in a handful of places that have nothing to do with the math: it asks for
`torch.cuda.current_device()`, allocates small bookkeeping tensors with `device="cuda"`, calls
`.cuda()` and `torch.cuda.synchronize()`, keeps its dropout RNG streams in CUDA generators, and the
distributed optimizer checks `Tensor.type()` for CUDA type names. On a CPU build of torch each of those
fails with "Torch not compiled with CUDA enabled". The shims below redirect exactly those calls to
the CPU. They are applied by `apply_cpu_shims()` only when CUDA is absent (see
`rest_megatron.distributed.init_distributed`); on a GPU host nothing here runs.

Everything is idempotent and process-global, which is what the patched code expects: Megatron reads
these through the `torch` module at call time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import random as megatron_random

_APPLIED = False

# Factory functions that megatron-core calls with device="cuda" (schedules, clip_grads, optimizer,
# param_and_grad_buffer, dist_checkpointing). Only the device argument is rewritten.
_FACTORIES = (
    "empty",
    "zeros",
    "ones",
    "full",
    "tensor",
    "arange",
    "randn",
    "rand",
    "randint",
    "empty_like",
    "zeros_like",
    "ones_like",
    "full_like",
    "as_tensor",
)


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, int):  # bare ints mean "cuda:<int>" to torch
        return True
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return False


def _cpu_device_kwarg(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return fn(*args, **kwargs)

    wrapper.__rest_megatron_shim__ = True  # type: ignore[attr-defined]
    return wrapper


def _tensor_to(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args and _is_cuda_device(args[0]):
            args = ("cpu", *args[1:])
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return original(self, *args, **kwargs)

    return to


def _tensor_type(original: Callable[..., Any]) -> Callable[..., Any]:
    # The distributed optimizer asserts param.type() is one of the torch.cuda.*Tensor names.
    @functools.wraps(original)
    def type_(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return original(self, *args, **kwargs)
        name = original(self)
        return name.replace("torch.", "torch.cuda.", 1) if name.startswith("torch.") else name

    return type_


class CpuRNGStatesTracker:
    """Drop-in for Megatron's `CudaRNGStatesTracker` that keeps named *CPU* generator states.

    Megatron forks a named RNG stream around dropout and weight init in tensor-parallel regions
    (rotary embeddings and attention ask for it even at dropout 0). This class has the same
    interface (`reset`, `get_states`, `set_states`, `add`, `fork`, `is_initialized`) but swaps the
    CPU default generator state instead of a CUDA one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.use_cudagraphable_rng = False
        self.is_inference_rng_tracker = False
        self.reset()

    def is_initialized(self) -> bool:
        return self._is_initialized

    def reset(self) -> None:
        self._is_initialized = False
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()

    def get_states(self) -> dict[str, torch.Tensor]:
        return dict(self.states_)

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self._is_initialized = True
        self.states_ = states

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_:
            raise ValueError(f"RNG seed {seed} is already tracked")
        if name in self.states_:
            raise ValueError(f"RNG state {name!r} is already tracked")
        self._is_initialized = True
        self.seeds_.add(seed)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        self.states_[name] = generator.get_state()

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
        if name not in self.states_:
            raise ValueError(f"RNG state {name!r} was never added to the tracker")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


def apply_cpu_shims() -> None:
    """Patch torch so megatron-core's CUDA-only calls land on the CPU. No-op when CUDA is present."""
    global _APPLIED
    if _APPLIED or torch.cuda.is_available():
        return
    # (1) `device=torch.cuda.current_device()` is everywhere in layer construction and RoPE.
    torch.cuda.current_device = lambda: torch.device("cpu")  # type: ignore[assignment]
    torch.cuda.set_device = lambda device: None  # type: ignore[assignment]
    # (2) Schedules and checkpoint saving synchronize, allocate on "cuda" and call .cuda().
    torch.cuda.synchronize = lambda device=None: None  # type: ignore[assignment]
    for name in _FACTORIES:
        original = getattr(torch, name)
        if not getattr(original, "__rest_megatron_shim__", False):
            setattr(torch, name, _cpu_device_kwarg(original))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[assignment]
    torch.Tensor.to = _tensor_to(torch.Tensor.to)  # type: ignore[method-assign]
    # (3) The distributed optimizer checks Tensor.type() against CUDA type names.
    torch.Tensor.type = _tensor_type(torch.Tensor.type)  # type: ignore[method-assign]
    _APPLIED = True


def install_cpu_rng_tracker(seed: int) -> None:
    """Replace Megatron's CUDA RNG tracker with `CpuRNGStatesTracker`, seeded like Megatron seeds it.

    Must run after `initialize_model_parallel` (the tensor-parallel rank picks the stream), and
    replaces `model_parallel_cuda_manual_seed`, which would touch CUDA generators.
    """
    tracker = CpuRNGStatesTracker()
    # Same offsets as megatron.core.tensor_parallel.random.model_parallel_cuda_manual_seed.
    tracker.add("data-parallel-rng", seed)
    tracker.add("model-parallel-rng", seed + 2718 + parallel_state.get_tensor_model_parallel_rank())
    tracker.add(
        "expert-parallel-rng",
        seed
        + 1024
        + 100 * parallel_state.get_expert_model_parallel_rank()
        + parallel_state.get_expert_tensor_parallel_rank(),
    )
    # Activation recomputation snapshots the "CUDA" generator next to the CPU one and restores both
    # around the recomputed forward. On CPU the CPU generator is the only one and it is already
    # snapshotted, so the CUDA half becomes a copy of it that is never applied.
    megatron_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    megatron_random._set_cuda_rng_state = lambda *args, **kwargs: None
    megatron_random._CUDA_RNG_STATE_TRACKER = tracker
    megatron_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    # Megatron's helper type checks against its own class when collecting states for checkpoints.
    megatron_random.CudaRNGStatesTracker = CpuRNGStatesTracker  # type: ignore[misc]
