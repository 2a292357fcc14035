"""An emulated accelerator on CPU, so the CPU suite catches a host tensor where a device tensor belongs.

On a CPU rank the runtime's device *is* the host, so a forgotten `.to(device)` or a collective on a
host tensor goes unnoticed; on a GPU the same code fails (NCCL serves only CUDA tensors: "No backend
type associated with device type cpu"). Inside `emulated_device()` the runtime's device is a separate
device, reported as `meta`, whose tensors (`DeviceTensor`) keep their values in a host tensor and
compute for real. The rules are those of a GPU with an NCCL group:

- factories with `device=` the emulated device, and `.to(device)`, make device tensors; results of
  ops on device tensors stay on the device; `.cpu()` / `.to("cpu")` / `float()` come back to the host;
- an op that mixes a device tensor with a host tensor of one or more dimensions raises
  `HostTensorError` (0-dim host tensors are allowed as scalars, and `copy_` copies across, as on CUDA);
- a collective (any `c10d` op) on a host tensor raises `HostTensorError`; on device tensors it runs on
  the real gloo group with their host values.

`distributed.compute_device()` returns the emulated device inside the context, so code that asks the
runtime where to put a tensor gets it. The Megatron model itself is not emulated: the checks cover
what the trainer builds, reduces and hands over. Object collectives (`broadcast_object_list`) pick
their own device from the group's backend, so they are outside what this emulation can judge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("meta")
"""How the emulated device reports itself."""

_CROSS_DEVICE_OPS = {"aten::copy_", "aten::_to_copy", "aten::_local_scalar_dense"}


class HostTensorError(RuntimeError):
    """A host tensor reached an op or a collective that runs on the device."""


class DeviceTensor(torch.Tensor):
    """A tensor on the emulated device: reports `DEVICE`, holds its values in the host tensor `inner`."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> DeviceTensor:
        tensor = torch.Tensor._make_wrapper_subclass(
            cls,
            inner.shape,
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            device=DEVICE,
            requires_grad=False,
        )
        tensor.inner = inner
        return tensor

    def __repr__(self) -> str:
        return f"DeviceTensor({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on an emulated device tensor outside emulated_device()")


def _is_device(target: Any) -> bool:
    return target is not None and torch.device(target).type == DEVICE.type


class _Factories(TorchFunctionMode):
    """`torch.tensor(..., device=DEVICE)` and friends never reach the dispatcher as a device op:
    build them on the host and move them to the device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.tolist and isinstance(
            args[0], DeviceTensor
        ):  # a device-to-host copy, as on CUDA
            return args[0].inner.tolist()
        if not _is_device(kwargs.get("device")):
            return func(*args, **kwargs)
        result = func(*args, **{**kwargs, "device": "cpu"})
        if isinstance(result, torch.Tensor) and not isinstance(result, DeviceTensor):
            return DeviceTensor(result)
        return result


class _Ops(TorchDispatchMode):
    """Runs every op on the host values and enforces where tensors may meet (see the module docstring)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        device_inputs = [x for x in flat if isinstance(x, DeviceTensor)]
        host_inputs = [x for x in flat if isinstance(x, torch.Tensor) and not isinstance(x, DeviceTensor)]
        name = func._schema.name
        to_device = _is_device(kwargs.get("device"))
        if func.namespace == "c10d" and host_inputs:
            raise HostTensorError(
                f"{name} got a tensor on {host_inputs[0].device}: "
                "this process group serves only the runtime's "
                f"device (as NCCL serves only CUDA); create the tensor with device=the runtime's device"
            )
        if device_inputs and name not in _CROSS_DEVICE_OPS:
            mixed = [x for x in host_inputs if x.dim() > 0]
            if mixed:
                raise HostTensorError(
                    f"{name} mixes device tensors with a host tensor of shape {tuple(mixed[0].shape)}; "
                    "move it to "
                    "the runtime's device"
                )
        wrapper_of = {id(x.inner): x for x in device_inputs}
        unwrapped_args, unwrapped_kwargs = tree_map(
            lambda x: x.inner if isinstance(x, DeviceTensor) else x, (args, kwargs)
        )
        if to_device:
            unwrapped_kwargs["device"] = torch.device("cpu")
        result = func(*unwrapped_args, **unwrapped_kwargs)
        stays_on_device = to_device or (
            bool(device_inputs) and not (name == "aten::_to_copy" and kwargs.get("device") is not None)
        )

        def rewrap(value: Any) -> Any:
            if not isinstance(value, torch.Tensor):
                return value
            if id(value) in wrapper_of:  # in place or returned as is: the same device tensor
                return wrapper_of[id(value)]
            return DeviceTensor(value) if stays_on_device else value

        return tree_map(rewrap, result)


@contextlib.contextmanager
def emulated_device() -> Iterator[torch.device]:
    """Within: device tensors are checked as on a GPU with NCCL, and `compute_device()` is the device."""
    from rest_megatron import distributed

    previous = distributed._compute_device
    distributed._compute_device = DEVICE
    try:
        with _Factories(), _Ops():
            yield DEVICE
    finally:
        distributed._compute_device = previous


def on_device(value: Any) -> bool:
    """Whether `value` is a tensor on the emulated device."""
    return isinstance(value, DeviceTensor)
