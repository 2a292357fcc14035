"""ResT token weights: hand-computed paper/entropy values, a float64 loop reference, properties, contract."""

import inspect
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rest_megatron.algo.curricula import Constant, Cosine
from rest_megatron.algo.regions import NUM_REGIONS, Region, region_bit
from rest_megatron.algo.weights import (
    PRIMARY_PRIORITY,
    get_token_weights,
    normalize_weights,
    primary_region,
    token_weight_names,
)

F, N, A, R, ANS, OTH = (
    region_bit(r) for r in Region
)  # FORMAT_TAG, TOOL_NAME, TOOL_ARGS, REASONING, ANSWER, OTHER

# One response touching every region, two multi-region tokens and one masked-out token:
#   idx:   0     1     2     3     4     5      6       7 (m=0)  8
REGIONS = [F, N, A, R, ANS, OTH, N | A, A, R | F]
MASK = [1, 1, 1, 1, 1, 1, 1, 0, 1]


def _paper(step, **params):
    return get_token_weights("paper")(
        loss_mask=torch.tensor([MASK]), region_mask=torch.tensor([REGIONS]), step=step, **params
    )[0]


# Paper mode by hand. γ_format = 1, γ_name = 1.2, γ_args(s) = min(0.6 + 0.002 s, 1.2),
# γ_reasoning(s) = min(0.6 + 0.002 s, 1.0), γ_answer = γ_other = 0. Token 6 (name|args) takes
# max(1.2, γ_args), token 8 (reasoning|format) takes max(γ_reasoning, 1). Positive masked raw weights are
# tokens 0,1,2,3,6,8 (6 of them); each is divided by their mean. No clipping is active (all in [0.001, 8]).
#   s=0:    raw 1, 1.2, 0.6, 0.6, 1.2, 1   sum 5.6  mean 0.933333
#           w = 1.071429, 1.285714, 0.642857, 0.642857, 1.285714, 1.071429
#   s=100:  raw 1, 1.2, 0.8, 0.8, 1.2, 1   sum 6.0  mean 1.0 -> w = raw
#   s=200:  raw 1, 1.2, 1.0, 1.0, 1.2, 1   sum 6.4  mean 1.066667
#           w = 0.9375, 1.125, 0.9375, 0.9375, 1.125, 0.9375
#   s=300:  raw 1, 1.2, 1.2, 1.0, 1.2, 1   sum 6.6  mean 1.1
#           w = 0.909091, 1.090909, 1.090909, 0.909091, 1.090909, 0.909091
#   s=1000: both schedules are capped: same as s=300.
PAPER_EXPECTED = {
    0: [1.071429, 1.285714, 0.642857, 0.642857, 0.0, 0.0, 1.285714, 0.0, 1.071429],
    100: [1.0, 1.2, 0.8, 0.8, 0.0, 0.0, 1.2, 0.0, 1.0],
    200: [0.9375, 1.125, 0.9375, 0.9375, 0.0, 0.0, 1.125, 0.0, 0.9375],
    300: [0.909091, 1.090909, 1.090909, 0.909091, 0.0, 0.0, 1.090909, 0.0, 0.909091],
    1000: [0.909091, 1.090909, 1.090909, 0.909091, 0.0, 0.0, 1.090909, 0.0, 0.909091],
}


@pytest.mark.parametrize("step", sorted(PAPER_EXPECTED))
def test_paper_weights_by_hand(step):
    w = _paper(step)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor(PAPER_EXPECTED[step]), atol=1e-6, rtol=0)


def test_paper_clips_before_normalizing():
    # γ_name = 100 clips to 8 and γ_reasoning = 1e-5 clips up to 0.001; γ_format = 1.
    # raw (name, format, reasoning) = (8, 1, 0.001), mean 9.001/3 = 3.000333
    # w = 2.666370, 0.333296, 0.000333
    w = get_token_weights("paper")(
        loss_mask=torch.ones(1, 3),
        region_mask=torch.tensor([[N, F, R]]),
        step=0,
        gamma_name=100.0,
        gamma_reasoning=1e-5,
    )[0]
    torch.testing.assert_close(w, torch.tensor([2.666370, 0.333296, 0.000333]), atol=1e-6, rtol=0)


