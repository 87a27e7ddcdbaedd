"""PureJaxRL-style PPO (rlpost.control.ppo): loss composition, lifetimes, smoke and CartPole."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.control import ppo

_TINY = ppo.PPOConfig(num_envs=2, num_steps=8, total_timesteps=2 * 8 * 3, update_epochs=1,
                      num_minibatches=1, hidden_size=16)


def _batch(key, n=32, obs_dim=4, num_actions=2, advantages=None):
  k = jax.random.split(key, 5)
  params = ppo.init_actor_critic(k[0], obs_dim, num_actions, hidden_size=16)
  obs = jax.random.normal(k[1], (n, obs_dim))
  action = jax.random.randint(k[2], (n,), 0, num_actions)
  logits, value = ppo.actor_critic_apply(params, obs)
  old_logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
  old_logp = old_logp + 0.3 * jax.random.normal(k[3], (n,))  # ratios away from 1
  adv = jax.random.normal(k[4], (n,)) if advantages is None else advantages
  batch = ppo.Transition(obs=obs, action=action, logp=old_logp, value=value + 0.1,
                         reward=jnp.zeros(n), discount=jnp.ones(n), done=jnp.zeros(n, bool),
                         episode_return=jnp.zeros(n))
  return params, batch, adv, value + 1.0


_PROGRESS = ppo.Progress(frac=jnp.float32(0.5), log_lifetime=jnp.float32(2.0))


@functools.lru_cache(maxsize=None)
def _grad_fn(drift_fn):
  """One compiled value-and-grad per objective, shared by the tests below."""
  return jax.jit(jax.value_and_grad(ppo.make_loss_fn(_TINY, drift_fn), has_aux=True))


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="num_minibatches"):
    ppo.PPOConfig(num_envs=3, num_steps=5, num_minibatches=4)
  with pytest.raises(ValueError, match="env_name"):
    ppo.PPOConfig(env_name="NoSuchEnv-v0")
  with pytest.raises(ValueError, match="gae_lambda"):
    ppo.PPOConfig(gae_lambda=1.5)
  with pytest.raises(ValueError, match="total_timesteps"):
    ppo.PPOConfig(total_timesteps=10)
  assert ppo.PPOConfig().num_updates == 500_000 // 512
  assert _TINY.with_lifetime(7).num_updates == 7


def test_ppo_drift_reproduces_the_core_ppo_clip_loss_and_gradient():
  """drift_fn=ppo_drift must give exactly PPO-clip (drift_fn=None uses rlpost.core)."""
  params, batch, adv, targets = _batch(jax.random.key(0))
  (l_ref, m_ref), g_ref = _grad_fn(None)(params, batch, adv, targets, None, _PROGRESS)
  (l_mine, _), g_mine = _grad_fn(ppo.ppo_drift)(params, batch, adv, targets, None, _PROGRESS)
  np.testing.assert_allclose(l_mine, l_ref, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_mine), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert float(m_ref["clip_frac"]) > 0.0  # the batch does exercise the clip


def test_loss_jit_matches_eager():
  params, batch, adv, targets = _batch(jax.random.key(1))
  loss_fn = ppo.make_loss_fn(_TINY, None)
  eager, _ = loss_fn(params, batch, adv, targets, None, _PROGRESS)
  jitted, _ = jax.jit(loss_fn)(params, batch, adv, targets, None, _PROGRESS)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5)


def test_loss_degenerate_inputs_are_finite():
  """All-equal advantages (whitened to 0) and r = 1 everywhere: finite loss, finite gradient."""
  params, batch, _, targets = _batch(jax.random.key(2), advantages=jnp.full((32,), 3.0))
  logits, _ = ppo.actor_critic_apply(params, batch.obs)
  batch = batch._replace(logp=jnp.take_along_axis(
      jax.nn.log_softmax(logits), batch.action[:, None], -1)[:, 0])
  for drift_fn in (None, ppo.ppo_drift):
    (loss, metrics), grads = _grad_fn(drift_fn)(params, batch, jnp.full((32,), 3.0), targets,
                                                None, _PROGRESS)
    assert np.isfinite(float(loss))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_runs():
  """Two seeds' worth of the same key with lifetimes 1 and 3 (scan length 3), one compile."""
  train = ppo.make_train(_TINY)
  key = jax.random.key(0)
  run = jax.jit(jax.vmap(lambda n: train(key, None, n)),
                compiler_options=ppo.FAST_COMPILE_OPTIONS)
  return jax.block_until_ready(run(jnp.array([1, 3])))


