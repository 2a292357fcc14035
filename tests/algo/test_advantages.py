"""Advantage estimators, token broadcast and the dynamic-sampling filter."""

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rest_megatron.algo.advantages import (
    advantage_names,
    broadcast_to_tokens,
    dynamic_sampling_keep_mask,
    get_advantage,
    group_index,
)

# Two groups of four. Group 0 rewards 1, 0, 0, 1: mean 0.5, unbiased std √(4·0.25/3) = 0.577350.
#   grpo  (r − 0.5)/0.577350 = ±0.866025     dr_grpo  ±0.5     rloo  4/3·(±0.5) = ±0.666667
# Group 1 rewards 3, 1, 2, 2: mean 2, std √(2/3) = 0.816497.
#   grpo  1.224745, −1.224745, 0, 0          dr_grpo  1, −1, 0, 0          rloo  4/3, −4/3, 0, 0
REWARDS = [1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0]
HAND = {
    "grpo": [0.866025, -0.866025, -0.866025, 0.866025, 1.224745, -1.224745, 0.0, 0.0],
    "dr_grpo": [0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0],
    "rloo": [0.666667, -0.666667, -0.666667, 0.666667, 1.333333, -1.333333, 0.0, 0.0],
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_values(name):
    adv = get_advantage(name)(torch.tensor(REWARDS), group_size=4)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, torch.tensor(HAND[name]), atol=1e-5, rtol=0)
    # The same groups given as arbitrary labels, interleaved.
    order = torch.tensor([4, 0, 5, 1, 6, 2, 7, 3])
    labels = torch.tensor([9, 9, 9, 9, -3, -3, -3, -3])[order]
    by_label = get_advantage(name)(torch.tensor(REWARDS)[order], group_ids=labels)
    torch.testing.assert_close(by_label, torch.tensor(HAND[name])[order], atol=1e-5, rtol=0)


def _reference(name, rewards, labels, eps=1e-6):
    out = []
    for r, label in zip(rewards, labels):
        group = [x for x, lab in zip(rewards, labels) if lab == label]
        n = len(group)
        if n == 1:
            out.append(0.0)
            continue
        mean = statistics.fmean(group)
        if name == "grpo":
            out.append((r - mean) / (statistics.stdev(group) + eps))
        elif name == "dr_grpo":
            out.append(r - mean)
        else:
            out.append(r - (sum(group) - r) / (n - 1))
    return out


@pytest.mark.parametrize("name", sorted(HAND))
def test_matches_float64_reference(name):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (40,), generator=g)
    rewards = torch.randn(40, generator=g, dtype=torch.float64) * 3
    got = get_advantage(name)(rewards, group_ids=labels)
    assert got.dtype == torch.float64
    ref = _reference(name, rewards.tolist(), labels.tolist())
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), atol=1e-12, rtol=1e-12)


def test_singleton_and_constant_groups_get_zero():
    rewards = torch.tensor([5.0, 2.0, 2.0, 2.0])
    ids = torch.tensor([0, 1, 1, 1])  # a group of one, then a group whose rewards are all equal
    for name in advantage_names():
        assert torch.equal(get_advantage(name)(rewards, group_ids=ids), torch.zeros(4)), name


def test_group_index_errors():
    with pytest.raises(ValueError, match="exactly one"):
        group_index(4)
    with pytest.raises(ValueError, match="exactly one"):
        group_index(4, group_ids=torch.zeros(4), group_size=2)
    with pytest.raises(ValueError, match="divide"):
        group_index(6, group_size=4)
    with pytest.raises(ValueError, match="shape"):
        group_index(4, group_ids=torch.zeros(3))
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        get_advantage("grpo")(torch.zeros(2, 2), group_size=2)


def test_broadcast_to_tokens():
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    out = broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask)
    assert torch.equal(out, torch.tensor([[0.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]))


def test_dynamic_sampling_keep_mask():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 2.0, 2.0, 2.0, 7.0])
    ids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    # group 0 all equal -> drop; group 1 differs -> keep; group 2 all equal -> drop; singleton 3 -> drop
    keep = dynamic_sampling_keep_mask(rewards, group_ids=ids)
    assert keep.tolist() == [False, False, False, True, True, False, False, False, False]
    near = torch.tensor([1.0, 1.0 + 1e-9, 0.0, 1.0], dtype=torch.float64)
    assert dynamic_sampling_keep_mask(near, group_size=2, atol=1e-6).tolist() == [False, False, True, True]
    assert dynamic_sampling_keep_mask(near, group_size=2).tolist() == [True, True, True, True]


@pytest.mark.parametrize("name", advantage_names())
@settings(max_examples=40, deadline=None)
@given(
    rewards=st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=24),
    data=st.data(),
)
def test_contract_every_estimator(name, rewards, data):
    """Finite, zero-sum within each group, 0 on constant groups, permutation-equivariant, shift-invariant."""
    labels = data.draw(st.lists(st.integers(0, 3), min_size=len(rewards), max_size=len(rewards)))
    r = torch.tensor(rewards, dtype=torch.float64)
    ids = torch.tensor(labels)
    adv = get_advantage(name)(r, group_ids=ids)
    assert adv.shape == r.shape and torch.isfinite(adv).all()
    for label in set(labels):
        members = ids == label
        assert math.isclose(float(adv[members].sum()), 0.0, abs_tol=1e-6)
        if r[members].max() == r[members].min():
            assert (adv[members] == 0).all()
    perm = torch.randperm(len(rewards), generator=torch.Generator().manual_seed(len(rewards)))
    torch.testing.assert_close(get_advantage(name)(r[perm], group_ids=ids[perm]), adv[perm])
    torch.testing.assert_close(get_advantage(name)(r + 3.0, group_ids=ids), adv, atol=1e-6, rtol=1e-6)


def test_unknown_estimator_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: dr_grpo, grpo, rloo"):
        get_advantage("ppo_gae")
