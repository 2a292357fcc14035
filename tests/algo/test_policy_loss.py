"""PPO-clip policy loss: hand-computed branches, a float64 per-element reference with analytic gradients,
non-finite inputs, metrics, and the contract every registered policy loss must meet."""

import math

import pytest
import torch

from rest_megatron.algo.policy_loss import get_policy_loss, kl_estimate, policy_loss_names, valid_mask

# Hand cases (ε_low = ε_high = 0.2, dual clip c = 3). Columns: Â, ρ, per-token loss L, dL/dlog π_θ.
#  0  Â=+1 ρ=1.1  inside the clip range   L = −1.1                      grad −Âρ = −1.1
#  1  Â=+2 ρ=1.5  upper clip              L = max(−3, −2.4) = −2.4      grad 0
#  2  Â=−1 ρ=0.5  lower clip              L = max(0.5, 0.8) = 0.8       grad 0
#  3  Â=−1 ρ=2    above clip, below c     L = max(2, 1.2) = 2; min(2, 3) = 2     grad −Âρ = 2
#  4  Â=−1 ρ=4    dual clip               L = max(4, 1.2) = 4; min(4, 3) = 3     grad 0
#  5  Â=+1 ρ=0.5  low ratio, Â > 0: not clipped   L = max(−0.5, −0.8) = −0.5  grad −0.5
#  6  Â=−2 ρ=1    on policy               L = 2                         grad 2
#  7  masked out (m = 0)                  L = 0                         grad 0
HAND_ADV = [1.0, 2.0, -1.0, -1.0, -1.0, 1.0, -2.0, 5.0]
HAND_RATIO = [1.1, 1.5, 0.5, 2.0, 4.0, 0.5, 1.0, 3.0]
HAND_MASK = [1, 1, 1, 1, 1, 1, 1, 0]
HAND_LOSS = [-1.1, -2.4, 0.8, 2.0, 3.0, -0.5, 2.0, 0.0]
HAND_GRAD = [-1.1, 0.0, 0.0, 2.0, 0.0, -0.5, 2.0, 0.0]


def _hand_inputs(dtype=torch.float64):
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -2.5, -0.7, -1.2, -0.3]], dtype=dtype)
    logp = (old + torch.tensor([HAND_RATIO], dtype=dtype).log()).requires_grad_()
    return logp, old, torch.tensor([HAND_ADV], dtype=dtype), torch.tensor([HAND_MASK])


def test_ppo_clip_by_hand_values_gradients_and_metrics():
    logp, old, adv, mask = _hand_inputs()
    loss, metrics = get_policy_loss("ppo_clip")(
        logprobs=logp, old_logprobs=old, advantages=adv, loss_mask=mask
    )
    torch.testing.assert_close(loss[0], torch.tensor(HAND_LOSS, dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad[0], torch.tensor(HAND_GRAD, dtype=torch.float64))
    # Metrics over the 7 valid tokens: one lower clip (2), one upper clip (1), one dual clip (4);
    # Σρ = 1.1+1.5+0.5+2+4+0.5+1 = 10.6, max 4, min 0.5; Σ pg loss = 3.8;
    # Σ(log π_old − log π_θ) = −ln(1.1·1.5·0.5·2·4·0.5·1) = −ln 3.3 = −1.193922;
    # Σρ² = 1.21+2.25+0.25+4+16+0.25+1 = 24.96.
    expected = {
        "num_tokens": 7.0,
        "clip_frac_low_sum": 1.0,
        "clip_frac_high_sum": 1.0,
        "dual_clip_frac_sum": 1.0,
        "ratio_sum": 10.6,
        "ratio_sq_sum": 24.96,
        "ratio_max": 4.0,
        "ratio_min": 0.5,
        "pg_loss_sum": 3.8,
        "ppo_kl_sum": -1.193922,
    }
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key].shape == () and not metrics[key].requires_grad
        assert float(metrics[key]) == pytest.approx(value, abs=1e-6), key


def test_dual_clip_off_and_asymmetric_clip():
    logp, old, adv, mask = _hand_inputs()
    loss, metrics = get_policy_loss("ppo_clip")(
        logprobs=logp, old_logprobs=old, advantages=adv, loss_mask=mask, dual_clip=None, clip_high=0.6
    )
    # Token 4 keeps L = 4 without the dual clip; token 1 (ρ = 1.5 < 1.6) is no longer clipped: L = −3.
    assert float(loss.detach()[0, 4]) == pytest.approx(4.0)
    assert float(loss.detach()[0, 1]) == pytest.approx(-3.0)
    assert float(metrics["dual_clip_frac_sum"]) == 0.0 and float(metrics["clip_frac_high_sum"]) == 0.0
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        get_policy_loss("ppo_clip")(
            logprobs=logp, old_logprobs=old, advantages=adv, loss_mask=mask, dual_clip=1.0
        )


