"""Tests of the episode-based PPO driver: rollouts, the penalised loss and one jitted update."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.control import lpn
from rlpost.control import ndp
from rlpost.control import policy_gradient as pg
from rlpost.control.envs import PointMassTracking, Throwing, TrackingParams


def _tracking_model(kind):
  env = PointMassTracking()
  rngs = nnx.Rngs(0)
  if kind == "lpn":
    actor = lpn.LinearPolicyNet(4, 4, 2, rngs=rngs, hidden=(8,), gain_init_scale=1.0)
  else:
    actor = pg.MLPPolicy(8, 2, rngs=rngs, hidden=(8,))
  return env, pg.ActorCritic(actor, 8, 2, rngs=rngs, critic_hidden=(8,))


def test_loss_penalty_terms_add_exactly():
  env, model = _tracking_model("mlp")
  params = TrackingParams(horizon=6)
  traj = jax.vmap(lambda k: pg.rollout_episode(model, env, params, k))(
      jax.random.split(jax.random.key(0), 2))
  batch = dict(traj, advantages=jax.random.normal(jax.random.key(1), (2, 6)),
               returns=jnp.zeros((2, 6)))
  base = pg.PPOConfig(num_envs=2, num_minibatches=1, state_size=4)

  @jax.jit
  def losses(batch):
    out = {}
    for name, cfg in {"none": base,
                      "jac": dataclasses.replace(base, jacobian_coef=0.5),
                      "act": dataclasses.replace(base, action_change_coef=2.0)}.items():
      out[name] = pg.ppo_loss(model, batch, cfg, jacobian_penalty_fn=lpn.policy_jacobian_penalty)
    return out

  out = losses(batch)
  (l0, _), (lj, aux_j), (la, aux_a) = out["none"], out["jac"], out["act"]
  np.testing.assert_allclose(lj - l0, 0.5 * aux_j["jacobian_penalty"], rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(la - l0, 2.0 * aux_a["action_change_penalty"], rtol=1e-4, atol=1e-7)
  expected_jac = jnp.mean(jax.vmap(jax.vmap(
      lambda o: lpn.action_jacobian_penalty(model.actor, o, state_size=4)))(traj["obs"]))
  np.testing.assert_allclose(aux_j["jacobian_penalty"], expected_jac, rtol=1e-5)
  means = traj["mean"]
  expected_act = jnp.mean(jnp.sum((means[:, 1:] - means[:, :-1])**2, -1))
  np.testing.assert_allclose(aux_a["action_change_penalty"], expected_act, rtol=1e-5)
  with pytest.raises(ValueError, match="jacobian_penalty_fn"):
    pg.ppo_loss(model, batch, dataclasses.replace(base, jacobian_coef=0.5))


@pytest.mark.slow
def test_ndp_chunked_rollout_and_update():
  env = Throwing()
  params = env.default_params._replace(horizon=4)
  dmp = ndp.DMPSpec(num_basis=3, chunk_len=2, substeps=2, a_z=5.0)
  model = ndp.make_rl_models(env, kind="ndp", seed=0, dmp=dmp, env_dt=params.dt, hidden=(8,))
  cfg = pg.PPOConfig(num_envs=2, num_iterations=1, update_epochs=1, num_minibatches=1)
  (train_state, graphdef, update, evaluate) = pg.make_ppo(env, params, model, cfg)
  new_state, metrics = update(train_state, pg.prng_key(0))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  before = jax.tree.leaves(train_state[0])
  after = jax.tree.leaves(new_state[0])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  ep = evaluate(new_state[0], pg.prng_key(1), num_episodes=2, deterministic=True)
  assert ep["action"].shape == (2, 4, 2) and ep["chunk_obs"].shape == (2, 2, 6)
  # Deterministic evaluation executes the DMP increments exactly.
  np.testing.assert_allclose(ep["action"], ep["mean"])
  # Only the last step carries the (delayed) reward.
  assert bool(jnp.all(ep["reward"][:, :-1] == 0.0))
  with pytest.raises(ValueError, match="multiple of actor.chunk_len"):
    pg.rollout_episode(model, env, params._replace(horizon=3), pg.prng_key(0))
