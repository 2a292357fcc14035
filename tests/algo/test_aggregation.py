"""Loss aggregations: hand-computed values, split invariance of the gradient (single process; the 2-rank
gloo version is in tests/distributed/test_algo_invariance.py), the authors' per-micro-batch mode, contract."""

import pytest
import torch

from rest_megatron.algo.advantages import broadcast_to_tokens
from rest_megatron.algo.aggregation import aggregation_names, get_aggregation, weighted_denominator
from rest_megatron.algo.policy_loss import get_policy_loss
from rest_megatron.algo.regions import NUM_REGIONS
from rest_megatron.algo.weights import get_token_weights

# Hand example. Token 2 of row 0 is masked but has a weight and a NaN loss: neither may count.
#   L = [[1, 2, NaN], [4, 5, 6]]   m = [[1, 1, 0], [1, 0, 1]]   w = [[0.5, 1.5, 9], [2, 7, 0.25]]
#   m·w = [[0.5, 1.5, 0], [2, 0, 0.25]]  Σ m·w = 4.25;  Σ m·w·L = 0.5 + 3 + 8 + 1.5 = 13
#   token-mean-weighted  13 / 4.25 = 3.058824
#   token-mean           (1 + 2 + 4 + 6) / 4 = 3.25
#   seq-mean-token-mean  row 0: 3.5/2 = 1.75, row 1: 9.5/2.25 = 4.222222; (1.75 + 4.222222)/2 = 2.986111
#   per-microbatch       one micro-batch of both rows: 2 · 13/(4.25 + 1e-8) / 2 = 3.058824
#                        one row per micro-batch: 1·1.75/2 + 1·4.222222/2 = 2.986111 (differs!)
LOSS = [[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0]]
MASK = [[1, 1, 0], [1, 0, 1]]
WEIGHTS = [[0.5, 1.5, 9.0], [2.0, 7.0, 0.25]]
HAND = {
    "token-mean-weighted": (4.25, 3.058824),
    "token-mean": (4.0, 3.25),
    "seq-mean-token-mean": (2.0, 2.986111),
    "per-microbatch": (2.0, 3.058824),
}


def _aggregate(name, loss, mask, weights, splits):
    """Σ over micro-batches (row chunks) of the contributions, with the denominator summed over all
    of them."""
    agg = get_aggregation(name)
    chunks = list(zip(loss.split(splits), mask.split(splits), weights.split(splits)))
    denominator = sum(agg.denominator(loss_mask=m, weights=w) for _, m, w in chunks)
    return sum(
        agg(lo, loss_mask=m, weights=w, global_denominator=denominator) for lo, m, w in chunks
    ), denominator


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_values(name):
    loss = torch.tensor(LOSS, dtype=torch.float64, requires_grad=True)
    value, denominator = _aggregate(
        name, loss, torch.tensor(MASK), torch.tensor(WEIGHTS, dtype=torch.float64), [2]
    )
    assert float(denominator) == pytest.approx(HAND[name][0])
    assert float(value.detach()) == pytest.approx(HAND[name][1], abs=1e-6)
    value.backward()
    assert torch.isfinite(loss.grad).all() and loss.grad[0, 2] == 0 and loss.grad[1, 1] == 0


def test_hand_gradients_of_token_mean_weighted():
    # d/dL_t of Σ m·w·L / D is m_t w_t / D: 0.5/4.25, 1.5/4.25, 0 | 2/4.25, 0, 0.25/4.25
    loss = torch.tensor(LOSS, dtype=torch.float64, requires_grad=True)
    value, _ = _aggregate(
        "token-mean-weighted", loss, torch.tensor(MASK), torch.tensor(WEIGHTS, dtype=torch.float64), [2]
    )
    value.backward()
    expected = torch.tensor([[0.5, 1.5, 0.0], [2.0, 0.0, 0.25]], dtype=torch.float64) / 4.25
    torch.testing.assert_close(loss.grad, expected)


def test_per_microbatch_reproduces_the_authors_and_depends_on_the_split():
    loss = torch.tensor(LOSS, dtype=torch.float64)
    mask, weights = torch.tensor(MASK), torch.tensor(WEIGHTS, dtype=torch.float64)
    whole, _ = _aggregate("per-microbatch", loss, mask, weights, [2])
    split, _ = _aggregate("per-microbatch", loss, mask, weights, [1, 1])
    assert float(whole) == pytest.approx(3.058824, abs=1e-6)
    assert float(split) == pytest.approx(2.986111, abs=1e-6)
    # ... whereas the global-denominator mode gives 3.058824 however the rows are split.
    for splits in ([2], [1, 1]):
        value, _ = _aggregate("token-mean-weighted", loss, mask, weights, splits)
        assert float(value) == pytest.approx(3.058824, abs=1e-6)


def test_weighted_denominator_is_the_masked_weight_sum():
    assert float(weighted_denominator(torch.tensor(MASK), torch.tensor(WEIGHTS))) == pytest.approx(4.25)


def test_nothing_to_train_gives_zero_not_nan():
    loss = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    for name in aggregation_names():
        value, denominator = _aggregate(
            name, loss, torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.float64), [1, 1]
        )
        assert float(value.detach()) == 0.0, name
        (grad,) = torch.autograd.grad(value, loss)
        assert torch.equal(grad, torch.zeros_like(grad)), name


# ------------------------------------------------------- gradient invariance through the real pipeline


