"""Tests for rlpost.planning.scalezero (MoE feed-forward and Dynamic Parameter Scaling)."""
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.planning import scalezero as sz


def test_single_expert_top1_equals_dense_ffn_plus_shared():
  moe = sz.MoEFeedForward(8, num_experts=1, top_k=1, hidden_mult=2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 8))
  out, aux = moe(x)
  expert = jax.tree.map(lambda a: a[0], nnx.state(moe.experts))
  e = nnx.merge(nnx.graphdef(sz._Expert(8, 16, rngs=nnx.Rngs(0))), expert)
  np.testing.assert_allclose(out, e(x) + moe.shared(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux["load_balance_loss"], 1.0, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_moe_routing_shapes_and_balance_loss(jit):
  moe = sz.MoEFeedForward(8, num_experts=4, top_k=1, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(2), (5, 8))
  fn = nnx.jit(lambda m, v: m(v)) if jit else (lambda m, v: m(v))
  out, aux = fn(moe, x)
  assert out.shape == x.shape and np.all(np.isfinite(np.asarray(out)))
  np.testing.assert_allclose(aux["expert_share"].sum(), 1.0, rtol=1e-6)
  assert float(aux["load_balance_loss"]) >= 0.0
  with pytest.raises(ValueError, match="top_k"):
    sz.MoEFeedForward(8, num_experts=2, top_k=3, rngs=nnx.Rngs(0))


def test_dps_stage_switch_leaves_output_unchanged_and_scales_bounded():
  layer = sz.StagedLoRALinear(6, 4, num_stages=3, rank=2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 6))
  y0 = layer(x)
  layer.stage.value = jnp.int32(1)
  np.testing.assert_allclose(layer(x), y0, rtol=1e-6)  # B = 0 at the switch
  layer.scale_logits.value = jnp.full(3, 50.0)
  a = np.asarray(layer.scales())
  assert np.all(a <= 1.2 + 1e-6) and np.all(a >= 0.8 - 1e-6)


def test_dps_trainable_mask_per_stage():
  layer = sz.StagedLoRALinear(6, 4, num_stages=4, rank=2, rngs=nnx.Rngs(0))
  m0 = sz.dps_trainable_mask(layer)
  assert float(m0["base"]) == 1.0 and np.all(np.asarray(m0["lora_a"]) == 0)
  layer.stage.value = jnp.int32(2)
  m2 = sz.dps_trainable_mask(layer)
  assert float(m2["base"]) == 0.0
  np.testing.assert_array_equal(m2["lora_a"], [0, 1, 0])  # only adapter 2
  np.testing.assert_array_equal(m2["scale_logits"], [1, 1, 0, 0])  # a_0 and a_1, not a_2
  # Inactive later adapters get exactly zero gradient; the mask removes the earlier ones.
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 6))
  layer.lora_b.value = jnp.ones_like(layer.lora_b.value) * 0.1
  grads = nnx.grad(lambda l: jnp.sum(l(x) ** 2))(layer)
  gb = np.asarray(grads.lora_b.value)
  assert np.all(gb[2] == 0) and np.any(gb[0] != 0) and np.any(gb[1] != 0)
  masked = gb * np.asarray(m2["lora_b"])[:, None, None]
  assert np.all(masked[0] == 0) and np.any(masked[1] != 0)


def test_dps_stage_switch_rule():
  kw = dict(num_stages=5, unsolved=8)
  assert not sz.dps_should_advance(stage=0, iters_in_stage=10, newly_solved=8, **kw)
  assert sz.dps_should_advance(stage=0, iters_in_stage=60_000, newly_solved=2, **kw)
  assert not sz.dps_should_advance(stage=1, iters_in_stage=100, newly_solved=2, **kw)
  assert sz.dps_should_advance(stage=1, iters_in_stage=100, newly_solved=3, **kw)
  assert sz.dps_should_advance(stage=1, iters_in_stage=20_000, newly_solved=0, **kw)
  assert not sz.dps_should_advance(stage=4, iters_in_stage=10**6, newly_solved=9, **kw)
