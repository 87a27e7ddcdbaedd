"""Tests for rlpost.offline.hnpg (hybrid NPG on a combination lock)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.offline import hnpg


def test_conjugate_gradient_solves_spd_system():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(6, 6))
  a = jnp.asarray(m @ m.T + 0.5 * np.eye(6), jnp.float32)
  b = jnp.asarray(rng.normal(size=6), jnp.float32)
  x = hnpg.conjugate_gradient(lambda v: a @ v, b, iters=30)
  np.testing.assert_allclose(a @ x, b, atol=1e-4)


@pytest.mark.parametrize("jit", [False, True])
def test_npg_step_respects_max_kl_and_improves_surrogate(jit):
  rng = np.random.default_rng(1)
  obs = jnp.asarray(rng.normal(size=(128, 3)), jnp.float32)
  actions = jnp.asarray(rng.integers(0, 4, 128))
  adv = jnp.asarray(rng.normal(size=128), jnp.float32) + (actions == 2) * 2.0
  theta = jnp.zeros((3, 4))
  step = (jax.jit if jit else (lambda f: f))(lambda t: hnpg.npg_step(t, obs, actions, adv,
                                                                     max_kl=0.01))
  new, info = step(theta)
  assert bool(info["accepted"])
  assert float(info["kl"]) <= 0.01 + 1e-6
  assert float(hnpg._mean_kl(theta, new, obs)) <= 0.01 + 1e-6
  probs_before = jax.nn.softmax(obs @ theta)[:, 2].mean()
  probs_after = jax.nn.softmax(obs @ new)[:, 2].mean()
  assert float(probs_after) > float(probs_before)


def test_npg_step_zero_advantage_is_a_no_op():
  obs = jnp.ones((8, 2))
  new, info = hnpg.npg_step(jnp.zeros((2, 3)), obs, jnp.zeros(8, jnp.int32), jnp.zeros(8))
  assert not bool(info["accepted"])
  np.testing.assert_allclose(new, 0.0)
  assert np.all(np.isfinite(np.asarray(new)))


def test_hybrid_critic_matches_exact_q_on_tabular_lock():
  env = hnpg.CombinationLock(horizon=3, num_actions=2, noise_dims=0, seed=3)
  policy, critic = hnpg.init_params(env)
  key = jax.random.PRNGKey(0)
  on = hnpg.rollout(env, policy, key, 4096)
  off = hnpg.make_offline_dataset(env, jax.random.PRNGKey(1), 4096)
  critic = hnpg.fit_critics(critic, policy, on, off, steps=400, lr=0.05)
  exact = hnpg.exact_q(env, policy)
  good = jnp.array([1.0, 0.0])
  fitted = np.stack([np.asarray(good @ critic[h]) for h in range(env.horizon)])
  np.testing.assert_allclose(fitted, exact, atol=0.05)


def test_offline_data_covers_the_good_chain():
  env = hnpg.CombinationLock(horizon=6, num_actions=4)
  off = hnpg.make_offline_dataset(env, jax.random.PRNGKey(0), 512)
  success = float(jnp.mean(jnp.sum(off.rewards, 0)))
  # epsilon = 1/H: success (1 - eps + eps/A)^H ~ 0.39 for H=6, A=4.
  assert 0.25 < success < 0.55


def test_train_smoke_runs_and_rejects_empty_config():
  env = hnpg.CombinationLock(horizon=3, num_actions=2, noise_dims=1)
  curve = hnpg.train_hnpg(env, hnpg.HNPGConfig(iterations=2, batch=32, offline_episodes=32,
                                               critic_steps=5))
  assert len(curve["success"]) == 2 and all(0 <= s <= 1 for s in curve["success"])
  with pytest.raises(ValueError, match="use_offline"):
    hnpg.train_hnpg(env, hnpg.HNPGConfig(use_offline=False, on_policy=False))
  with pytest.raises(ValueError, match="horizon"):
    hnpg.CombinationLock(horizon=0)


@pytest.mark.slow
def test_hnpg_solves_a_lock_that_on_policy_npg_cannot():
  env = hnpg.CombinationLock(horizon=10, num_actions=4, noise_dims=2)
  hybrid = hnpg.train_hnpg(env, hnpg.HNPGConfig(iterations=25, batch=256))
  on_policy = hnpg.train_hnpg(env, hnpg.HNPGConfig(iterations=25, batch=256, use_offline=False))
  assert hybrid["success"][-1] > 0.5
  assert on_policy["success"][-1] < 0.05


def test_experiment_smoke_writes_artefacts(tmp_path, run_binary):
  _, summary = run_binary("hnpg.py", "experiments/configs/hnpg.py:smoke", tmp_path, timeout=600)
  assert set(summary["variants"]) == {"hnpg", "npg", "offline"}
