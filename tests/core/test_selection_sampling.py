"""Tests for the issue-6 core pieces: D3S, duration weights, contrastive selection
(rlpost.core.selection), VADE / V0 / curriculum (rlpost.core.prompt_sampling) and multi-objective
weighting (rlpost.core.multiobjective)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.core import multiobjective as mo
from rlpost.core import prompt_sampling as ps
from rlpost.core import selection as sel

JIT = [False, True]


def _mj(fn, jit):
  return jax.jit(fn) if jit else fn


# -------------------------------------------------------------------------------------------- D3S


@pytest.mark.parametrize("jit", JIT)
@pytest.mark.parametrize("seed", range(4))
def test_d3s_subset_variance_is_maximal_by_enumeration(seed, jit):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=7).astype(np.float32)
  fn = _mj(sel.d3s_max_variance_subset, jit)
  for n in range(1, 8):
    chosen = np.asarray(fn(jnp.asarray(a), n))
    assert chosen.sum() == n
    best = max(np.var(a[list(c)]) for c in itertools.combinations(range(7), n))
    np.testing.assert_allclose(np.var(a[chosen]), best, rtol=1e-5, atol=1e-7)
    # ... and hence at least that of any random subset of the same size.
    rand = rng.choice(7, n, replace=False)
    assert np.var(a[chosen]) >= np.var(a[rand]) - 1e-6


def test_d3s_full_keep_is_identity_and_binary_groups_take_extremes():
  a = jnp.array([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
  np.testing.assert_array_equal(sel.d3s_sample_mask(a, n_keep=6), np.ones((1, 6), bool))
  m = np.asarray(sel.d3s_sample_mask(a, n_keep=2))
  assert set(np.asarray(a)[m].tolist()) == {1.0, -1.0}
  cross = sel.d3s_sample_mask(jnp.array([[0.0, 0.1], [5.0, -5.0]]), n_keep=2, cross_group=True)
  np.testing.assert_array_equal(cross, [[False, False], [True, True]])


@pytest.mark.parametrize("jit", JIT)
def test_d3s_token_mask_keeps_exactly_ceil_k(jit):
  rng = np.random.default_rng(0)
  adv = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  ent = jnp.asarray(rng.random((3, 5)), jnp.float32)
  mask = jnp.asarray(rng.random((3, 5)) < 0.7)
  n_valid = int(mask.sum())
  fn = _mj(lambda f: sel.d3s_token_mask(adv, ent, mask, keep_frac=f), jit)
  for frac in (0.01, 0.2, 0.5, 1.0):
    kept = np.asarray(fn(frac))
    assert kept.sum() == int(np.ceil(frac * n_valid))
    assert not np.any(kept & ~np.asarray(mask))
    score = np.abs(np.asarray(adv)) * np.asarray(ent)
    if 0 < kept.sum() < n_valid:
      assert score[kept].min() >= score[np.asarray(mask) & ~kept].max()
  assert np.asarray(sel.d3s_token_mask(adv, ent, jnp.zeros((3, 5), bool), keep_frac=0.5)).sum() == 0


def test_d3s_schedule_endpoints():
  n0, k0 = sel.d3s_schedule(0.0, n_init=4, n_final=8, k_init=0.2, k_final=1.0)
  n1, k1 = sel.d3s_schedule(1.0, n_init=4, n_final=8, k_init=0.2, k_final=1.0)
  assert int(n0) == 4 and int(n1) == 8
  np.testing.assert_allclose([k0, k1], [0.2, 1.0])


# --------------------------------------------------------------------------- duration / contrastive


def test_duration_weights_restore_synchronous_gradient():
  # Categorical policy; completed samples arrive with frequency ~ pi(a)/dt(a). The dt-weighted,
  # mean-normalised gradient over that distribution equals the synchronous E_pi[A grad log pi].
  logits = jnp.array([0.3, -0.2, 0.5])
  adv = jnp.array([1.0, -0.5, 2.0])
  dt = jnp.array([1.0, 4.0, 10.0])
  pi = jax.nn.softmax(logits)
  q = pi / dt / jnp.sum(pi / dt)
  grad_logp = jax.jacobian(jax.nn.log_softmax)(logits)  # [a, theta]
  sync = jnp.sum(pi[:, None] * adv[:, None] * grad_logp, 0)
  w = dt / jnp.sum(q * dt)  # mean-normalised under the arrival distribution
  weighted = jnp.sum(q[:, None] * w[:, None] * adv[:, None] * grad_logp, 0)
  np.testing.assert_allclose(weighted, sync, rtol=1e-5, atol=1e-7)
  unweighted = jnp.sum(q[:, None] * adv[:, None] * grad_logp, 0)
  assert not np.allclose(unweighted, sync, atol=1e-3)
  # Our function computes exactly that normalisation on a sample of arrivals.
  samples = jnp.array([0, 0, 1, 2, 2, 2])
  ws = sel.duration_weights(dt[samples])
  np.testing.assert_allclose(ws.mean(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(sel.duration_weights(jnp.full(4, 3.0)), 1.0)


def test_contrastive_select_prefers_short_at_equal_reward():
  r = jnp.array([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
  lengths = jnp.array([[30, 10, 5, 50, 20, 8]])
  keep = np.asarray(sel.contrastive_select(r, lengths, keep=2))
  assert keep.sum() == 2
  assert keep[0, 1]  # highest reward, shortest reasoning
  with pytest.raises(ValueError, match="keep"):
    sel.contrastive_select(r, lengths, keep=0)


# ------------------------------------------------------------------------------------------- VADE


def test_vade_no_forgetting_is_conjugate_posterior():
  st = ps.init_vade_state(3)
  st = ps.vade_update(st, jnp.array([0, 2]), jnp.array([3, 0]), 4, rho_loc=1.0)
  st = ps.vade_update(st, jnp.array([0]), jnp.array([1]), 4, rho_loc=1.0)
  np.testing.assert_allclose(st.alpha, [1 + 4, 1, 1])
  np.testing.assert_allclose(st.beta, [1 + 4, 1, 1 + 4])


def test_vade_prefers_mixed_outcomes_and_decay_moves_to_prior():
  st = ps.init_vade_state(3)
  st = ps.vade_update(st, jnp.arange(3), jnp.array([8, 4, 0]), 8, rho_loc=1.0)
  picked = ps.vade_select(st, None, 1)
  assert int(picked[0]) == 1  # the prompt with p near 1/2
  keys = jax.random.split(jax.random.PRNGKey(0), 200)
  draws = np.asarray(jax.vmap(lambda k: ps.vade_select(st, k, 1)[0])(keys))
  counts = np.bincount(draws, minlength=3)
  assert counts[1] == counts.max()
  decayed = ps.vade_decay(st, rho_glob=0.5)
  assert np.all(np.asarray(decayed.alpha) <= np.asarray(st.alpha))
  assert np.all(np.asarray(decayed.alpha) >= 1.0) and np.all(np.asarray(decayed.beta) >= 1.0)
  np.testing.assert_allclose(ps.vade_decay(st, rho_glob=0.0).alpha, 1.0)
  same = jax.jit(lambda s, k: ps.vade_select(s, k, 2))(st, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(same, ps.vade_select(st, jax.random.PRNGKey(0), 2))


# --------------------------------------------------------------------------------------------- V0


def test_v0_utility_edges():
  assert float(ps.v0_utility(5, 0.0)) == 0.0
  assert float(ps.v0_utility(5, 1.0)) == 0.0
  assert float(ps.v0_utility(1, 0.3)) == 0.0
  b = jnp.arange(1, 20)
  assert np.all(np.asarray(ps.v0_utility(b, 0.4)) >= 0)


@pytest.mark.parametrize("jit", JIT)
def test_v0_allocation_respects_bounds_and_greedy_rule(jit):
  p = jnp.array([0.05, 0.5, 0.95, 0.3])
  fn = _mj(lambda pp: ps.v0_allocate_budget(pp, 40, b_min=2, b_max=16), jit)
  b = np.asarray(fn(p))
  assert b.sum() == 40 and b.min() >= 2 and b.max() <= 16
  # Replay the greedy rule in NumPy.
  ref = np.full(4, 2)
  u = lambda bb, pp: bb * (1 - pp) * (1 - (1 - pp) ** (bb - 1))
  for _ in range(40 - 8):
    gain = np.where(ref < 16, u(ref + 1, np.asarray(p)) - u(ref, np.asarray(p)), -np.inf)
    ref[np.argmax(gain)] += 1
  np.testing.assert_array_equal(b, ref)
  with pytest.raises(ValueError, match="total_budget"):
    ps.v0_allocate_budget(p, 4)


# ------------------------------------------------------------------------------------- curriculum


def test_curriculum_unlocks_in_order_and_samples_only_unlocked():
  st = ps.init_curriculum(3)
  np.testing.assert_allclose(ps.curriculum_level_probs(st), [1.0, 0.0, 0.0])
  st = ps.curriculum_update(st, jnp.zeros(40, jnp.int32), jnp.ones(40), min_visits=32)
  assert int(st.unlocked) == 1
  probs = np.asarray(ps.curriculum_level_probs(st, focus=0.5))
  np.testing.assert_allclose(probs, [0.5, 0.5, 0.0])
  st2 = ps.curriculum_update(st, jnp.ones(40, jnp.int32), jnp.zeros(40), min_visits=32)
  assert int(st2.unlocked) == 1  # failing level 1 does not promote


# -------------------------------------------------------------------------------- multi-objective


@pytest.mark.parametrize("jit", JIT)
def test_hypervolume_2d_values(jit):
  hv = _mj(lambda p: mo.hypervolume(p, jnp.zeros(2)), jit)
  np.testing.assert_allclose(hv(jnp.array([[1.0, 2.0], [2.0, 1.0]])), 3.0)
  np.testing.assert_allclose(hv(jnp.array([[1.0, 2.0], [2.0, 1.0], [3.0, 3.0]])), 9.0)
  np.testing.assert_allclose(hv(jnp.array([[1.0, 2.0], [0.5, 0.5]])), 2.0)  # dominated adds 0


def test_hypervolume_3d_matches_monte_carlo_and_minimisation():
  rng = np.random.default_rng(0)
  pts = rng.random((6, 3)).astype(np.float32)
  exact = float(mo.hypervolume(jnp.asarray(pts), jnp.zeros(3)))
  grid = rng.random((200000, 3))
  dominated = np.any(np.all(grid[:, None, :] <= pts[None], axis=2), axis=1)
  np.testing.assert_allclose(exact, dominated.mean(), atol=5e-3)
  # Minimising the second objective == maximising its negation.
  a = mo.hypervolume(jnp.asarray(pts), jnp.zeros(3), maximize=(True, False, True))
  b = mo.hypervolume(jnp.asarray(pts * [1, -1, 1]), jnp.zeros(3))
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_hv_guided_step_contribution_and_meta():
  buf = mo.init_pareto_buffer(jnp.zeros(2), capacity=8)
  buf, _, _ = mo.hv_guided_step(buf, jnp.array([1.0, 2.0]))
  buf, _, _ = mo.hv_guided_step(buf, jnp.array([2.0, 1.0]))
  buf2, hvc, meta = mo.hv_guided_step(buf, jnp.array([3.0, 3.0]))
  np.testing.assert_allclose(hvc, 6.0)
  np.testing.assert_allclose(meta, 0.5 + 1.5 * np.tanh(6.0), rtol=1e-6)
  _, hvc0, meta0 = mo.hv_guided_step(buf2, jnp.array([0.5, 0.5]))
  assert float(hvc0) == 0.0 and float(meta0) == 0.5
  _, hvc_neg, _ = mo.hv_guided_step(buf2, jnp.array([-1.0, 5.0]))
  assert float(hvc_neg) == 0.0


def test_gradient_weights_stay_on_simplex_and_equal_influence_is_fixed_point():
  w = jnp.array([0.5, 0.25, 0.25])
  g_same = jnp.ones((3, 4))
  w2, _ = mo.gradient_reward_weights(w, g_same, lr=1e-6, lam=1e-5)
  np.testing.assert_allclose(w2, w, rtol=1e-5)
  g = jnp.array([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]])
  w3, infl = mo.gradient_reward_weights(w, g, lr=1e-6, lam=1e-5)
  np.testing.assert_allclose(w3.sum(), 1.0, rtol=1e-6)
  assert np.all(np.asarray(w3) > 0)
  assert float(w3[2]) < float(w[2])  # the conflicting objective loses weight


def test_hierarchical_reward_gate():
  r = mo.hierarchical_reward(jnp.array([0.0, 1.0, 1.0]), jnp.array([0.9, 0.9, 0.2]),
                             jnp.array([1.0, 1.0, 1.0]))
  np.testing.assert_allclose(r, [0.0, 1.0 + 0.9 + 0.1, 1.0 + 0.1])


def _async_bandit_final_policy(weighted: bool, steps: int = 400) -> np.ndarray:
  """Toy asynchronous bandit: arm 0 is fast (dt=1) and pays 0.5; arm 1 is slow (dt=8) and pays 1.

  Completed samples reach the learner at a rate pi(a)/dt(a). Plain PG on the completed samples
  has expected gradient ~ pi_1 (1 - pi_1) (r_1/8 - r_0) < 0 here, so it drifts to the fast arm;
  duration-weighted PG recovers the synchronous gradient ~ pi_1 (1 - pi_1)(r_1 - r_0) and picks the
  slow, better arm.
  """
  dt = jnp.array([1.0, 8.0])
  pay = jnp.array([0.5, 1.0])

  def step(theta, key):
    pi = jax.nn.softmax(theta)
    q = pi / dt / jnp.sum(pi / dt)  # distribution of completed samples
    arms = jax.random.choice(key, 2, (256,), p=q)
    adv = pay[arms]  # REINFORCE on the raw reward, one update per completed sample (no baseline)
    w = sel.duration_weights(dt[arms]) if weighted else jnp.ones(256)
    grad = jax.grad(lambda th: -jnp.mean(w * adv * jax.nn.log_softmax(th)[arms]))(theta)
    return theta - 0.5 * grad, None

  theta, _ = jax.lax.scan(step, jnp.zeros(2), jax.random.split(jax.random.PRNGKey(0), steps))
  return np.asarray(jax.nn.softmax(theta))


def test_duration_weighting_fixes_async_bandit_bias():
  plain = _async_bandit_final_policy(weighted=False)
  weighted = _async_bandit_final_policy(weighted=True)
  assert plain[0] > 0.5, f"unweighted PG should drift to the fast arm, got {plain}"
  assert weighted[1] > 0.9, f"duration-weighted PG should pick the slow, better arm, got {weighted}"
