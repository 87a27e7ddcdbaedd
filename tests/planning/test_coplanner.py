"""Tests for rlpost.planning.coplanner (uncertainty-aware policy-guided MPC)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.planning import coplanner as cp

CFG = cp.EnsembleConfig(obs_dim=2, action_dim=1, num_members=4, hidden=16)


def _policy(obs, key):
  return jax.random.uniform(key, (obs.shape[0], 1), minval=-1.0, maxval=1.0)


def test_identical_members_have_zero_uncertainty_and_variants_agree():
  cfg = cp.EnsembleConfig(obs_dim=2, action_dim=1, num_members=4, hidden=16, min_logstd=-30.0)
  one = cp.init_ensemble(cp.EnsembleConfig(obs_dim=2, action_dim=1, num_members=1, hidden=16),
                         jax.random.PRNGKey(0))
  same = jax.tree.map(lambda x: jnp.repeat(x, 4, axis=0), one)
  # Identical, (numerically) noise-free members: log-std head pinned at -30.
  same[-1]["w"] = same[-1]["w"].at[:, :, 3:].set(0.0)
  same[-1]["b"] = same[-1]["b"].at[:, 3:].set(-30.0)
  obs = jnp.array([0.3, -0.2])
  key = jax.random.PRNGKey(1)
  a_cons, info_c = cp.coplanner_select_action(same, _policy, obs, key, cfg, rate=-2.0)
  a_opt, info_o = cp.coplanner_select_action(same, _policy, obs, key, cfg, rate=1.0)
  np.testing.assert_allclose(info_c["uncertainty"], 0.0, atol=1e-5)
  np.testing.assert_allclose(a_cons, a_opt)


@pytest.mark.parametrize("jit", [False, True])
def test_rate_zero_picks_highest_model_return(jit):
  params = cp.init_ensemble(CFG, jax.random.PRNGKey(0))
  fn = lambda o, k: cp.coplanner_select_action(params, _policy, o, k, CFG, rate=0.0,
                                               num_candidates=8)
  fn = jax.jit(fn) if jit else fn
  _, info = fn(jnp.array([0.1, 0.4]), jax.random.PRNGKey(3))
  assert int(info["index"]) == int(jnp.argmax(info["returns"]))


def test_more_conservatism_never_increases_chosen_uncertainty():
  params = cp.init_ensemble(CFG, jax.random.PRNGKey(5))
  obs = jnp.array([0.5, 0.5])
  key = jax.random.PRNGKey(7)
  chosen = []
  for rate in (0.0, -0.5, -2.0, -10.0):
    _, info = cp.coplanner_select_action(params, _policy, obs, key, CFG, rate=rate,
                                         num_candidates=16)
    chosen.append(float(info["uncertainty"][info["index"]]))
  assert all(b <= a + 1e-6 for a, b in zip(chosen, chosen[1:])), chosen


def test_fit_ensemble_learns_linear_dynamics():
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(2048, 2)).astype(np.float32)
  act = rng.uniform(-1, 1, size=(2048, 1)).astype(np.float32)
  nxt = obs + 0.1 * np.concatenate([act, -act], 1)
  rew = -np.sum(obs**2, 1).astype(np.float32)
  data = {k: jnp.asarray(v) for k, v in dict(obs=obs, action=act, next_obs=nxt, reward=rew).items()}
  params = cp.init_ensemble(CFG, jax.random.PRNGKey(0))
  before = float(cp.ensemble_nll(params, data["obs"], data["action"], data["next_obs"],
                                 data["reward"], CFG))
  params, _ = jax.jit(lambda p: cp.fit_ensemble(p, data, CFG, jax.random.PRNGKey(1), steps=300,
                                                lr=3e-3))(params)
  after = float(cp.ensemble_nll(params, data["obs"], data["action"], data["next_obs"],
                                data["reward"], CFG))
  assert after < before - 1.0
  sample, u = cp.ensemble_predict(params, data["obs"][:8], data["action"][:8],
                                  jax.random.PRNGKey(2), CFG)
  assert sample.shape == (4, 8, 3) and np.all(np.isfinite(np.asarray(u)))
