"""Tests for rlpost.core.preference (DPO, IPO, CoPG, GAL) and rlpost.core.hybrid (OTR, UPGE, HPT,
DYPO)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core
from rlpost.core import hybrid
from rlpost.core import preference as pref

JIT = [False, True]


def _mj(fn, jit):
  return jax.jit(fn) if jit else fn


def _pairs(n=6, seed=0):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=n) - 5.0, jnp.float32) for _ in range(4)]


# ------------------------------------------------------------------------------------ DPO / IPO


@pytest.mark.parametrize("jit", JIT)
def test_dpo_matches_formula_and_gradient_weight(jit):
  c, r, cr, rr = _pairs()
  loss, aux = _mj(lambda *a: pref.dpo_loss(*a, beta=0.1), jit)(c, r, cr, rr)
  h = (c - cr) - (r - rr)
  np.testing.assert_allclose(loss, -jax.nn.log_sigmoid(0.1 * h), rtol=1e-6)
  g = jax.grad(lambda x: pref.dpo_loss(x, r, cr, rr, beta=0.1)[0].sum())(c)
  np.testing.assert_allclose(g, -0.1 * (1 - jax.nn.sigmoid(0.1 * h)), rtol=1e-5)
  assert 0.0 <= float(aux["accuracy"]) <= 1.0


def test_dpo_invariant_to_shared_shift_and_finite_for_extremes():
  c, r, cr, rr = _pairs()
  a = pref.dpo_loss(c, r, cr, rr)[0]
  b = pref.dpo_loss(c + 3.0, r + 3.0, cr, rr)[0]
  np.testing.assert_allclose(a, b, rtol=1e-5)
  big = pref.dpo_loss(c + 1e6, r - 1e6, cr, rr, beta=1.0)[0]
  assert np.all(np.isfinite(big))


def test_ipo_formula_and_bad_tau():
  c, r, cr, rr = _pairs()
  loss, aux = pref.ipo_loss(c, r, cr, rr, tau=0.5)
  np.testing.assert_allclose(loss, (aux["margin"] - 1.0) ** 2, rtol=1e-5)
  with pytest.raises(ValueError, match="tau"):
    pref.ipo_loss(c, r, cr, rr, tau=0.0)


# ------------------------------------------------------------------------------------------ CoPG


def test_copg_is_symmetric_and_zero_iff_equal_regularised_rewards():
  a, b, ra, rb = _pairs()
  ra_r, rb_r = jnp.ones(6), jnp.zeros(6)
  l1 = pref.copg_pair_loss(a, b, ra, rb, ra_r, rb_r, beta=0.3)
  l2 = pref.copg_pair_loss(b, a, rb, ra, rb_r, ra_r, beta=0.3)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  # Choose log-ratios so that R - beta*log(pi/ref) is equal on both sides: loss 0.
  zero = pref.copg_pair_loss(jnp.array([1.0 / 0.3]), jnp.array([0.0]), jnp.zeros(1), jnp.zeros(1),
                             jnp.ones(1), jnp.zeros(1), beta=0.3)
  np.testing.assert_allclose(zero, 0.0, atol=1e-10)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_copg_reduces_to_scaled_ipo_at_reward_gap_half(beta):
  c, r, cr, rr = _pairs()
  copg = pref.copg_pair_loss(c, r, cr, rr, jnp.full(6, 0.5), jnp.zeros(6), beta=beta)
  ipo, _ = pref.ipo_loss(c, r, cr, rr, tau=beta)
  np.testing.assert_allclose(copg, beta**2 * ipo, rtol=1e-4)


@pytest.mark.parametrize("jit", JIT)
def test_online_k_sample_copg_gradient_is_rloo(jit):
  rng = np.random.default_rng(1)
  rewards = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  ref = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  beta = 0.2
  g = _mj(jax.grad(lambda lp: pref.copg_group_loss(lp, ref, rewards, beta=beta).sum()), jit)(ref)
  expected = -2 * beta * core.rloo_advantages(rewards)
  np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)


def test_copg_bandit_converges_to_regularised_optimum():
  # Softmax bandit, full-support uniform behaviour policy: descent on E[l] reaches ref*exp(R/beta)/Z.
  rewards = jnp.array([1.0, 0.0, 0.5])
  ref_logits = jnp.array([0.2, -0.3, 0.0])
  beta = 0.5
  ref = jax.nn.log_softmax(ref_logits)

  def expected_loss(theta):
    lp = jax.nn.log_softmax(theta)
    l = pref.copg_pair_loss(lp[:, None], lp[None, :], ref[:, None], ref[None, :],
                            rewards[:, None], rewards[None, :], beta=beta)
    return jnp.mean(l)

  theta = jax.jit(lambda th: jax.lax.fori_loop(
      0, 3000, lambda _, t: t - 0.5 * jax.grad(expected_loss)(t), th))(jnp.zeros(3))
  target = jax.nn.softmax(ref + rewards / beta)
  np.testing.assert_allclose(jax.nn.softmax(theta), target, atol=2e-3)


# ------------------------------------------------------------------------------------------- GAL


@pytest.mark.parametrize("jit", JIT)
def test_gal_equals_mean_dpo_over_success_failure_pairs(jit):
  lp = jnp.array([[-3.0, -4.0, -2.0, -5.0]])
  ref = jnp.array([[-3.5, -3.0, -2.5, -4.0]])
  rewards = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  loss, n = _mj(lambda *a: pref.group_alignment_loss(*a, beta=1.0), jit)(lp, ref, rewards)
  pairs = [(0, 1), (0, 3), (2, 1), (2, 3)]
  dpo = [pref.dpo_loss(lp[0, s], lp[0, f], ref[0, s], ref[0, f], beta=1.0)[0] for s, f in pairs]
  np.testing.assert_allclose(loss[0], np.mean(dpo), rtol=1e-5)
  assert float(n[0]) == 4


def test_gal_no_pairs_gives_zero_and_finite_grad():
  lp = jnp.zeros((2, 3))
  rewards = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
  loss, n = pref.group_alignment_loss(lp, lp, rewards)
  assert np.all(np.asarray(loss) == 0) and np.all(np.asarray(n) == 0)
  g = jax.grad(lambda x: pref.group_alignment_loss(x, lp, rewards)[0].sum())(lp)
  assert np.all(np.isfinite(g))


# ------------------------------------------------------------------------------------------- OTR


def _logits(b=2, t=3, v=5, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, v)), jnp.float32)


@pytest.mark.parametrize("jit", JIT)
def test_otr_greedy_correct_top_token_equals_sft(jit):
  z = _logits()
  targets = jnp.argmax(z, -1)
  mask = jnp.ones(targets.shape)
  fn = lambda zz: hybrid.otr_loss_per_token(zz, targets, mask, jax.random.PRNGKey(0), num_samples=4,
                                            temperature=0.0, wrong_reward=0.0)[0].mean()
  ce = lambda zz: -jnp.take_along_axis(jax.nn.log_softmax(zz), targets[..., None], -1).mean()
  np.testing.assert_allclose(_mj(fn, jit)(z), ce(z), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(fn)(z), jax.grad(ce)(z), rtol=1e-5, atol=1e-7)


def test_otr_greedy_wrong_top_token_contributes_nothing():
  z = _logits()
  targets = (jnp.argmax(z, -1) + 1) % z.shape[-1]
  loss, aux = hybrid.otr_loss_per_token(z, targets, jnp.ones(targets.shape), jax.random.PRNGKey(0),
                                        num_samples=4, temperature=0.0, wrong_reward=0.0)
  np.testing.assert_allclose(loss, 0.0)
  assert float(aux["hit_rate"]) == 0.0


def test_otr_large_k_gradient_approaches_expectation():
  z = _logits(b=1, t=2, v=4, seed=3)
  targets = jnp.array([[1, 2]])
  mask = jnp.ones((1, 2))
  kw = dict(temperature=1.0, wrong_reward=-0.1)
  mc = jax.grad(lambda zz: hybrid.otr_loss_per_token(zz, targets, mask, jax.random.PRNGKey(1),
                                                     num_samples=20000, **kw)[0].sum())(z)
  exact = jax.grad(lambda zz: hybrid.otr_expected_loss_per_token(zz, targets, mask,
                                                                 **kw)[0].sum())(z)
  np.testing.assert_allclose(mc, exact, atol=2e-2)


def test_otr_degenerate_inputs_and_errors():
  z = _logits().at[0, 0].set(1e30)
  targets = jnp.zeros((2, 3), jnp.int32)
  loss, _ = hybrid.otr_loss_per_token(z, targets, jnp.zeros((2, 3)), jax.random.PRNGKey(0),
                                      num_samples=2, temperature=1.0, wrong_reward=0.0)
  assert np.all(np.asarray(loss) == 0)
  with pytest.raises(ValueError, match="num_samples"):
    hybrid.otr_loss_per_token(z, targets, jnp.ones((2, 3)), jax.random.PRNGKey(0), num_samples=0,
                              temperature=1.0, wrong_reward=0.0)


# ------------------------------------------------------------------------------------------ UPGE


def _tok(seed=0):
  rng = np.random.default_rng(seed)
  old = jnp.asarray(rng.normal(size=(3, 4)) - 2, jnp.float32)
  logp = old + 0.4 * jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  adv = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  mask = jnp.asarray(rng.random((3, 4)) < 0.8, jnp.float32)
  return logp, old, adv, mask


def test_upge_sft_setting_is_sft_gradient():
  logp, _, _, mask = _tok()
  g = jax.grad(lambda lp: hybrid.upge_loss_per_token(lp, jnp.ones_like(lp), mask,
                                                     denominator="self")[0].sum())(logp)
  g_sft = jax.grad(lambda lp: -(lp * mask).sum())(logp)
  np.testing.assert_allclose(g, g_sft, rtol=1e-6)


def test_upge_reinforce_setting_is_pg_gradient():
  logp, _, adv, mask = _tok()
  g = jax.grad(lambda lp: hybrid.upge_loss_per_token(lp, adv, mask, denominator="self")[0].sum())(
      logp)
  g_pg = jax.grad(lambda lp: core.pg_loss_per_token(lp, adv, mask)[0].sum())(logp)
  np.testing.assert_allclose(g, g_pg, rtol=1e-6)


@pytest.mark.parametrize("jit", JIT)
def test_upge_ppo_setting_is_ppo_gradient(jit):
  logp, old, adv, mask = _tok()

  def upge(lp):
    stable = hybrid.ppo_stable_mask(lp, old, adv, clip_low=0.2, clip_high=0.2)
    return hybrid.upge_loss_per_token(lp, adv, mask, denominator="old", old_logp=old,
                                      stable_mask=stable)[0].sum()

  g = _mj(jax.grad(upge), jit)(logp)
  g_ppo = jax.grad(lambda lp: core.ppo_clip_loss_per_token(lp, old, adv, mask)[0].sum())(logp)
  np.testing.assert_allclose(g, g_ppo, rtol=1e-5, atol=1e-7)


def test_upge_offline_denominator_one_is_grad_pi():
  logp, _, adv, mask = _tok()
  g = jax.grad(lambda lp: hybrid.upge_loss_per_token(lp, adv, mask, denominator="one")[0].sum())(
      logp)
  np.testing.assert_allclose(g, -adv * jnp.exp(logp) * mask, rtol=1e-5)
  with pytest.raises(ValueError, match="denominator"):
    hybrid.upge_loss_per_token(logp, adv, mask, denominator="ref")


# ------------------------------------------------------------------------------------- HPT / DYPO


def test_hpt_switch_and_loss_terms():
  correct = jnp.array([[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1]])
  use_sft = hybrid.hpt_route(correct, switch_gate=0)
  np.testing.assert_array_equal(use_sft, [True, False, False])
  np.testing.assert_array_equal(hybrid.hpt_route(correct, switch_gate=1), [True, True, False])
  rl = jnp.ones((12, 5))
  demo_logp = -jnp.ones((3, 2))
  loss, aux = hybrid.hpt_loss(rl, jnp.ones((12, 5)), demo_logp, jnp.ones((3, 2)), use_sft,
                              group_size=4, max_response_len=10)
  # RL: 8 rows x 5 tokens of 1.0 over L_max=10 -> 4.0; SFT: token-mean of 1.0 over question 0.
  np.testing.assert_allclose(aux["rl_loss"], 4.0)
  np.testing.assert_allclose(aux["sft_loss"], 1.0)
  np.testing.assert_allclose(loss, 5.0)


def test_hpt_all_wrong_question_has_only_sft_gradient():
  correct = jnp.zeros((1, 4))
  use_sft = hybrid.hpt_route(correct)
  rl_logp = jnp.zeros((4, 3))
  g = jax.grad(lambda lp: hybrid.hpt_loss(
      hybrid.upge_loss_per_token(lp, jnp.ones_like(lp), jnp.ones_like(lp), denominator="self")[0],
      jnp.ones((4, 3)), -jnp.ones((1, 2)), jnp.ones((1, 2)), use_sft, group_size=4,
      max_response_len=3)[0])(rl_logp)
  np.testing.assert_allclose(g, 0.0)


def test_dypo_routing_and_regimes():
  correct = jnp.array([[1, 1], [0, 0], [1, 0]])
  regime = hybrid.dypo_route(correct)
  np.testing.assert_array_equal(regime, [hybrid.DYPO_EASY, hybrid.DYPO_HARD, hybrid.DYPO_MIXED])
  grpo_tok = jnp.full((6, 3), 2.0)
  mask = jnp.ones((6, 3))
  gal = jnp.array([0.0, 0.0, 4.0])
  teacher = -jnp.ones((3, 2))
  loss, aux = hybrid.dypo_loss(grpo_tok, mask, gal, teacher, jnp.ones((3, 2)), regime,
                               group_size=2, alpha=0.5, gamma=1.0)
  # hard: gamma * 2 (NLL of 2 teacher tokens); mixed: 0.5*2 + 0.5*4 = 3; easy: 0. Mean over 3.
  np.testing.assert_allclose(loss, (2.0 + 3.0) / 3)
  assert float(aux["frac_mixed"]) == pytest.approx(1 / 3)
  a1, _ = hybrid.dypo_loss(grpo_tok, mask, gal, teacher, jnp.ones((3, 2)), regime, group_size=2,
                           alpha=1.0)
  np.testing.assert_allclose(a1, (2.0 + 2.0) / 3)  # alpha = 1: mixed regime is pure GRPO


def test_dypo_all_correct_group_has_zero_gradient():
  regime = hybrid.dypo_route(jnp.ones((1, 2)))
  g = jax.grad(lambda x: hybrid.dypo_loss(x, jnp.ones((2, 3)), jnp.zeros(1), -jnp.ones((1, 2)),
                                          jnp.ones((1, 2)), regime, group_size=2)[0])(
      jnp.ones((2, 3)))
  np.testing.assert_allclose(g, 0.0)
