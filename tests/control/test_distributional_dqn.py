"""Stock-augmented categorical DQN (rlpost.control.distributional_dqn)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core as rl_core
from rlpost.control import distributional_dqn as dqn

SUPPORT = jnp.linspace(0.0, 10.0, 11)


def _probs(key, shape):
  return jax.nn.softmax(3.0 * jax.random.normal(key, shape + (SUPPORT.shape[0],)), axis=-1)


def test_expectation_objective_is_the_mean_of_the_categorical_law_plus_stock():
  probs = _probs(jax.random.key(0), (5, 2))
  stock = jnp.linspace(-3.0, 4.0, 5)
  got = dqn.law_objective(probs, SUPPORT, stock[:, None], objective="expectation")
  np.testing.assert_allclose(got, stock[:, None] + jnp.sum(probs * SUPPORT, -1), rtol=1e-6)
  value, best = dqn.start_objective(probs[:1], SUPPORT, jnp.zeros((1,)), objective="expectation")
  np.testing.assert_allclose(value, jnp.max(jnp.sum(probs[0] * SUPPORT, -1)), rtol=1e-6)
  assert int(best) == 0


def test_cvar_at_tau_one_equals_the_expectation_agent():
  # One law of G per action, the same at every candidate c_0 (as a stock-blind critic).
  probs = jnp.broadcast_to(_probs(jax.random.key(1), (3,)), (4, 3, SUPPORT.shape[0]))
  stocks = jnp.linspace(-10.0, 0.0, 4)  # includes c_0 = -v_max
  value_cvar, _ = dqn.start_objective(probs, SUPPORT, stocks, objective="cvar", tau=1.0)
  # Outer max over c_0 at tau = 1 is CVaR_1 = E: it equals the expectation agent's start value
  # for the law at c_0 = -v_max (the bottom of the grid, where min(c_0 + G, 0) = c_0 + G).
  means = jnp.sum(probs[0] * SUPPORT, -1)
  np.testing.assert_allclose(value_cvar, jnp.max(means), rtol=1e-5)
  # ... and so the greedy actions there coincide with the expectation agent's.
  cvar_values = dqn.law_objective(probs[0], SUPPORT, stocks[:1], objective="cvar", tau=1.0)
  assert int(jnp.argmax(cvar_values)) == int(jnp.argmax(means))
  np.testing.assert_allclose(rl_core.cvar(SUPPORT, probs[0], tau=1.0), means, rtol=1e-5)


def test_cvar_agent_prefers_the_sure_arm_and_expectation_the_risky_one():
  support = jnp.array([0.0, 1.0, 2.0])
  sure = jnp.array([0.0, 1.0, 0.0])
  risky = jnp.array([0.1, 0.0, 0.9])  # mean 1.8, CVaR_0.1 = 0
  probs = jnp.broadcast_to(jnp.stack([sure, risky]), (3, 2, 3))
  stocks = jnp.array([-2.0, -1.0, 0.0])
  v_cvar, k = dqn.start_objective(probs, support, stocks, objective="cvar", tau=0.1)
  np.testing.assert_allclose(v_cvar, 1.0, rtol=1e-6)  # CVaR_0.1 of the sure arm
  per_action = dqn.law_objective(probs[k], support, stocks[k][None], objective="cvar", tau=0.1)
  assert int(jnp.argmax(per_action)) == 0
  v_exp, _ = dqn.start_objective(probs[:1], support, jnp.zeros(1), objective="expectation")
  np.testing.assert_allclose(v_exp, 1.8, rtol=1e-6)


def _batch(key, b=8, obs_dim=4):
  k = jax.random.split(key, 4)
  return {"obs": jax.random.normal(k[0], (b, obs_dim)),
          "next_obs": jax.random.normal(k[1], (b, obs_dim)),
          "stock": jax.random.normal(k[2], (b,)) * 1e4,  # degenerate: huge stocks
          "next_stock": jnp.full((b,), -1e6), "action": jax.random.randint(k[3], (b,), 0, 2),
          "reward": jnp.ones((b,)), "terminal": jnp.arange(b) % 2 == 0}


@pytest.mark.parametrize("objective", ["expectation", "cvar"])
def test_td_loss_jit_matches_eager_and_is_finite(objective):
  cfg = dqn.DQNConfig(objective=objective, num_atoms=11, v_max=10.0, hidden_size=8)
  params = dqn.init_network(jax.random.key(0), 4, 2, 11, hidden_size=8)
  batch = _batch(jax.random.key(1))
  f = lambda p: jax.value_and_grad(
      lambda q: jnp.mean(dqn.categorical_td_loss(q, p, batch, cfg, 2)[0]))(p)
  (v1, g1), (v2, g2) = f(params), jax.jit(f)(params)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.all(np.isfinite(a))
  # A terminal transition's target is a point mass at r (cross-entropy >= its entropy 0).
  assert float(v1) > 0.0


def test_stock_follows_the_augmentation_rule_in_training_and_configs_fail_by_name():
  np.testing.assert_allclose(rl_core.stock_update(jnp.array(-2.0), jnp.array(1.0), discount=0.5),
                             -2.0)
  cfg = dqn.DQNConfig(objective="cvar", v_max=10.0, num_stocks=3)
  np.testing.assert_allclose(cfg.stock_grid, [-10.0, -5.0, 0.0])
  np.testing.assert_allclose(dqn.DQNConfig().stock_grid, [0.0])
  with pytest.raises(ValueError, match="objective"):
    dqn.DQNConfig(objective="median")
  with pytest.raises(ValueError, match="tau"):
    dqn.DQNConfig(tau=0.0)


def test_distributional_dqn_binary_smoke(run_binary, tmp_path):
  stdout, summary = run_binary("distributional_dqn.py",
                               "experiments/configs/distributional_dqn.py:smoke", tmp_path)
  for objective in ("expectation", "cvar"):
    stats = summary["results"][objective]["eval"]["return"]
    assert np.isfinite(stats["mean"]) and stats["cvar"] <= stats["mean"] + 1e-4
  assert "CVaR_0.25" in stdout