def make_batch(seed: int, B: int = 8, T: int = 12, H: int = 6, V: int = 11):
    """A fixed RL batch for a tiny softmax policy z = x·W: inputs, targets, old logprobs, rewards, tags."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    W = torch.randn(H, V, generator=g, dtype=torch.float64) * 0.7
    targets = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = (torch.arange(T) < lengths[:, None]).long()  # ragged responses
    mask[:, 0] = 0  # a prompt token
    with torch.no_grad():
        probs = torch.softmax(x @ W, dim=-1)
        old = torch.log(probs).gather(-1, targets[..., None])[..., 0] + 0.3 * torch.randn(
            B, T, generator=g, dtype=torch.float64
        )
        collision = probs.square().sum(-1)
    adv = broadcast_to_tokens(torch.randn(B, generator=g, dtype=torch.float64), mask)
    regions = torch.randint(0, 1 << NUM_REGIONS, (B, T), generator=g)
    return {
        "x": x,
        "W": W,
        "targets": targets,
        "mask": mask,
        "old": old,
        "adv": adv,
        "regions": regions,
        "collision": collision,
    }


def micro_batch_terms(batch, W, rows, agg_name, weights_name, step=120):
    """(local denominator, a function of the global denominator giving the contribution) for batch rows."""
    x, targets, mask = batch["x"][rows], batch["targets"][rows], batch["mask"][rows]
    weights = get_token_weights(weights_name)(
        loss_mask=mask, region_mask=batch["regions"][rows], step=step, collision=batch["collision"][rows]
    )
    logp = torch.log_softmax(x @ W, dim=-1).gather(-1, targets[..., None])[..., 0]
    loss, _ = get_policy_loss("ppo_clip")(
        logprobs=logp, old_logprobs=batch["old"][rows], advantages=batch["adv"][rows], loss_mask=mask
    )
    agg = get_aggregation(agg_name)
    return agg.denominator(loss_mask=mask, weights=weights), lambda d: agg(
        loss, loss_mask=mask, weights=weights, global_denominator=d
    )


def step_gradient(batch, agg_name, weights_name, splits):
    """Gradient of the step loss w.r.t. W when the batch rows are cut into micro-batches of these sizes."""
    W = batch["W"].clone().requires_grad_()
    starts = torch.tensor([0, *splits]).cumsum(0).tolist()
    terms = [
        micro_batch_terms(batch, W, slice(a, b), agg_name, weights_name) for a, b in zip(starts, starts[1:])
    ]
    denominator = sum(d for d, _ in terms)  # computed once, before the micro-batch loop
    for _, contribution in terms:
        contribution(denominator).backward()  # gradient accumulation, one backward per micro-batch
    return W.grad


SPLITS = [[8], [1] * 8, [2, 2, 2, 2], [3, 3, 2], [5, 3], [1, 7], [4, 1, 1, 2]]


@pytest.mark.parametrize("weights_name", ["paper", "entropy", "uniform"])
@pytest.mark.parametrize("agg_name", [n for n in aggregation_names() if get_aggregation(n).split_invariant])
def test_gradient_does_not_depend_on_micro_batch_size(agg_name, weights_name):
    batch = make_batch(seed=7)
    reference = step_gradient(batch, agg_name, weights_name, [8])
    assert reference.abs().max() > 1e-3  # a real gradient, not zeros
    for splits in SPLITS[1:]:
        torch.testing.assert_close(
            step_gradient(batch, agg_name, weights_name, splits), reference, atol=1e-6, rtol=0
        )


def test_per_microbatch_gradient_changes_with_micro_batch_size():
    batch = make_batch(seed=7)
    whole = step_gradient(batch, "per-microbatch", "paper", [8])
    # One micro-batch: identical to the global weighted mean (up to the authors' 1e-8 in the denominator).
    torch.testing.assert_close(
        whole, step_gradient(batch, "token-mean-weighted", "paper", [8]), atol=1e-6, rtol=0
    )
    split = step_gradient(batch, "per-microbatch", "paper", [2, 2, 2, 2])
    assert (split - whole).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", aggregation_names())
def test_contract_every_aggregation(name):
    """A mean of some kind: scalar, finite, masked NaNs ignored, weights a stop-gradient, a constant loss
    aggregates to itself; split-invariant entries give the same value and gradient for any row split."""
    agg = get_aggregation(name)
    g = torch.Generator().manual_seed(2)
    mask = (torch.rand(6, 9, generator=g) < 0.7).long()
    mask[:, 0] = 1
    weights = get_token_weights("entropy")(
        loss_mask=mask, region_mask=torch.zeros_like(mask), step=0, collision=torch.rand(6, 9, generator=g)
    ).double()
    loss = torch.randn(6, 9, generator=g, dtype=torch.float64)
    loss[mask == 0] = float("nan")
    loss.requires_grad_()
    w_leaf = weights.clone().requires_grad_()
    value, denominator = _aggregate(name, loss, mask, w_leaf, [6])
    assert value.shape == () and torch.isfinite(value)
    assert denominator.shape == () and float(denominator) > 0
    value.backward()
    assert torch.isfinite(loss.grad).all() and (loss.grad[mask == 0] == 0).all()
    assert w_leaf.grad is None
    constant, _ = _aggregate(name, torch.full((6, 9), 2.5, dtype=torch.float64), mask, weights, [6])
    assert float(constant) == pytest.approx(2.5, rel=1e-6)
    if agg.split_invariant:
        for splits in ([1] * 6, [4, 2], [1, 3, 2]):
            leaf = loss.detach().clone().requires_grad_()
            split_value, _ = _aggregate(name, leaf, mask, weights, splits)
            split_value.backward()
            assert float(split_value.detach()) == pytest.approx(float(value.detach()), abs=1e-12)
            torch.testing.assert_close(leaf.grad, loss.grad, atol=1e-12, rtol=0)


def test_unknown_aggregation_lists_the_registered_ones():
    with pytest.raises(
        ValueError, match="registered: per-microbatch, seq-mean-token-mean, token-mean, token-mean-weighted"
    ):
        get_aggregation("sum")
