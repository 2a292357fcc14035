"""Device discipline on real gloo ranks with an emulated accelerator
(`rest_megatron.testing.emulated_device`).

On a GPU the trainer's tensors must be on the runtime's device: NCCL serves only CUDA tensors, and a
host tensor next to a device tensor is an error. On a CPU rank both are the host, so these paths run
on the emulated device, where a host tensor in a collective or mixed into device math raises as it
would on a GPU: micro-batch construction, ResT weights and drift, the metric reductions of the train
step, the preemption vote, the checkpoint's optimizer-state vote and the SFT sums.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.ops.vocab_parallel import TokenStats
from rest_megatron.testing.emulated_device import HostTensorError, emulated_device, on_device
from rest_megatron.trainer.actor import PolicyActor, check_on_device
from rest_megatron.trainer.batching import TrainingSample, make_microbatches, pack_microbatches
from rest_megatron.trainer.checkpoint import _optimizer_has_state
from rest_megatron.trainer.loop import preempted
from rest_megatron.trainer.sft import global_sum, replica_loss_sum
from rest_megatron.trainer.stages import attach_weights

WORLD = 2  # DP=2: every reduction below really crosses ranks


def _dp_layout() -> int:
    init_model_parallel(ParallelLayout(tp=1, pp=1), seed=1, timeout_s=120)
    return dist.get_rank()


def _samples(count: int = 7) -> list[TrainingSample]:
    rng = random.Random(3)  # the same samples on every rank, as after the rollout broadcast
    samples = []
    for _ in range(count):
        n = rng.randint(5, 20)
        mask = [0] * 3 + [1] * (n - 3)
        samples.append(
            TrainingSample(
                token_ids=[rng.randrange(50) for _ in range(n)],
                loss_mask=mask,
                sampling_logprobs=[-rng.random() * m for m in mask],
                region_mask=[1 << rng.randrange(6) for _ in range(n)],
                advantage=rng.uniform(-1, 1),
            )
        )
    return samples


def _microbatches_weights_and_drift() -> dict:
    rank = _dp_layout()
    out = {}
    with emulated_device() as device:
        for build in (make_microbatches, pack_microbatches):
            microbatches = build(
                _samples(), dp_rank=rank, dp_size=WORLD, micro_batch_size=2, pad_id=0, device=device
            )
            gen = torch.Generator().manual_seed(rank)
            stats = []
            for mb in microbatches:
                shape = mb["labels"].shape
                stats.append(
                    TokenStats(
                        logprob=(-torch.rand(shape, generator=gen)).to(device),
                        entropy=torch.rand(shape, generator=gen).to(device),
                        collision=(0.25 + 0.5 * torch.rand(shape, generator=gen)).to(device),
                    )
                )
            metrics = attach_weights(microbatches, stats, weights="paper", params={}, step=0)
            for mb in microbatches:
                check_on_device(mb, device)  # what the actor checks before handing a batch to the model
            host = [f"{k}" for mb in microbatches for k, v in mb.items() if not on_device(v)]
            drift = sum(
                float(((mb["sampling_logprobs"] - st.logprob).abs() * mb["loss_mask"]).sum().cpu())
                for mb, st in zip(microbatches, stats)
            )
            tokens = sum(float(mb["loss_mask"].sum().cpu()) for mb in microbatches)
            out[build.__name__] = {
                "host": host,
                "drift": metrics["logprob_drift"],
                "expected_drift": drift / tokens,
            }
    return out


def test_microbatches_weights_and_drift_stay_on_the_device(gloo) -> None:
    for result in gloo(WORLD).run(_microbatches_weights_and_drift):
        for name, got in result.items():
            assert got["host"] == [], f"{name} left {got['host']} on the host"
            assert got["drift"] == pytest.approx(got["expected_drift"], rel=1e-5), name


def _reduced_metrics() -> dict:
    rank = _dp_layout()
    with emulated_device() as device:
        actor = PolicyActor(None, None, None, vocab_size=1, device=device)  # the reductions need no model

        def scalar(value: float) -> torch.Tensor:
            return torch.tensor(value, dtype=torch.float64, device=device)

        outputs = [
            {
                "loss": scalar(1.0 + rank),
                "num_tokens": scalar(4.0),
                "ratio_max": scalar(1.0 + rank + i),
                "entropy_sum": scalar(2.0),
            }
            for i in range(2)
        ]
        return actor._reduce_metrics(outputs)


def test_train_step_metric_reductions_run_on_the_device(gloo) -> None:
    for metrics in gloo(WORLD).run(_reduced_metrics):
        # loss: (1+1) + (2+2); tokens: 4 per micro-batch; ratio_max: max over all; entropy: 2·4 / 16
        assert metrics == pytest.approx({"loss": 6.0, "num_tokens": 16.0, "ratio_max": 3.0, "entropy": 0.5})


def _preemption_vote() -> bool:
    rank = _dp_layout()
    with emulated_device() as device:
        return preempted(SimpleNamespace(stop_requested=rank == 1, device=device))


def test_preemption_vote_runs_on_the_device(gloo) -> None:
    assert gloo(WORLD).run(_preemption_vote) == [True, True]


def _optimizer_state_vote() -> list[bool]:
    rank = _dp_layout()
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    with emulated_device():
        before = _optimizer_has_state(optimizer)
    if rank == 0:  # momentum buffers exist after the first step, on this rank only
        param.grad = torch.ones(3)
        optimizer.step()
    with emulated_device():
        return [before, _optimizer_has_state(optimizer)]


def test_checkpoint_optimizer_state_vote_runs_on_the_device(gloo) -> None:
    assert gloo(WORLD).run(_optimizer_state_vote) == [[False, True], [False, True]]


def _sft_sums() -> list[float]:
    rank = _dp_layout()
    with emulated_device() as device:
        tokens = global_sum(torch.tensor(3.0 + rank, device=device))
        losses = [
            {"loss_sum": torch.tensor(1.5 + rank, device=device)},
            {"loss_sum": torch.tensor(0.5, device=device)},
        ]
        return [float(tokens), float(replica_loss_sum(losses, device))]


def test_sft_sums_run_on_the_device(gloo) -> None:
    for tokens, loss_sum in gloo(WORLD).run(_sft_sums):
        assert tokens == pytest.approx(7.0)
        assert loss_sum == pytest.approx(5.0)  # (1.5 + 0.5) + (2.5 + 0.5)


def _host_tensors_are_caught() -> list[str]:
    _dp_layout()
    caught = []
    with emulated_device() as device:
        on_dev = torch.ones(4, device=device)
        for name, wrong in [
            ("collective on a host tensor", lambda: dist.all_reduce(torch.ones(1))),
            ("host tensor in device math", lambda: on_dev - torch.ones(4)),
            (
                "host micro-batch handed to the model",
                lambda: check_on_device({"tokens": torch.ones(2, 3)}, device),
            ),
        ]:
            try:
                wrong()
            except (HostTensorError, ValueError):
                caught.append(name)
    return caught


def test_the_emulated_device_catches_host_tensors(gloo) -> None:
    """The check itself can fail: each kind of misplaced tensor raises."""
    assert gloo(WORLD).run(_host_tensors_are_caught)[0] == [
        "collective on a host tensor",
        "host tensor in device math",
        "host micro-batch handed to the model",
    ]