@pytest.mark.parametrize(
    "kl_type, value, grad",
    # δ = log π_θ − log π_ref = ln 2.  k1 = δ = 0.693147 (grad 1); k2 = δ²/2 = 0.240227 (grad δ);
    # k3 = e^{−δ} + δ − 1 = 0.5 + 0.693147 − 1 = 0.193147 (grad 1 − e^{−δ} = 0.5).
    [("k1", 0.693147, 1.0), ("k2", 0.240227, 0.693147), ("k3", 0.193147, 0.5)],
)
def test_kl_term_by_hand(kl_type, value, grad):
    logp = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    ref = logp.detach() - math.log(2.0)
    kl = kl_estimate(logp, ref, kl_type)
    assert float(kl.detach()) == pytest.approx(value, abs=1e-6)
    kl.sum().backward()
    assert float(logp.grad) == pytest.approx(grad, abs=1e-6)
    # Inside the loss with Â = 0 only the KL term is left, scaled by its coefficient.
    logp.grad = None
    loss, metrics = get_policy_loss("ppo_clip")(
        logprobs=logp,
        old_logprobs=logp.detach(),
        advantages=torch.zeros(1, 1, dtype=torch.float64),
        loss_mask=torch.ones(1, 1),
        ref_logprobs=ref,
        kl_coef=0.1,
        kl_type=kl_type,
    )
    assert float(loss.detach()) == pytest.approx(0.1 * value, abs=1e-7)
    assert float(metrics["ref_kl_sum"]) == pytest.approx(value, abs=1e-6)
    loss.sum().backward()
    assert float(logp.grad) == pytest.approx(0.1 * grad, abs=1e-7)