def test_train_smoke_shapes_and_finite(tiny_runs):
  m = tiny_runs["metrics"]
  for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "last_return",
               "lr"):
    assert m[name].shape == (2, 3), name
    assert bool(jnp.all(jnp.isfinite(m[name]))), name
  assert tiny_runs["final_return"].shape == (2,)
  # CartPole: an ended episode has return >= 1, so logged returns are NaN (none ended) or >= 1.
  er = np.asarray(m["episode_return"])
  assert np.all(np.isnan(er) | (er >= 1.0))


def test_lifetime_anneals_lr_and_freezes_the_agent(tiny_runs):
  lr = np.asarray(tiny_runs["metrics"]["lr"])
  np.testing.assert_allclose(lr[0], [2.5e-4, 0.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(lr[1], [2.5e-4, 2.5e-4 * 2 / 3, 2.5e-4 / 3], rtol=1e-5)
  m = tiny_runs["metrics"]
  # Same key: update 0 and the rollout of update 1 (same params) coincide ...
  np.testing.assert_allclose(m["policy_loss"][0, 0], m["policy_loss"][1, 0], rtol=1e-5)
  np.testing.assert_allclose(m["last_return"][0, :2], m["last_return"][1, :2])
  # ... but the lifetime-1 agent stopped learning, so its final parameters differ.
  p = jax.tree.leaves(tiny_runs["params"])
  assert any(not np.allclose(x[0], x[1]) for x in p)


def test_traced_env_params_reach_the_env(tiny_runs):
  """train(..., env_params=p): p is a traced input (two pole lengths, one jit and one compile)."""
  train = ppo.make_train(_TINY)
  key = jax.random.key(0)
  _, default = ppo.make_env(_TINY.env_name)
  long_pole = default.replace(length=2.0, polemass_length=default.masspole * 2.0)
  both = jax.tree.map(lambda a, b: jnp.stack([jnp.asarray(a), jnp.asarray(b)]), default, long_pole)
  run = jax.jit(jax.vmap(lambda p: train(key, env_params=p)),
                compiler_options=ppo.FAST_COMPILE_OPTIONS)
  out = jax.block_until_ready(run(both))
  ref = jax.tree.map(lambda x: x[1], tiny_runs)  # default env, same key, full lifetime
  # Default params passed in reproduce the default env: the same episodes (CartPole returns are
  # step counts, compared exactly) and the same learning up to float rounding. Not bitwise: with
  # env_params=None XLA folds the constant physics (measured: 1.9e-6 on the first observation).
  np.testing.assert_array_equal(out["metrics"]["last_return"][0], ref["metrics"]["last_return"])
  np.testing.assert_array_equal(out["metrics"]["episode_return"][0],
                                ref["metrics"]["episode_return"])
  for a, b in zip(jax.tree.leaves(out["params"]), jax.tree.leaves(ref["params"])):
    np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-8)
  # A pole four times longer changes the rollouts, hence the learning.
  assert any(not np.allclose(x[0], x[1], rtol=1e-3) for x in jax.tree.leaves(out["params"]))
  assert not np.allclose(out["metrics"]["value_loss"][0], out["metrics"]["value_loss"][1])
  with pytest.raises(ValueError, match="env_params"):
    train(key, env_params={"length": 1.0})


@pytest.mark.slow
def test_cartpole_solved_in_500k_steps_16_seeds():
  """Issue 9 target: CartPole-v1 return >= 475 within 5e5 steps, 16 seeds vmapped."""
  cfg = ppo.PPOConfig()
  out, timing = ppo.train_seeds(cfg, jax.random.split(jax.random.key(0), 16))
  final = np.asarray(out["final_return"])
  assert final.mean() >= 475.0, (final, timing)
  assert (final >= 475.0).sum() >= 14, final
