"""The step gradient of the aggregated ResT loss does not depend on how the batch is spread over 2 gloo
data-parallel ranks and their micro-batches (one global denominator); `per-microbatch` instead reproduces
the authors' verl arithmetic, which does depend on it.

Each rank builds the same fixed batch (tests/algo/test_aggregation.py:make_batch), takes its rows, sums its
micro-batches' denominators, all-reduces that once before the micro-batch loop, back-propagates each
micro-batch's contribution, and all-reduces (SUM) the gradient, as the trainer does.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from rest_megatron.algo.aggregation import aggregation_names, get_aggregation
from rest_megatron.algo.policy_loss import get_policy_loss
from rest_megatron.algo.weights import get_token_weights
from tests.algo.test_aggregation import make_batch, micro_batch_terms, step_gradient

SEED = 7
NUM_ROWS = 8


def rank_step(agg_name: str, weights_name: str, rows_per_rank: list[int], splits_per_rank: list[list[int]]):
    """On each rank: (summed gradient of W, summed step loss, global denominator)."""
    rank = dist.get_rank()
    batch = make_batch(seed=SEED)
    first = sum(rows_per_rank[:rank])
    bounds = torch.tensor([first, *splits_per_rank[rank]]).cumsum(0).tolist()
    assert bounds[-1] == first + rows_per_rank[rank]
    W = batch["W"].clone().requires_grad_()
    terms = [
        micro_batch_terms(batch, W, slice(a, b), agg_name, weights_name) for a, b in zip(bounds, bounds[1:])
    ]
    denominator = sum(d for d, _ in terms).clone()
    dist.all_reduce(denominator)  # once per step, before the micro-batch loop
    step_loss = torch.zeros((), dtype=torch.float64)
    for _, contribution in terms:
        value = contribution(denominator)
        value.backward()
        step_loss += value.detach()
    grad = W.grad.clone()
    dist.all_reduce(grad)
    dist.all_reduce(step_loss)
    return grad, step_loss, denominator


LAYOUTS = [
    ([4, 4], [[4], [4]]),
    ([4, 4], [[1, 3], [2, 2]]),
    ([4, 4], [[1, 1, 1, 1], [4]]),
    ([5, 3], [[2, 3], [1, 1, 1]]),
    ([1, 7], [[1], [3, 4]]),
]


@pytest.mark.parametrize("weights_name", ["paper", "entropy"])
@pytest.mark.parametrize("agg_name", [n for n in aggregation_names() if get_aggregation(n).split_invariant])
def test_two_rank_gradient_equals_single_process(gloo, agg_name, weights_name):
    pool = gloo(2)
    batch = make_batch(seed=SEED)
    reference = step_gradient(batch, agg_name, weights_name, [NUM_ROWS])
    W = batch["W"].clone().requires_grad_()
    ref_den, ref_contribution = micro_batch_terms(batch, W, slice(0, NUM_ROWS), agg_name, weights_name)
    ref_loss = ref_contribution(ref_den).detach()
    assert reference.abs().max() > 1e-3
    for rows, splits in LAYOUTS:
        results = pool.run(rank_step, agg_name, weights_name, rows, splits)
        for grad, loss, denominator in results:
            torch.testing.assert_close(grad, reference, atol=1e-6, rtol=0)
            assert float(loss) == pytest.approx(float(ref_loss), abs=1e-6)
            assert float(denominator) == pytest.approx(float(ref_den), rel=1e-6)


def _authors_gradient(batch, rows_per_rank, splits_per_rank):
    """verl's ResT update, written out: grad = (1/DP) Σ_r Σ_k (B_k / B_r) ∇[Σ_k m·w·L / (Σ_k m·w + 1e-8)]."""
    W = batch["W"].clone().requires_grad_()
    first = 0
    for rows, splits in zip(rows_per_rank, splits_per_rank):
        bounds = torch.tensor([first, *splits]).cumsum(0).tolist()
        for a, b in zip(bounds, bounds[1:]):
            mask = batch["mask"][a:b]
            w = get_token_weights("paper")(loss_mask=mask, region_mask=batch["regions"][a:b], step=120)
            logp = torch.log_softmax(batch["x"][a:b] @ W, dim=-1).gather(-1, batch["targets"][a:b, :, None])[
                ..., 0
            ]
            loss, _ = get_policy_loss("ppo_clip")(
                logprobs=logp, old_logprobs=batch["old"][a:b], advantages=batch["adv"][a:b], loss_mask=mask
            )
            weighted_mean = (loss * mask * w).sum() / ((mask * w).sum() + 1e-8)
            (weighted_mean * (b - a) / rows / len(rows_per_rank)).backward()
        first += rows
    return W.grad


@pytest.mark.parametrize("splits", [[[4], [4]], [[2, 2], [2, 2]], [[1, 3], [3, 1]]])
def test_per_microbatch_reproduces_the_authors_and_depends_on_the_layout(gloo, splits):
    pool = gloo(2)
    batch = make_batch(seed=SEED)
    results = pool.run(rank_step, "per-microbatch", "paper", [4, 4], splits)
    expected = _authors_gradient(batch, [4, 4], splits)
    for grad, _, denominator in results:
        assert float(denominator) == NUM_ROWS
        torch.testing.assert_close(grad, expected, atol=1e-6, rtol=0)
    # Not the global weighted mean: the split changes the gradient.
    global_mean = step_gradient(batch, "token-mean-weighted", "paper", [NUM_ROWS])
    assert (results[0][0] - global_mean).abs().max() > 1e-3
