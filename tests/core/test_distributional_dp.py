"""Tests for rlpost.core.distributional (stock-augmented distributional DP)."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.core import distributional as dist
from rlpost.planning import tabular

TAU = 0.1
CVAR = functools.partial(dist.cvar, tau=TAU)
RU_UTILITY = functools.partial(
    dist.expected_utility, utility=functools.partial(dist.cvar_stock_utility, tau=TAU))
BANDIT_STOCKS = jnp.arange(-3.0, 4.0)
BANDIT_SUPPORT = jnp.arange(-10.0, 11.0)


def _numpy_cramer_projection(locs, probs, support):
  """Independent reference: split each atom's mass between its two neighbouring support points."""
  out = np.zeros(support.shape[0])
  for x, p in zip(np.clip(locs, support[0], support[-1]), probs):
    j = min(int(np.searchsorted(support, x, side="right")) - 1, support.shape[0] - 2)
    w = (x - support[j]) / (support[j + 1] - support[j])
    out[j] += p * (1 - w)
    out[j + 1] += p * w
  return out


@pytest.mark.parametrize("use_jit", [False, True])
def test_categorical_projection_keeps_mass_and_mean(use_jit):
  support = jnp.linspace(-4.0, 4.0, 17)
  locs = jax.random.uniform(jax.random.PRNGKey(0), (5, 7), minval=-4.0, maxval=4.0)
  probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (5, 7)))
  project = jax.jit(dist.categorical_projection) if use_jit else dist.categorical_projection
  proj = project(locs, probs, support)
  np.testing.assert_allclose(proj.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(proj @ support, jnp.sum(locs * probs, -1), atol=1e-5)
  for i in range(5):
    np.testing.assert_allclose(
        proj[i], _numpy_cramer_projection(np.asarray(locs[i]), np.asarray(probs[i]),
                                          np.asarray(support)), atol=1e-5)
  # Atoms outside the support collapse onto its ends.
  np.testing.assert_allclose(
      project(jnp.array([-9.0, 9.0]), jnp.array([0.5, 0.5]), support)[jnp.array([0, 16])],
      [0.5, 0.5])


@pytest.mark.slow
def test_categorical_projection_matches_rlax():
  rlax = pytest.importorskip("rlax")
  support = jnp.linspace(-4.0, 4.0, 17)
  locs = jax.random.uniform(jax.random.PRNGKey(0), (7,), minval=-5.0, maxval=5.0)
  probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (7,)))
  np.testing.assert_allclose(dist.categorical_projection(locs, probs, support),
                             rlax.categorical_l2_project(locs, probs, support), atol=1e-5)


def test_quantile_projection_properties():
  locs = jnp.array([3.0, -1.0, 2.0, 0.5])
  np.testing.assert_allclose(
      dist.quantile_projection(locs, jnp.full(4, 0.25), 4), jnp.sort(locs))
  # Two-point law 0 w.p. 0.1, 2 w.p. 0.9, ten quantiles: one atom at 0, nine at 2.
  q = dist.quantile_projection(jnp.array([2.0, 0.0]), jnp.array([0.9, 0.1]), 10)
  np.testing.assert_allclose(q, jnp.array([0.0] + [2.0] * 9))
  # Zero-weight atoms never appear and nothing is NaN.
  q = dist.quantile_projection(jnp.array([-50.0, 1.0]), jnp.array([0.0, 1.0]), 3)
  np.testing.assert_allclose(q, jnp.ones(3))


@pytest.mark.parametrize("use_jit", [False, True])
def test_cvar_rockafellar_uryasev_matches_sorted_tail(use_jit):
  cvar = jax.jit(dist.cvar, static_argnames="tau") if use_jit else dist.cvar
  rng = np.random.default_rng(0)
  for _ in range(5):
    x = rng.normal(size=6).astype(np.float32)
    p = rng.dirichlet(np.ones(6)).astype(np.float32)
    for tau in (0.05, 0.3, 1.0):
      order = np.argsort(x)
      cum, acc = 0.0, 0.0
      for i in order:  # average of the lowest tau mass
        take = min(p[i], tau - cum)
        if take <= 0:
          break
        acc += take * x[i]
        cum += take
      np.testing.assert_allclose(cvar(jnp.asarray(x), jnp.asarray(p), tau=tau), acc / tau,
                                 rtol=1e-4, atol=1e-5)


