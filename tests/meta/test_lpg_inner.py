"""TA-LPG inner loop and ES meta-training (rlpost.meta.lpg_train)."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core as rl_core
from rlpost.control import ppo
from rlpost.meta import lpg_train
from rlpost.meta import es as es_lib

TINY = lpg_train.LPGAgentConfig(num_envs=2, num_steps=6, num_updates=3, hidden_size=8,
                                target_width=4, gru_width=8)


def _rollout(key, t=6, e=3, obs_dim=4, num_actions=2):
  k = jax.random.split(key, 5)
  done = jax.random.bernoulli(k[3], 0.3, (t, e))
  return {"obs": jax.random.normal(k[0], (t, e, obs_dim)),
          "next_obs": jax.random.normal(k[1], (t, e, obs_dim)),
          "action": jax.random.randint(k[2], (t, e), 0, num_actions),
          "reward": jax.random.uniform(k[4], (t, e)), "done": done}


def test_reinforce_targets_reduce_the_lpg_update_to_reinforce():
  cfg = dataclasses.replace(TINY, gamma=0.9)
  agent = lpg_train.init_agent(jax.random.key(0), 4, 2, hidden_size=8, target_width=4)
  rollout = _rollout(jax.random.key(1))
  loss_fn = lpg_train.make_agent_loss(
      cfg, functools.partial(lpg_train.reinforce_targets, gamma=cfg.gamma))
  grads = jax.grad(lambda p: loss_fn(p, None, rollout, 0, 3)[0])(agent)

  def reinforce(p):
    logits, _ = lpg_train.agent_apply(p, rollout["obs"])
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), rollout["action"][..., None], -1)[..., 0]
    discount = cfg.gamma * (1.0 - rollout["done"].astype(jnp.float32))
    returns = jax.vmap(lambda r, d: rl_core.gae_advantages(r, d, jnp.zeros(r.shape[0] + 1),
                                                           lambda_=1.0)[1],
                       in_axes=1, out_axes=1)(rollout["reward"], discount)
    mask = jnp.ones(logp.shape, bool)
    per, _ = rl_core.pg_loss_per_token(logp, returns, mask)
    return rl_core.masked_mean(per, mask)

  expected = jax.grad(reinforce)(agent)
  for g, e in zip(jax.tree.leaves(grads["actor"]), jax.tree.leaves(expected["actor"])):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
  assert max(float(jnp.max(jnp.abs(e))) for e in jax.tree.leaves(expected["actor"])) > 1e-4
  # y_hat = y: the KL term is at its minimum, so the prediction head gets no gradient.
  for g in jax.tree.leaves(grads["pred"]):
    np.testing.assert_allclose(g, 0.0, atol=1e-6)


def test_returns_to_go_stop_at_episode_ends():
  r = jnp.array([1.0, 1.0, 1.0, 1.0])
  done = jnp.array([False, True, False, False])
  pi_hat, _ = lpg_train.reinforce_targets(None, r, done, None, jnp.zeros((4, 2)), None, 0, 1,
                                          gamma=0.5)
  np.testing.assert_allclose(-pi_hat, [1.5, 1.0, 1.5, 1.0])


@pytest.mark.parametrize("mode", ["paper", "raw", "none"])
def test_agent_loss_jit_matches_eager_and_is_finite(mode):
  cfg = dataclasses.replace(TINY, progress_mode=mode)
  agent = lpg_train.init_agent(jax.random.key(0), 4, 2, hidden_size=8, target_width=4)
  lpg = lpg_train.init_lpg_for(cfg, jax.random.key(2))
  loss_fn = lpg_train.make_agent_loss(
      cfg, functools.partial(lpg_train.lpg_network_targets, progress_mode=mode))
  rollout = _rollout(jax.random.key(3))
  rollout["done"] = jnp.ones_like(rollout["done"])  # degenerate: every step ends an episode
  f = lambda p: jax.value_and_grad(lambda a: loss_fn(a, lpg, rollout, 5, 10)[0])(p)
  (v_eager, g_eager), (v_jit, g_jit) = f(agent), jax.jit(f)(agent)
  np.testing.assert_allclose(v_eager, v_jit, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_eager), jax.tree.leaves(g_jit)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.all(np.isfinite(a))


def test_progress_inputs_change_the_targets_only_when_time_aware():
  rollout = _rollout(jax.random.key(4), e=1)
  args = (rollout["reward"][:, 0], rollout["done"][:, 0], jnp.full((6,), 0.5),
          jax.nn.softmax(jax.random.normal(jax.random.key(5), (6, 4))),
          jax.nn.softmax(jax.random.normal(jax.random.key(6), (6, 4))))
  for mode, should_differ in (("paper", True), ("none", False)):
    cfg = dataclasses.replace(TINY, progress_mode=mode)
    lpg = lpg_train.init_lpg_for(cfg, jax.random.key(7))
    early = lpg_train.lpg_network_targets(lpg, *args, 0, 50, progress_mode=mode)[0]
    late = lpg_train.lpg_network_targets(lpg, *args, 45, 50, progress_mode=mode)[0]
    assert bool(jnp.any(jnp.abs(early - late) > 1e-6)) == should_differ


def test_meta_train_lpg_smoke_and_antithetic_pairs():
  es = es_lib.ESConfig(population_size=2, num_generations=2, min_lifetime=1, max_lifetime=2)
  rows = []
  result = lpg_train.meta_train_lpg(jax.random.key(0), dataclasses.replace(TINY, num_updates=2),
                                    es, callback=rows.append, fast_compile=True)
  assert len(result.history) == 2 and rows == result.history
  for row in result.history:
    assert np.isfinite(row["return_mean"]) and row["return_min"] >= 0.0
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(result.mean_params))
  with pytest.raises(ValueError, match="num_updates"):
    lpg_train.meta_train_lpg(jax.random.key(0), TINY,
                             es_lib.ESConfig(population_size=2, max_lifetime=8))


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="progress_mode"):
    lpg_train.LPGAgentConfig(progress_mode="log")
  with pytest.raises(ValueError, match="num_envs"):
    lpg_train.LPGAgentConfig(num_envs=0)


@pytest.mark.slow
def test_discover_objective_ta_lpg_smoke(run_binary, tmp_path):
  stdout, summary = run_binary("discover_objective.py",
                               "experiments/configs/discover_objective.py:ta_lpg_smoke", tmp_path)
  assert "ta_lpg" in summary["history"]
  table = summary["generalisation"]["CartPole-v1"]["table"]
  assert set(table) == {"ppo", "ta_lpg"} and "Generalisation table" in stdout
