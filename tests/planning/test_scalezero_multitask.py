"""Tests for rlpost.planning.multitask (ScaleZero-style multi-task learner, MoE + DPS)."""
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.planning import multitask as mt
from rlpost.planning import scalezero as sz

TINY = dict(tasks=("CartPole-v1", "Acrobot-v1"), target_returns=(475.0, -100.0), num_updates=2,
            num_envs=2, rollout_steps=4, hidden=8, num_experts=2, num_stages=3, lora_rank=2,
            min_stage0_updates=1, max_stage_updates=1, num_epochs=1, num_minibatches=2,
            eval_every=1)


@pytest.mark.parametrize("jit", [False, True])
def test_gradient_conflict_is_one_for_identical_and_minus_one_for_opposite(jit):
  fn = jax.jit(mt.mean_pairwise_cosine) if jit else mt.mean_pairwise_cosine
  g = jax.random.normal(jax.random.PRNGKey(0), (50,))
  np.testing.assert_allclose(fn(jnp.stack([g, g, 3.0 * g])), 1.0, rtol=1e-6)
  np.testing.assert_allclose(fn(jnp.stack([g, -g])), -1.0, rtol=1e-6)
  np.testing.assert_allclose(fn(jnp.eye(3)), 0.0, atol=1e-7)
  # Three tasks: pairs (g, -g), (g, g), (-g, g) -> mean of -1, 1, -1.
  np.testing.assert_allclose(fn(jnp.stack([g, -g, g])), -1.0 / 3.0, rtol=1e-6)


def test_gradient_conflict_of_zero_gradients_is_finite():
  out = mt.mean_pairwise_cosine(jnp.zeros((3, 10)))
  assert np.isfinite(float(out)) and float(out) == 0.0


def test_moe_with_one_expert_equals_the_dense_layer():
  moe = sz.MoEFeedForward(8, num_experts=1, top_k=1, hidden_mult=4, shared_expert=False,
                          rngs=nnx.Rngs(0))
  dense = mt._DenseFFN(8, hidden_mult=4, rngs=nnx.Rngs(1))
  expert = jax.tree.map(lambda a: a[0], nnx.state(moe.experts))
  nnx.update(dense.ffn, expert)
  x = jax.random.normal(jax.random.PRNGKey(2), (5, 8))
  out_moe, aux = moe(x)
  out_dense, _ = dense(x)
  np.testing.assert_allclose(out_moe, out_dense, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["load_balance_loss"], 1.0, rtol=1e-6)


def test_dps_update_mask_freezes_the_intended_parameters():
  net = mt.MultiTaskNet(5, 3, hidden=8, use_moe=True, use_dps=True, num_experts=2,
                        num_stages=3, lora_rank=2, rngs=nnx.Rngs(0))
  params = nnx.state(net, nnx.Param)
  m0 = mt.dps_update_mask(params, jnp.int32(0), 3)
  m1 = mt.dps_update_mask(params, jnp.int32(1), 3)
  emb0, emb1 = m0["embed"], m1["embed"]
  assert np.all(np.asarray(emb0["base"]["kernel"].value) == 1)
  assert np.all(np.asarray(emb1["base"]["kernel"].value) == 0)
  np.testing.assert_array_equal(np.asarray(emb0["lora_b"].value).reshape(2, -1).max(1), [0, 0])
  np.testing.assert_array_equal(np.asarray(emb1["lora_b"].value).reshape(2, -1).max(1), [1, 0])
  np.testing.assert_array_equal(np.asarray(emb1["scale_logits"].value), [1, 0, 0])
  # Layers without adapters always train.
  assert np.all(np.asarray(m1["value"]["kernel"].value) == 1)
  assert np.all(np.asarray(m1["ffn"]["gate"]["kernel"].value) == 1)


@pytest.mark.parametrize("use_moe,use_dps", [(True, True), (False, False)])
def test_update_jit_matches_no_jit_and_is_finite(use_moe, use_dps):
  cfg = mt.MultiTaskConfig(use_moe=use_moe, use_dps=use_dps, **TINY)
  init, update, _ = mt.make_multitask(cfg)
  state = init(jax.random.key(0))
  args = (jnp.int32(1), jnp.array([1.0, 0.0]), jax.random.key(1))
  eager_state, eager = update(state, *args)
  jit_state, jitted = jax.jit(update)(state, *args)
  np.testing.assert_allclose(jitted["grad_cosine"], eager["grad_cosine"], rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(jit_state["params"]), jax.tree.leaves(eager_state["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert -1.0 <= float(eager["grad_cosine"]) <= 1.0
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(eager_state["params"]))
  if use_dps:  # stage 1: the base weights of staged layers must not move
    np.testing.assert_array_equal(eager_state["params"]["embed"]["base"]["kernel"].value,
                                  state["params"]["embed"]["base"]["kernel"].value)


def test_train_counts_samples_and_config_errors():
  cfg = mt.MultiTaskConfig(**TINY)
  out = mt.train_multitask(cfg, [0])
  assert out["grad_cosine"].shape == (1, 2)
  assert out["returns"].shape == (1, 2, 2)
  np.testing.assert_array_equal(out["task_env_steps"], [[16.0, 16.0]])  # nothing solved yet
  assert np.all(np.isfinite(out["score"]))
  with pytest.raises(ValueError, match="target_returns"):
    mt.MultiTaskConfig(tasks=("CartPole-v1", "Acrobot-v1"), target_returns=(1.0,))
  with pytest.raises(ValueError, match="num_minibatches"):
    mt.MultiTaskConfig(**dict(TINY, num_minibatches=3))