def test_entropy_bonus_by_hand():
    # Â = 0, H = (1.5, 0.25): L = −0.01·H = (−0.015, −0.0025); dL/dH = −0.01; entropy_sum = 1.75.
    logp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    ent = torch.tensor([[1.5, 0.25]], dtype=torch.float64, requires_grad=True)
    loss, metrics = get_policy_loss("ppo_clip")(
        logprobs=logp,
        old_logprobs=logp.detach(),
        advantages=torch.zeros(1, 2, dtype=torch.float64),
        loss_mask=torch.ones(1, 2),
        entropy=ent,
        entropy_coef=0.01,
    )
    torch.testing.assert_close(loss, torch.tensor([[-0.015, -0.0025]], dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(ent.grad, torch.full((1, 2), -0.01, dtype=torch.float64))
    assert float(metrics["entropy_sum"]) == pytest.approx(1.75)


def test_missing_inputs_for_optional_terms_raise():
    logp, old, adv, mask = _hand_inputs()
    with pytest.raises(ValueError, match="ref_logprobs"):
        get_policy_loss("ppo_clip")(
            logprobs=logp, old_logprobs=old, advantages=adv, loss_mask=mask, kl_coef=0.1
        )
    with pytest.raises(ValueError, match="entropy"):
        get_policy_loss("ppo_clip")(
            logprobs=logp, old_logprobs=old, advantages=adv, loss_mask=mask, entropy_coef=0.1
        )
    with pytest.raises(ValueError, match="kl_type"):
        kl_estimate(logp, old, "k9")


# ------------------------------------------------------------------- float64 reference, element by element


def _ref_token(lp, old, a, ref, h, eps_lo, eps_hi, c, kl_coef, ent_coef):
    """(loss, dL/dlogp, dL/dH) of one token, written out branch by branch."""
    rho = math.exp(lp - old)
    unclipped, clipped = -a * rho, -a * min(max(rho, 1 - eps_lo), 1 + eps_hi)
    if unclipped >= clipped:
        loss, grad = unclipped, -a * rho
    else:  # the clipped value is constant in θ
        loss, grad = clipped, 0.0
    if a < 0 and loss > -a * c:
        loss, grad = -a * c, 0.0
    delta = lp - ref
    loss += kl_coef * (math.exp(-delta) + delta - 1)
    grad += kl_coef * (1 - math.exp(-delta))
    return loss - ent_coef * h, grad, -ent_coef


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_float64_reference_values_and_gradients(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 17
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4
    logp = (old + (torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 1.5)).requires_grad_()
    ref = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(B, T, generator=g, dtype=torch.float64) * 2
    ent = (torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_()
    mask = (torch.rand(B, T, generator=g) < 0.8).long()
    params = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.05, kl_type="k3", entropy_coef=0.01)
    loss, _ = get_policy_loss("ppo_clip")(
        logprobs=logp,
        old_logprobs=old,
        advantages=adv,
        loss_mask=mask,
        ref_logprobs=ref,
        entropy=ent,
        **params,
    )
    loss.sum().backward()
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                assert loss[b, t] == 0 and logp.grad[b, t] == 0 and ent.grad[b, t] == 0
                continue
            value, g_lp, g_h = _ref_token(
                float(logp.detach()[b, t]),
                float(old[b, t]),
                float(adv[b, t]),
                float(ref[b, t]),
                float(ent.detach()[b, t]),
                0.2,
                0.28,
                3.0,
                0.05,
                0.01,
            )
            assert float(loss.detach()[b, t]) == pytest.approx(value, abs=1e-12)
            assert float(logp.grad[b, t]) == pytest.approx(g_lp, abs=1e-12)
            assert float(ent.grad[b, t]) == pytest.approx(g_h, abs=1e-12)


def test_float32_close_to_float64():
    g = torch.Generator().manual_seed(5)
    old = -torch.rand(4, 64, generator=g, dtype=torch.float64) * 5
    lp64 = (old + torch.randn(4, 64, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    adv = torch.randn(4, 64, generator=g, dtype=torch.float64)
    lp32 = lp64.detach().float().requires_grad_()
    l64, _ = get_policy_loss("ppo_clip")(
        logprobs=lp64, old_logprobs=old, advantages=adv, loss_mask=torch.ones(4, 64)
    )
    l32, _ = get_policy_loss("ppo_clip")(
        logprobs=lp32, old_logprobs=old.float(), advantages=adv.float(), loss_mask=torch.ones(4, 64)
    )
    l64.sum().backward()
    l32.sum().backward()
    torch.testing.assert_close(l32.double(), l64, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(lp32.grad.double(), lp64.grad, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ non-finite inputs


def test_valid_mask():
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    a = torch.tensor([[0.0, float("-inf"), 1.0, 2.0, float("nan")]])
    b = torch.tensor([[0.0, 0.0, float("nan"), 1.0, 0.0]])
    assert valid_mask(mask, a, None, b).tolist() == [[True, False, False, True, False]]
    assert valid_mask(mask).tolist() == [[True, True, True, True, False]]


def test_non_finite_old_logprobs_leave_the_loss_and_its_count():
    logp, old, adv, mask = _hand_inputs()
    old = old.clone()
    old[0, 0], old[0, 3] = float("-inf"), float("nan")  # two valid-looking tokens with broken old logprobs
    ref = logp.detach().clone()
    ref[0, 5] = float("inf")  # and a broken reference logprob
    loss, metrics = get_policy_loss("ppo_clip")(
        logprobs=logp, old_logprobs=old, advantages=adv, loss_mask=mask, ref_logprobs=ref, kl_coef=0.1
    )
    assert torch.isfinite(loss).all()
    assert loss[0, 0] == 0 and loss[0, 3] == 0 and loss[0, 5] == 0
    loss.sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 3] == 0 and logp.grad[0, 5] == 0
    # The other tokens are untouched: 4 valid tokens left (1, 2, 4, 6).
    expected = torch.tensor(HAND_LOSS, dtype=torch.float64)
    for t in (1, 2, 4, 6):
        assert float(loss.detach()[0, t]) == pytest.approx(float(expected[t]))
    assert float(metrics["num_tokens"]) == 4.0
    assert all(torch.isfinite(v) for k, v in metrics.items() if k not in ("ratio_max", "ratio_min"))
    assert float(metrics["ratio_max"]) == pytest.approx(4.0)


def test_log_ratio_clamp_keeps_everything_finite():
    logp = torch.tensor([[50.0, -80.0]], dtype=torch.float64, requires_grad=True)
    loss, metrics = get_policy_loss("ppo_clip")(
        logprobs=logp,
        old_logprobs=torch.zeros(1, 2, dtype=torch.float64),
        advantages=torch.tensor([[-1.0, 1.0]], dtype=torch.float64),
        loss_mask=torch.ones(1, 2),
        dual_clip=None,
    )
    # Token 0: log ratio 50 clamps to 20, Â = −1: L = max(e^20, 1.2) = e^20 (no dual clip here).
    # Token 1: log ratio −80 clamps to −20, Â = +1: L = max(−e^−20, −0.8) = −e^−20.
    assert float(loss.detach()[0, 0]) == pytest.approx(math.exp(20.0))
    assert float(loss.detach()[0, 1]) == pytest.approx(-math.exp(-20.0))
    loss.sum().backward()
    assert logp.grad[0, 0] == 0  # beyond the clamp the ratio is constant
    assert float(metrics["ratio_max"]) == pytest.approx(math.exp(20.0))


# --------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", policy_loss_names())
def test_contract_every_policy_loss(name):
    """Shape, zero and gradient-free at masked or invalid tokens, finite, detached metrics with a count."""
    g = torch.Generator().manual_seed(11)
    B, T = 3, 9
    old = -torch.rand(B, T, generator=g) * 3
    old[1, 2] = float("-inf")
    old[2, 4] = float("nan")
    logp = (old.nan_to_num(-1.0, -1.0) + torch.randn(B, T, generator=g) * 0.2).requires_grad_()
    old_leaf = old.clone().requires_grad_()
    adv = torch.randn(B, T, generator=g)
    adv_leaf = adv.clone().requires_grad_()
    mask = (torch.rand(B, T, generator=g) < 0.75).long()
    mask[1, 2] = mask[2, 4] = 1
    loss, metrics = get_policy_loss(name)(
        logprobs=logp, old_logprobs=old_leaf, advantages=adv_leaf, loss_mask=mask
    )
    assert loss.shape == (B, T) and loss.dtype == logp.dtype
    assert torch.isfinite(loss).all()
    invalid = ~valid_mask(mask, old)
    assert (loss[invalid] == 0).all()
    loss.sum().backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[invalid] == 0).all()
    assert old_leaf.grad is None and adv_leaf.grad is None  # old policy and advantages are constants
    assert float(metrics["num_tokens"]) == float((~invalid).sum())
    for key, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.shape == () and not value.requires_grad, key


def test_unknown_policy_loss_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: ppo_clip"):
        get_policy_loss("reinforce++")


@pytest.mark.parametrize("kl_type", ["k1", "k2", "k3"])
def test_kl_term_shares_the_updates_weighted_denominator(kl_type):
    """Two micro-batches of one update, float32 as the trainer runs:
    Σ contributions = Σ m·w·(L_pg + β·k) / Σ m·w over both, against the same sum written out in float64."""
    from rest_megatron.algo.aggregation import get_aggregation

    g = torch.Generator().manual_seed(11)
    aggregation, beta = get_aggregation("token-mean-weighted"), 0.3
    batches = []
    for rows in (2, 3):
        old = -torch.rand(rows, 9, generator=g, dtype=torch.float64) * 3
        batches.append(
            {
                "old": old,
                "logp": old + torch.randn(rows, 9, generator=g, dtype=torch.float64) * 0.2,
                "ref": old + torch.randn(rows, 9, generator=g, dtype=torch.float64) * 0.5,
                "adv": torch.randn(rows, 1, generator=g, dtype=torch.float64).expand(rows, 9),
                "mask": (torch.rand(rows, 9, generator=g) < 0.7).float(),
                "weights": torch.rand(rows, 9, generator=g, dtype=torch.float64) * 2,
            }
        )
    denominator = sum(
        aggregation.denominator(loss_mask=b["mask"] > 0, weights=b["weights"].float()) for b in batches
    )
    total = 0.0
    for b in batches:
        loss, _ = get_policy_loss("ppo_clip")(
            logprobs=b["logp"].float(),
            old_logprobs=b["old"].float(),
            advantages=b["adv"].float(),
            loss_mask=b["mask"],
            ref_logprobs=b["ref"].float(),
            kl_coef=beta,
            kl_type=kl_type,
        )
        total += float(
            aggregation(
                loss,
                loss_mask=b["mask"] > 0,
                weights=b["weights"].float(),
                global_denominator=torch.as_tensor(denominator, dtype=torch.float32),
            )
        )
    numerator, weight_sum = 0.0, 0.0
    for b in batches:
        for index in zip(*torch.nonzero(b["mask"], as_tuple=True)):
            lp, old, ref, a, w = (float(b[k][index]) for k in ("logp", "old", "ref", "adv", "weights"))
            rho = math.exp(lp - old)
            pg = max(-a * rho, -a * min(max(rho, 0.8), 1.2))
            pg = min(pg, -a * 3.0) if a < 0 else pg
            delta = lp - ref
            kl = {"k1": delta, "k2": 0.5 * delta**2, "k3": math.exp(-delta) + delta - 1}[kl_type]
            numerator += w * (pg + beta * kl)
            weight_sum += w
    assert total == pytest.approx(numerator / weight_sum, rel=1e-5, abs=1e-6)


def test_the_config_accepts_exactly_the_registered_kl_estimators():
    from pathlib import Path

    from rest_megatron.algo.policy_loss import kl_estimator_names
    from rest_megatron.config import load_config
    from rest_megatron.config.errors import ConfigError

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml"
    assert set(kl_estimator_names()) == {"k1", "k2", "k3"}
    for name in kl_estimator_names():
        assert load_config(recipe, [f"algorithm.kl_estimator={name}"]).algorithm.kl_estimator == name
    with pytest.raises(ConfigError, match="kl_estimator"):
        load_config(recipe, ["algorithm.kl_estimator=k4"])
