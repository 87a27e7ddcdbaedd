"""DCPO (arXiv 2509.02333): dynamic clip bounds, loss, and smooth advantage standardization."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

bounds = jax.jit(core.dcpo_clip_bounds)
sas = jax.jit(core.dcpo_smooth_advantages, static_argnames=("scale_by_std",))


def _scalar_grad(fn):
  return jax.jit(jax.grad(lambda lp, *a: fn(lp, *a)[0]))


def test_clip_bounds_worked_values_and_cap():
  low, high = bounds(jnp.array([0.9, 0.01, 0.0]), eps_low=0.16, eps_high=0.2)
  np.testing.assert_allclose(low, [0.7687, 0.5, 0.5], atol=1e-4)
  np.testing.assert_allclose(high, [1.1872, 5.0, 10.0], atol=1e-4)


def test_clip_bounds_defining_equations_and_monotone():
  q = jnp.linspace(1e-3, 1.0, 400)
  eps_lo, eps_hi = 0.16, 0.2
  low, high = bounds(q, eps_low=eps_lo, eps_high=eps_hi)
  assert bool(jnp.all(low <= 1.0)) and bool(jnp.all(high >= 1.0))
  # The band widens as q -> 0 (q increasing => low non-decreasing, high non-increasing).
  assert bool(jnp.all(jnp.diff(low) >= -1e-6)) and bool(jnp.all(jnp.diff(high) <= 1e-6))
  assert bool(jnp.all(high <= 10.0))
  uncapped = high < 10.0
  np.testing.assert_allclose(((high - 1) * high * q)[uncapped], eps_hi, rtol=1e-3)
  big = q >= 4 * eps_lo
  np.testing.assert_allclose(((1 - low) * low * q)[big], eps_lo, rtol=1e-3, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(low)[~np.asarray(big)], 0.5)


def _reference_loss(logp, old_logp, adv, eps_lo=0.16, eps_hi=0.2, c=10.0):
  q = np.exp(old_logp)
  low = 0.5 + 0.5 * np.sqrt(np.maximum(1 - 4 * eps_lo / q, 0))
  high = np.minimum(0.5 + 0.5 * np.sqrt(1 + 4 * eps_hi / q), 10.0)
  r = np.exp(logp - old_logp)
  l = np.maximum(-adv * r, -adv * np.clip(r, low, high))
  return np.where(adv < 0, np.minimum(l, -c * adv), l)


@pytest.mark.parametrize("jit", [False, True])
def test_loss_matches_numpy_reference(jit):
  rng = np.random.default_rng(0)
  old = np.log(rng.uniform(0.001, 1.0, (4, 6))).astype(np.float32)
  logp = (old + rng.normal(0, 0.8, old.shape)).astype(np.float32)
  adv = rng.normal(0, 1, old.shape).astype(np.float32)
  mask = np.ones_like(adv)
  fn = jax.jit(core.dcpo_loss_per_token) if jit else core.dcpo_loss_per_token
  loss, aux = fn(logp, old, adv, mask)
  np.testing.assert_allclose(loss, _reference_loss(logp, old, adv), rtol=1e-5, atol=1e-6)
  scalar, _ = jax.jit(core.dcpo_loss)(logp, old, adv, mask)
  np.testing.assert_allclose(scalar, np.mean(_reference_loss(logp, old, adv)), rtol=1e-5)
  assert 0.0 <= float(aux["clip_frac"]) <= 1.0


def test_rare_tokens_keep_gradient_where_ppo_clips():
  # A rare token (q = 0.01) moved to ratio 3 with A > 0: PPO(0.2) clips it, DCPO (bound 5) does not.
  old = jnp.log(jnp.array([[0.01]]))
  logp, adv, mask = old + jnp.log(3.0), jnp.ones((1, 1)), jnp.ones((1, 1))
  g_dcpo = _scalar_grad(core.dcpo_loss)(logp, old, adv, mask)
  g_ppo = _scalar_grad(core.ppo_clip_loss)(logp, old, adv, mask)
  assert float(g_ppo[0, 0]) == 0.0 and float(g_dcpo[0, 0]) < -1.0


def test_masked_padding_and_extreme_ratios_are_finite():
  logp = jnp.array([[1e4, -1e4, jnp.nan]])
  old = jnp.array([[-1e4, 1e4, jnp.inf]])
  adv = jnp.array([[1.0, -1.0, 1.0]])
  mask = jnp.array([[1.0, 1.0, 0.0]])
  loss = lambda lp: core.dcpo_loss(lp, old, adv, mask)[0]
  val, grad = jax.jit(jax.value_and_grad(loss))(logp)
  assert bool(jnp.isfinite(val)) and bool(jnp.all(jnp.isfinite(grad)))


# --- smooth advantage standardization ---------------------------------------------------------


def _sas_reference(visits_rewards):
  """Plain-Python SAS over a list of reward groups for one prompt."""
  mu_old = sd_old = 0.0
  out = []
  for i, r in enumerate(visits_rewards, start=1):
    r = np.asarray(r, np.float64)
    mu_new, sd_new = r.mean(), r.std(ddof=1)
    k = i - 1
    if k == 0:
      mu_tot, sd_tot = mu_new, sd_new
    else:
      mu_tot = (k * mu_old + mu_new) / i
      sd_tot = np.sqrt((k * sd_old ** 2 + sd_new ** 2 + (k / i) * (mu_new - mu_old) ** 2) / i)
    a_new = (r - mu_new) / sd_new if sd_new > 0 else np.zeros_like(r)
    a_tot = (r - mu_tot) / sd_tot if sd_tot > 0 else np.zeros_like(r)
    sa_new = (i - 1) / i * a_new + a_tot / i
    sa_tot = a_new / i + (i - 1) / i * a_tot
    out.append(np.where(np.abs(sa_new) < np.abs(sa_tot), sa_new, sa_tot))
    mu_old, sd_old = mu_tot, sd_tot
  return out


@pytest.mark.parametrize("jit", [False, True])
def test_sas_matches_reference_over_visits(jit):
  fn = sas if jit else core.dcpo_smooth_advantages
  visits = [[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]
  state = core.init_dcpo_stats(3)
  expected = _sas_reference(visits)
  for r, exp in zip(visits, expected):
    adv, state = fn(jnp.array([r, [0.5, 0.5, 0.5, 0.5]]), jnp.array([2, 0]), state)
    np.testing.assert_allclose(adv[0], exp, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state["visits"], [3, 0, 3])


def test_sas_first_visit_is_grpo_without_eps_and_zero_spread_later_is_a_tot_over_i():
  r = jnp.array([[1.0, 0.0, 0.0, 1.0]])
  adv, state = sas(r, jnp.array([0]), core.init_dcpo_stats(1))
  np.testing.assert_allclose(adv, jax.jit(core.grpo_advantages)(r, eps=0.0), rtol=1e-6)
  flat = jnp.ones((1, 4))
  adv2, _ = sas(flat, jnp.array([0]), state)
  mu_tot = (0.5 + 1.0) / 2
  sd_tot = np.sqrt((np.var([1, 0, 0, 1], ddof=1) + 0.0 + 0.5 * 0.25) / 2)
  np.testing.assert_allclose(adv2, (1.0 - mu_tot) / sd_tot / 2 * np.ones((1, 4)), rtol=1e-5)


def test_sas_degenerate_inputs_no_nan():
  state = core.init_dcpo_stats(2)
  for r in (jnp.full((2, 3), 0.7), jnp.full((2, 3), 0.7)):
    adv, state = sas(r, jnp.array([0, 1]), state)
    assert bool(jnp.all(jnp.isfinite(adv)))
  np.testing.assert_array_equal(adv, 0.0)  # all-equal history and batch: nothing to learn