def test_stock_update_and_interpolation():
  np.testing.assert_allclose(dist.stock_update(1.0, 2.0, discount=0.5), 6.0)
  stocks = jnp.array([-1.0, 0.0, 2.0])
  lower, w = dist.stock_interpolation(stocks, jnp.array([-5.0, -0.5, 1.0, 2.0, 9.0]))
  np.testing.assert_array_equal(lower, [0, 0, 1, 1, 1])
  np.testing.assert_allclose(w, [1.0, 0.5, 0.5, 0.0, 0.0])
  lower, w = dist.stock_interpolation(jnp.array([0.0]), jnp.array([3.0]))
  assert int(lower[0]) == 0 and float(w[0]) == 1.0


def _bandit_laws(representation):
  mdp = tabular.bandit_mdp()
  kwargs = (dict(support=BANDIT_SUPPORT) if representation == "categorical"
            else dict(representation="quantile", num_quantiles=20))
  evaluate = functools.partial(
      dist.distributional_policy_evaluation, mdp=mdp, stocks=BANDIT_STOCKS, num_iterations=3,
      **kwargs)
  return [evaluate(jnp.full((3,), arm, jnp.int32)) for arm in (0, 1)]


@pytest.mark.parametrize("representation", ["categorical", "quantile"])
def test_bandit_expectation_risky_cvar_sure(representation):
  c0 = 3  # index of stock 0
  sure, risky = _bandit_laws(representation)
  at = lambda law, k: (law.locs[0, k], law.probs[0, k])
  np.testing.assert_allclose(dist.expectation(*at(sure, c0)), 1.0, atol=1e-5)
  np.testing.assert_allclose(dist.expectation(*at(risky, c0)), 1.8, atol=1e-5)
  np.testing.assert_allclose(CVAR(*at(sure, c0)), 1.0, atol=1e-5)
  np.testing.assert_allclose(CVAR(*at(risky, c0)), 0.0, atol=1e-5)
  # Outer max over c_0 of -c_0 + E min(c_0 + G, 0) / tau reproduces both CVaRs exactly.
  for law, want in ((sure, 1.0), (risky, 0.0)):
    best, _ = dist.cvar_from_stock_values(RU_UTILITY(law.locs[0], law.probs[0]), BANDIT_STOCKS)
    np.testing.assert_allclose(best, want, atol=1e-5)
  # Homeostatic target 1 prefers the sure arm, target 2 the risky one.
  for target, arm in ((1.0, 0), (2.0, 1)):
    f = functools.partial(dist.homeostatic_utility, target=target)
    scores = [dist.expected_utility(*at(law, c0), utility=f) for law in (sure, risky)]
    assert int(np.argmax(scores)) == arm


def _bandit_vi(use_jit, functionals=(dist.expectation, CVAR)):
  mdp = tabular.bandit_mdp()
  def solve(functional):
    return dist.distributional_value_iteration(
        mdp, BANDIT_STOCKS, functional=functional, support=BANDIT_SUPPORT, num_iterations=2)
  if use_jit:
    sols = [solve(f) for f in functionals]
  else:
    with jax.disable_jit():
      sols = [solve(f) for f in functionals]
  for functional, sol in zip(functionals, sols):
    if functional is CVAR:  # CVaR_0.1 takes the sure arm at every stock
      assert np.all(sol.policy[0] == 0)
      np.testing.assert_allclose(sol.action_values[0, 3], [1.0, 0.0], atol=1e-5)
    else:  # the mean takes the risky arm: F = 1.8 + c
      assert np.all(sol.policy[0] == 1)
      np.testing.assert_allclose(sol.values[0], 1.8 + BANDIT_STOCKS, atol=1e-5)
  return sols


def test_bandit_value_iteration_cvar_picks_sure_arm():
  # (The expectation's choice is checked on the laws above and by the identity test.)
  _bandit_vi(use_jit=True, functionals=(CVAR,))