def test_paper_accepts_curriculum_specs_and_skips_weightless_rows():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    regions = torch.tensor([[A, ANS, 0], [ANS, OTH, A], [N, F, A]])
    w = get_token_weights("paper")(
        loss_mask=mask, region_mask=regions, step=5, gamma_args={"constant": 2.0}, gamma_other="0.5"
    )
    # Row 0: args 2.0, answer 0, no bit -> OTHER 0.5; mean of (2, 0.5) = 1.25 -> 1.6, 0, 0.4.
    # Row 1: only answer/other (other = 0.5) masked in -> the OTHER token is its only positive: weight 1.
    # Row 2: nothing masked -> all zeros.
    torch.testing.assert_close(w, torch.tensor([[1.6, 0.0, 0.4], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    none = get_token_weights("paper")(loss_mask=mask, region_mask=torch.full((3, 3), ANS), step=0)
    assert torch.equal(none, torch.zeros(3, 3))  # no positive weight anywhere: all zeros, no NaN


def test_primary_region_priority():
    # name > args > format > reasoning > answer > other; no bit -> OTHER.
    masks = torch.tensor([[N | A | F, A | F, F | R, R | ANS, ANS | OTH, OTH, 0, (1 << NUM_REGIONS) - 1]])
    expected = [
        Region.TOOL_NAME,
        Region.TOOL_ARGS,
        Region.FORMAT_TAG,
        Region.REASONING,
        Region.ANSWER,
        Region.OTHER,
        Region.OTHER,
        Region.TOOL_NAME,
    ]
    assert primary_region(masks)[0].tolist() == [int(r) for r in expected]
    assert set(PRIMARY_PRIORITY) == set(Region)


# Entropy mode by hand: collision Σπ² = 0, 0.5, 0.75, 1 so v = 1 − Σπ² = 1, 0.5, 0.25, 0; v̄ = 0.4375.
# ε = 1e-6, w_min 0.2, w_max 5. ratio (v̄+ε)/(v+ε) = 0.437501, 0.875000, 1.749997, 437501.
#   α = 1 (step 0 of the default cosine 1 -> 0 over 300): raw = 0.437501, 0.875, 1.749997, 5 (clipped)
#       sum 8.062498, mean 2.015624 -> w = 0.217055, 0.434109, 0.868216, 2.480621
#   α = 0.5 (step 150): raw = √ratio = 0.661438, 0.935414, 1.322875, 5 (clipped)
#       sum 7.919727, mean 1.979932 -> w = 0.334071, 0.472448, 0.668141, 2.525339
#   α = 0 (step 300): raw = 1 -> w = 1
ENTROPY_EXPECTED = {
    0: [0.217055, 0.434109, 0.868216, 2.480621],
    150: [0.334071, 0.472448, 0.668141, 2.525339],
    300: [1.0, 1.0, 1.0, 1.0],
}


@pytest.mark.parametrize("step", sorted(ENTROPY_EXPECTED))
def test_entropy_weights_by_hand(step):
    w = get_token_weights("entropy")(
        loss_mask=torch.ones(1, 4),
        region_mask=torch.tensor([[F, N, A, R]]),
        step=step,
        collision=torch.tensor([[0.0, 0.5, 0.75, 1.0]]),
    )[0]
    torch.testing.assert_close(w, torch.tensor(ENTROPY_EXPECTED[step]), atol=1.5e-6, rtol=0)


def test_entropy_region_averaging_by_hand():
    # Primary regions: name, name, reasoning, reasoning(+answer bit, reasoning wins). v = 0.2, 0.6, 0.9, 0.3.
    # Region means: name 0.4, reasoning 0.6; v̄ = 0.5. α = 1 (constant), ε tiny:
    #   raw = 0.5/0.4, 0.5/0.4, 0.5/0.6, 0.5/0.6 = 1.25, 1.25, 0.833333, 0.833333; mean 1.041667
    #   w = 1.2, 1.2, 0.8, 0.8
    w = get_token_weights("entropy")(
        loss_mask=torch.ones(1, 4),
        region_mask=torch.tensor([[N, N, R, R | ANS]]),
        step=0,
        collision=torch.tensor([[0.8, 0.4, 0.1, 0.7]]),
        alpha=1.0,
        eps=1e-9,
        averaging="region",
    )[0]
    torch.testing.assert_close(w, torch.tensor([1.2, 1.2, 0.8, 0.8]), atol=1e-6, rtol=0)


def test_entropy_source_uses_entropy_tensor():
    # v = H = 2, 1 ; v̄ = 1.5 ; α = 1 -> raw 0.75, 1.5 ; mean 1.125 -> w = 2/3, 4/3.
    w = get_token_weights("entropy")(
        loss_mask=torch.ones(1, 2),
        region_mask=torch.zeros(1, 2, dtype=torch.long),
        step=0,
        entropy=torch.tensor([[2.0, 1.0]]),
        source="entropy",
        alpha=Constant(1.0),
        eps=0.0,
    )[0]
    torch.testing.assert_close(w, torch.tensor([2 / 3, 4 / 3]))


def test_hybrid_is_the_normalized_product_by_hand():
    # Paper raw at step 0: format 1, name 1.2, args 0.6. Entropy raw (α = 1, ε≈0): v = 0.5, 0.25, 0.75,
    # v̄ = 0.5 -> 1, 2, 0.666667. Product 1, 2.4, 0.4; mean 1.266667 -> w = 0.789474, 1.894737, 0.315789.
    w = get_token_weights("hybrid")(
        loss_mask=torch.ones(1, 3),
        region_mask=torch.tensor([[F, N, A]]),
        step=0,
        collision=torch.tensor([[0.5, 0.75, 0.25]]),
        alpha=1.0,
        eps=1e-9,
    )[0]
    torch.testing.assert_close(w, torch.tensor([0.789474, 1.894737, 0.315789]), atol=1e-6, rtol=0)


def test_hybrid_takes_the_parameters_of_paper_and_entropy():
    """hybrid declares none of them itself: its signature (what config validation reads) is the union of
    both schemes' parameters with their defaults, a paper and an entropy parameter reach their parts,
    and a name neither takes is refused, naming the ones it takes."""
    params = {
        name: inspect.signature(get_token_weights(name)).parameters for name in ("paper", "entropy", "hybrid")
    }
    assert dict(params["hybrid"]) == {**params["paper"], **params["entropy"]}
    kw = dict(
        loss_mask=torch.ones(1, 3),
        region_mask=torch.tensor([[F, N, A]]),
        step=0,
        collision=torch.tensor([[0.5, 0.75, 0.25]]),
        eps=1e-9,
    )
    # γ_name 2.4 and α 0 (entropy part ≡ 1): raw 1, 2.4, 0.6; mean 1.333333 -> 0.75, 1.8, 0.45.
    w = get_token_weights("hybrid")(**kw, gamma_name=2.4, alpha=0.0)[0]
    torch.testing.assert_close(w, torch.tensor([0.75, 1.8, 0.45]), atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="'gama_name'.*gamma_name.*alpha"):
        get_token_weights("hybrid")(**kw, gama_name=2.4)


def test_uniform_is_the_mask():
    mask = torch.tensor([[1, 0, 1], [0, 0, 0]])
    w = get_token_weights("uniform")(loss_mask=mask, region_mask=torch.zeros_like(mask), step=7)
    assert torch.equal(w, mask.float())


def test_entropy_mode_needs_its_input_and_valid_options():
    kw = dict(loss_mask=torch.ones(1, 2), region_mask=torch.zeros(1, 2, dtype=torch.long), step=0)
    with pytest.raises(ValueError, match="collision"):
        get_token_weights("entropy")(**kw)
    with pytest.raises(ValueError, match="entropy"):
        get_token_weights("entropy")(**kw, source="entropy")
    with pytest.raises(ValueError, match="averaging"):
        get_token_weights("entropy")(**kw, collision=torch.zeros(1, 2), averaging="sequence")
    with pytest.raises(ValueError, match="source"):
        get_token_weights("hybrid")(**kw, collision=torch.zeros(1, 2), source="logits")


# ----------------------------------------------------------------- float64 reference (plain Python loops)


def _ref_gamma(region: Region, step: int) -> float:
    return {
        Region.FORMAT_TAG: 1.0,
        Region.TOOL_NAME: 1.2,
        Region.TOOL_ARGS: min(0.6 + 0.002 * step, 1.2),
        Region.REASONING: min(0.6 + 0.002 * step, 1.0),
        Region.ANSWER: 0.0,
        Region.OTHER: 0.0,
    }[region]


def _ref_weights(mode, mask, regions, collision, step, averaging, alpha, eps=1e-6, w_min=0.2, w_max=5.0):
    out = []
    for m_row, r_row, c_row in zip(mask, regions, collision):
        set_bits = [[reg for reg in Region if bits & (1 << int(reg))] or [Region.OTHER] for bits in r_row]
        masked = [t for t, m in enumerate(m_row) if m]
        v = [1.0 - c for c in c_row]
        v_bar = sum(v[t] for t in masked) / max(len(masked), 1)
        if averaging == "region":
            prim = [next(p for p in PRIMARY_PRIORITY if p in s) for s in set_bits]
            means = {}
            for p in set(prim):
                members = [v[t] for t in masked if prim[t] == p]
                means[p] = sum(members) / len(members) if members else 0.0
            v = [means[prim[t]] for t in range(len(v))]
        raw = []
        for t, bits in enumerate(set_bits):
            paper = max(_ref_gamma(reg, step) for reg in bits)
            ent = min(max(((v_bar + eps) / (v[t] + eps)) ** alpha, w_min), w_max)
            raw.append({"paper": paper, "entropy": ent, "hybrid": paper * ent}[mode])
        pos = [t for t in masked if raw[t] > 0]
        clipped = {t: min(max(raw[t], 0.001), 8.0) for t in pos}
        mean = sum(clipped.values()) / len(pos) if pos else 1.0
        out.append([clipped[t] / mean if t in clipped else 0.0 for t in range(len(raw))])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["paper", "entropy", "hybrid"])
@pytest.mark.parametrize("averaging", ["token", "region"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_float64_reference(mode, averaging, seed):
    g = torch.Generator().manual_seed(seed)
    B, T, step = 4, 13, int(torch.randint(0, 600, (1,), generator=g))
    mask = (torch.rand(B, T, generator=g) < 0.8).long()
    regions = torch.randint(0, 1 << NUM_REGIONS, (B, T), generator=g)
    regions[:, :3] = region_bit(Region.TOOL_NAME)  # make sure every row has positive paper weight
    collision = torch.rand(B, T, generator=g, dtype=torch.float64) ** 2
    collision[0, 0], collision[1, 1] = 0.0, 1.0
    params = {} if mode == "paper" else {"collision": collision, "averaging": averaging}
    alpha = Cosine(1.0, 0.0, 300)(step)
    got = get_token_weights(mode)(loss_mask=mask, region_mask=regions, step=step, **params)
    ref = _ref_weights(mode, mask.tolist(), regions.tolist(), collision.tolist(), step, averaging, alpha)
    if mode == "paper":
        torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=1e-6)
    else:
        assert got.dtype == torch.float64  # float64 collision keeps float64
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)


# --------------------------------------------------------------------------- properties and the contract


def _call(name, mask, regions, collision, entropy, step):
    return get_token_weights(name)(
        loss_mask=mask, region_mask=regions, step=step, collision=collision, entropy=entropy
    )


@st.composite
def batches(draw):
    B = draw(st.integers(1, 4))
    T = draw(st.integers(1, 12))
    cells = st.tuples(
        st.integers(0, 1),
        st.integers(0, (1 << NUM_REGIONS) - 1),
        st.sampled_from([0.0, 1.0, 0.5, 1e-7, 1.0 - 1e-7]) | st.floats(0.0, 1.0),
        st.floats(0.0, 20.0),
    )
    rows = draw(st.lists(st.lists(cells, min_size=T, max_size=T), min_size=B, max_size=B))
    mask = torch.tensor([[c[0] for c in r] for r in rows])
    regions = torch.tensor([[c[1] for c in r] for r in rows])
    collision = torch.tensor([[c[2] for c in r] for r in rows], dtype=torch.float32)
    entropy = torch.tensor([[c[3] for c in r] for r in rows], dtype=torch.float32)
    return mask, regions, collision, entropy, draw(st.integers(0, 5000))


@pytest.mark.parametrize("name", token_weight_names())
@settings(max_examples=60, deadline=None)
@given(batch=batches())
def test_properties_every_scheme(name, batch):
    """Any registered scheme: finite, >= 0, zero where m = 0, each row's positive weights average 1."""
    mask, regions, collision, entropy, step = batch
    w = _call(name, mask, regions, collision, entropy, step)
    assert w.shape == mask.shape and w.is_floating_point()
    assert torch.isfinite(w).all()
    assert (w >= 0).all()
    assert (w[mask == 0] == 0).all()
    for row in w:
        positive = row[row > 0]
        if positive.numel():
            assert math.isclose(float(positive.mean()), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("name", token_weight_names())
def test_contract_every_scheme_is_a_detached_pure_function(name):
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(3, 10, generator=g) < 0.7).long()
    regions = torch.randint(0, 1 << NUM_REGIONS, (3, 10), generator=g)
    collision = torch.rand(3, 10, generator=g).requires_grad_()
    entropy = (torch.rand(3, 10, generator=g) * 3).requires_grad_()
    before = (mask.clone(), regions.clone(), collision.detach().clone())
    w1 = _call(name, mask, regions, collision, entropy, 17)
    w2 = _call(name, mask, regions, collision, entropy, 17)
    assert not w1.requires_grad and w1.grad_fn is None  # stop-gradient
    assert torch.equal(w1, w2)  # deterministic
    assert torch.equal(mask, before[0]) and torch.equal(regions, before[1])  # inputs untouched
    assert torch.equal(collision.detach(), before[2])
    # NaN/inf collision or entropy at padding never leaks into the weights.
    dirty_c, dirty_h = collision.detach().clone(), entropy.detach().clone()
    dirty_c[mask == 0], dirty_h[mask == 0] = float("nan"), float("inf")
    torch.testing.assert_close(_call(name, mask, regions, dirty_c, dirty_h, 17), w1)


def test_unknown_scheme_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: entropy, hybrid, paper, uniform"):
        get_token_weights("magic")


def test_normalize_weights_edge_values():
    raw = torch.tensor([[float("inf"), 1.0, -2.0, float("nan"), 0.0]])
    w = normalize_weights(raw, torch.ones(1, 5))
    # inf clips to 8, -2 / NaN / 0 are not positive: raw (8, 1) mean 4.5 -> 1.777778, 0.222222.
    torch.testing.assert_close(w, torch.tensor([[16 / 9, 2 / 9, 0.0, 0.0, 0.0]]))


def test_step_origin_evaluates_the_curricula_one_step_later():
    # The authors' first RL step is their step 1: γ_args = 0.602 there, which our step 0 gives with origin 1.
    for name in ("paper", "hybrid", "entropy"):
        fn = get_token_weights(name)
        inputs = dict(
            loss_mask=torch.tensor([MASK]),
            region_mask=torch.tensor([REGIONS]),
            collision=torch.rand(1, len(MASK), generator=torch.Generator().manual_seed(0)),
        )
        assert torch.equal(fn(step=0, step_origin=1, **inputs), fn(step=1, **inputs)), name
        if name == "paper":
            assert not torch.equal(fn(step=0, **inputs), fn(step=1, **inputs))
