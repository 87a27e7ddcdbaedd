"""Tests for rlpost.core.advantages."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

JIT = [False, True]


def _maybe_jit(fn, jit):
  return jax.jit(fn) if jit else fn


@pytest.fixture
def rewards():
  return jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)


@pytest.mark.parametrize("jit", JIT)
def test_grpo_zero_mean_per_group_and_unbiased_std(rewards, jit):
  a = _maybe_jit(core.grpo_advantages, jit)(rewards)
  np.testing.assert_allclose(a.sum(1), 0.0, atol=1e-5)
  r = np.asarray(rewards)
  expected = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)


def test_grpo_all_equal_group_gives_zero():
  a = core.grpo_advantages(jnp.full((3, 8), 0.7))
  assert np.all(np.asarray(a) == 0.0)


def test_grpo_affine_invariance(rewards):
  a = core.grpo_advantages(rewards, eps=0.0)
  b = core.grpo_advantages(3.0 * rewards + 2.0, eps=0.0)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_grpo_singleton_group_follows_verl():
  r = jnp.array([[2.0], [-1.0]])
  np.testing.assert_allclose(core.grpo_advantages(r), r / (1 + 1e-6))


def test_dr_grpo_is_rloo_times_n_minus_one_over_n(rewards):
  g = rewards.shape[1]
  np.testing.assert_allclose(core.grpo_advantages(rewards, scale_by_std=False),
                             core.rloo_advantages(rewards) * (g - 1) / g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit", JIT)
def test_rloo_is_leave_one_out(rewards, jit):
  a = _maybe_jit(core.rloo_advantages, jit)(rewards)
  r = np.asarray(rewards)
  g = r.shape[1]
  loo = np.stack([r[:, i] - np.delete(r, i, axis=1).mean(1) for i in range(g)], 1)
  np.testing.assert_allclose(a, loo, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a, g / (g - 1) * (r - r.mean(1, keepdims=True)), rtol=1e-5, atol=1e-6)


def test_rloo_baseline_independent_of_own_reward(rewards):
  r2 = rewards.at[0, 0].add(10.0)
  # Baseline of sample 0 = R_0 - a_0 must not change when R_0 changes.
  b1 = rewards[0, 0] - core.rloo_advantages(rewards)[0, 0]
  b2 = r2[0, 0] - core.rloo_advantages(r2)[0, 0]
  np.testing.assert_allclose(b1, b2, rtol=1e-5)


def test_group_of_one_rloo_is_reward():
  r = jnp.array([[3.0], [1.0]])
  np.testing.assert_allclose(core.rloo_advantages(r), r)


@pytest.mark.parametrize("jit", JIT)
def test_reinforce_pp_baseline_whitened_over_valid_tokens(jit):
  rng = np.random.default_rng(3)
  r = jnp.asarray(rng.integers(0, 2, size=(3, 4)), jnp.float32)
  m = jnp.asarray(rng.random((12, 6)) < 0.7, jnp.float32)
  a = np.asarray(_maybe_jit(core.reinforce_pp_baseline_advantages, jit)(r, m))
  vals = a[np.asarray(m) > 0]
  np.testing.assert_allclose(vals.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(vals.std(ddof=1), 1.0, atol=1e-3)
  assert np.all(a[np.asarray(m) == 0] == 0)


def test_reinforce_pp_baseline_zero_variance_group_nonzero_after_whitening():
  # Group 0 has all-equal rewards (a_i = 0 before whitening); lengths differ, so the batch mean
  # is length-weighted and the whitened value of that group is generally non-zero. Expected.
  r = jnp.array([[1.0, 1.0], [1.0, 0.0]])
  m = jnp.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], jnp.float32)
  a = core.reinforce_pp_baseline_advantages(r, m)
  assert abs(float(a[0, 0])) > 1e-3


def test_reinforce_pp_outcome_gamma_one_tiles_reward_before_whitening():
  m = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
  tr = core.outcome_to_token_rewards(jnp.array([2.0, -1.0]), m)
  g = core.discounted_returns_to_go(tr, m, gamma=1.0)
  np.testing.assert_allclose(g, np.array([[2, 2, 2, 0], [-1, -1, 0, 0]], np.float32))


def _np_gae(r, d, v, lam):
  t = len(r)
  adv = np.zeros(t, np.float64)
  last = 0.0
  for i in reversed(range(t)):
    delta = r[i] + d[i] * v[i + 1] - v[i]
    last = delta + d[i] * lam * last
    adv[i] = last
  return adv


@pytest.mark.parametrize("jit", JIT)
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_matches_numpy_reference(lam, jit):
  rng = np.random.default_rng(4)
  r = rng.normal(size=9).astype(np.float32)
  done = rng.random(9) < 0.2
  d = (0.99 * (1 - done)).astype(np.float32)
  v = rng.normal(size=10).astype(np.float32)
  fn = _maybe_jit(lambda a, b, c: core.gae_advantages(a, b, c, lambda_=lam), jit)
  adv, ret = fn(r, d, v)
  np.testing.assert_allclose(adv, _np_gae(r, d, v, lam), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, np.asarray(adv) + v[:-1], rtol=1e-6)


def test_gae_lambda_one_is_discounted_return_minus_value():
  rng = np.random.default_rng(5)
  r = rng.normal(size=6).astype(np.float32)
  gamma = 0.9
  v = rng.normal(size=7).astype(np.float32)
  adv, _ = core.gae_advantages(r, gamma * np.ones(6, np.float32), v, lambda_=1.0)
  ret = np.array([sum(gamma**k * r[t + k] for k in range(6 - t)) + gamma**(6 - t) * v[6]
                  for t in range(6)])
  np.testing.assert_allclose(adv, ret - v[:-1], rtol=1e-5, atol=1e-5)


def test_gae_lambda_zero_is_td_error():
  r = jnp.array([1.0, 2.0, 3.0])
  d = jnp.array([0.5, 0.5, 0.0])
  v = jnp.array([0.1, 0.2, 0.3, 9.0])
  adv, _ = core.gae_advantages(r, d, v, lambda_=0.0)
  np.testing.assert_allclose(adv, r + d * v[1:] - v[:-1], rtol=1e-6)


def test_gae_matches_rlax():
  rlax = pytest.importorskip("rlax")
  rng = np.random.default_rng(6)
  r = rng.normal(size=8).astype(np.float32)
  d = (0.97 * (rng.random(8) > 0.2)).astype(np.float32)
  v = rng.normal(size=9).astype(np.float32)
  ours, _ = core.gae_advantages(r, d, v, lambda_=0.9)
  ref = rlax.truncated_generalized_advantage_estimation(r, d, 0.9, v)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_gae_wrong_value_length_is_named():
  with pytest.raises(ValueError, match="T\\+1"):
    core.gae_advantages(jnp.ones(3), jnp.ones(3), jnp.ones(3))


def test_token_gae_zero_values_gamma_lambda_one_is_reward_to_go():
  m = jnp.array([[1, 1, 1, 0]], jnp.float32)
  tr = jnp.array([[0.0, 1.0, 2.0, 50.0]])
  adv, ret = core.token_gae_advantages(tr, jnp.zeros((1, 4)), m, gamma=1.0, lambda_=1.0,
                                       whiten=False)
  np.testing.assert_allclose(adv, [[3.0, 3.0, 2.0, 0.0]])
  np.testing.assert_allclose(ret, [[3.0, 3.0, 2.0, 0.0]])


def test_overlong_penalty_shape():
  lengths = jnp.array([0, 10, 12, 14, 16])
  p = np.asarray(core.overlong_penalty(lengths, max_len=16, buffer=4, factor=1.0))
  np.testing.assert_allclose(p, [0.0, 0.0, 0.0, -0.5, -1.0])
  assert np.all(p <= 0)
  with pytest.raises(ValueError, match="buffer"):
    core.overlong_penalty(lengths, max_len=16, buffer=0)


def test_wrong_reward_rank_is_named():
  with pytest.raises(ValueError, match=r"\[P, G\]"):
    core.grpo_advantages(jnp.ones(4))


# -- variable group sizes: a padded [P, G_max] grid with a valid mask -------------------------------


def _padded(groups, width, fill=123.0):
  """Rows of different lengths -> (padded rewards with a junk fill, valid mask)."""
  r = np.full((len(groups), width), fill, np.float32)
  v = np.zeros((len(groups), width), bool)
  for i, g in enumerate(groups):
    r[i, :len(g)] = g
    v[i, :len(g)] = True
  return jnp.asarray(r), jnp.asarray(v)


@pytest.mark.parametrize("jit", JIT)
@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_masked_groups_equal_each_unpadded_group(estimator, jit):
  fn = {"grpo": core.grpo_advantages,
        "dr_grpo": lambda r, **kw: core.grpo_advantages(r, scale_by_std=False, **kw),
        "rloo": core.rloo_advantages}[estimator]
  rng = np.random.default_rng(3)
  groups = [rng.normal(size=n).astype(np.float32) for n in (5, 2, 7, 3)]
  groups.append(np.asarray([0.0, 1.0, 1.0, 0.0, 1.0], np.float32))
  r, v = _padded(groups, width=8)
  out = np.asarray(_maybe_jit(lambda a, b: fn(a, valid=b), jit)(r, v))
  for i, g in enumerate(groups):
    ref = np.asarray(fn(jnp.asarray(g)[None]))[0]
    np.testing.assert_allclose(out[i, :len(g)], ref, rtol=1e-5, atol=1e-6)
    assert np.all(out[i, len(g):] == 0.0)  # padding carries no advantage, whatever its value
  # All-valid mask == the fixed-size estimator.
  full = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  np.testing.assert_allclose(fn(full, valid=jnp.ones((3, 6), bool)), fn(full), rtol=1e-5,
                             atol=1e-6)


def test_masked_groups_ignore_where_the_padding_sits():
  rng = np.random.default_rng(4)
  r = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
  v = jnp.asarray([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0]], bool)
  out = np.asarray(core.grpo_advantages(r, valid=v))
  for i in range(2):
    idx = np.flatnonzero(np.asarray(v[i]))
    np.testing.assert_allclose(out[i, idx], np.asarray(core.grpo_advantages(r[i:i + 1, idx]))[0],
                               rtol=1e-5, atol=1e-6)
    assert np.all(out[i, ~np.asarray(v[i])] == 0.0)


def test_masked_groups_degenerate_rows_give_no_nan():
  # An empty row, a singleton (verl: R / (1 + eps)), a zero-spread row, and huge padding values.
  r, v = _padded([[], [2.0], [0.5, 0.5, 0.5], [1.0, -1.0]], width=4, fill=np.float32(3e38))
  for fn in (core.grpo_advantages, core.rloo_advantages,
             lambda a, **kw: core.grpo_advantages(a, scale_by_std=False, **kw)):
    out = np.asarray(fn(r, valid=v))
    assert np.all(np.isfinite(out))
    assert np.all(out[0] == 0.0) and np.all(out[2] == 0.0)
    assert out[1, 0] == pytest.approx(2.0, rel=1e-5) and np.all(out[1, 1:] == 0.0)
  with pytest.raises(ValueError, match="valid must have the rewards' shape"):
    core.grpo_advantages(r, valid=v[:, :2])