@pytest.mark.slow
def test_bandit_value_iteration_no_jit_agrees():
  for jitted, eager in zip(_bandit_vi(True), _bandit_vi(False)):
    np.testing.assert_allclose(jitted.values, eager.values, atol=1e-5)
    np.testing.assert_array_equal(jitted.policy, eager.policy)


def _check_identity(solver):
  mdp = tabular.layered_mdp(0)
  stocks = jnp.arange(-8.0, 9.0)
  support = jnp.arange(-16.0, 17.0)
  v, q = tabular.value_iteration(mdp)
  sol = solver(mdp, stocks, support)
  inner = slice(6, 11)  # |c| <= 2: c + (at most 3 rewards in [-1, 2]) stays in [-8, 8]
  np.testing.assert_allclose(sol.values[:, inner], (v[:, None] + stocks)[:, inner], atol=1e-4)
  live = ~np.asarray(mdp.terminal)
  np.testing.assert_array_equal(sol.policy[live, 8], jnp.argmax(q, -1)[live])


def test_identity_functional_reduces_to_value_iteration():
  """F = E: F(law(s, c)) = V*(s) + c; exact for stocks whose successors stay on the grid."""
  _check_identity(lambda mdp, stocks, support: dist.distributional_value_iteration(
      mdp, stocks, support=support, num_iterations=4))


@pytest.mark.slow
def test_identity_functional_policy_iteration():
  _check_identity(lambda mdp, stocks, support: dist.distributional_policy_iteration(
      mdp, stocks, support=support, num_iterations=3, num_evaluation_iterations=4))


def test_stock_augmented_cvar_beats_every_stationary_policy():
  tau = 0.25
  mdp = tabular.lottery_bridge_mdp()
  stocks = jnp.arange(-6.0, 7.0)
  support = jnp.arange(-12.0, 13.0)
  utility = functools.partial(
      dist.expected_utility, utility=functools.partial(dist.cvar_stock_utility, tau=tau))
  sol = dist.distributional_value_iteration(
      mdp, stocks, functional=utility, support=support, num_iterations=4)
  ru_value, k0 = dist.cvar_from_stock_values(sol.values[0], stocks)
  evaluate = jax.jit(jax.vmap(functools.partial(
      dist.distributional_policy_evaluation, mdp=mdp, stocks=stocks, support=support,
      num_iterations=4)))
  # The stock-augmented policy's own return law, started at the RU-optimal stock c_0.
  aug = evaluate(sol.policy[None])
  aug_cvar = dist.cvar(aug.locs[0, 0, k0], aug.probs[0, 0, k0], tau=tau) - stocks[k0]
  np.testing.assert_allclose(aug_cvar, ru_value, atol=1e-5)
  policies = jnp.array([list(p) + [0, 0] for p in itertools.product([0, 1], repeat=4)])
  laws = evaluate(jnp.broadcast_to(policies[:, :, None], policies.shape + (stocks.shape[0],)))
  zero = 6
  blind = dist.cvar(laws.locs[:, 0, zero], laws.probs[:, 0, zero], tau=tau)
  assert float(aug_cvar) > float(jnp.max(blind)) + 0.2  # 1.8 vs 1.4 measured
  np.testing.assert_allclose(aug_cvar, 1.8, atol=1e-5)
  # The bridge choice really depends on the stock: risky after the low lottery, safe after high.
  assert int(sol.policy[3, int(k0)]) == 1 and int(sol.policy[3, int(k0) + 2]) == 0


def test_degenerate_zero_rewards_no_nan():
  mdp = tabular.layered_mdp(1, reward_values=(0,), discount=0.9)
  stocks = jnp.array([0.0])
  sol = dist.distributional_value_iteration(
      mdp, stocks, functional=CVAR, representation="quantile", num_quantiles=4, num_iterations=4)
  assert np.all(np.isfinite(sol.law.locs)) and np.all(np.isfinite(sol.values))
  np.testing.assert_allclose(sol.values, 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="support"):
    dist.distributional_value_iteration(mdp, stocks, num_iterations=1)
