"""LoRA adapters: zero-init identity, merge equivalence, adapter-only training."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlpost.llm import lora
from rlpost.llm import model as model_lib
from rlpost.llm.config import ModelConfig

# Same config as test_llm_sampler.py, so one pytest process compiles its init only once.
_CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   attention_bias=True, model_type="qwen2")
_logits = jax.jit(model_lib.logits)


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 64, size=(2, 9)), jnp.int32)
  return tokens, jnp.ones((2, 9), jnp.int32).at[0, :3].set(0)


def test_zero_init_adapters_equal_base_and_merge_equals_unmerged():
  tokens, mask = _batch()
  model = model_lib.init_model(_CFG, seed=0)
  base = _logits(model, tokens, mask)
  lora.apply_lora(model, rank=4, alpha=8.0)
  assert lora.num_lora_params(model) == 2 * sum(
      4 * (i + o) for i, o in [(32, 32), (32, 16), (32, 16), (32, 32), (32, 48), (32, 48),
                               (48, 32)])
  np.testing.assert_array_equal(_logits(model, tokens, mask), base)
  # Give B random values so the adapters matter, then merge.
  key = jax.random.key(1)
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.LoRAParam) and path[-1] == "lora_b":
      key, sub = jax.random.split(key)
      var.value = 0.05 * jax.random.normal(sub, var.value.shape)
  adapted = _logits(model, tokens, mask)
  assert np.abs(np.asarray(adapted - base)).max() > 1e-2
  lora.merge_lora(model)
  assert lora.num_lora_params(model) == 0
  np.testing.assert_allclose(_logits(model, tokens, mask), adapted, atol=1e-5)


def test_only_adapters_train():
  tokens, mask = _batch()
  model = lora.apply_lora(model_lib.init_model(_CFG, seed=0), rank=2,
                          targets=lora.ATTENTION_TARGETS)
  graphdef, adapters, frozen = lora.split_lora(model)
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(adapters)

  def loss_fn(adapters_):
    m = nnx.merge(graphdef, adapters_, frozen)
    return model_lib.sft_cross_entropy(m, tokens, mask, mask)

  @jax.jit
  def step(adapters_, opt_state_):
    loss, grads = jax.value_and_grad(loss_fn)(adapters_)
    updates, opt_state_ = optimizer.update(grads, opt_state_)
    return optax.apply_updates(adapters_, updates), opt_state_, loss

  losses = []
  for _ in range(5):
    adapters, opt_state, loss = step(adapters, opt_state, )
    losses.append(float(loss))
  assert losses[-1] < losses[0] and all(np.isfinite(losses))
  trained = nnx.merge(graphdef, adapters, frozen)
  # Base weights are untouched; MLP projections got no adapters.
  np.testing.assert_array_equal(trained.layers[0].mlp.up_proj.kernel.value,
                                model.layers[0].mlp.up_proj.kernel.value)
  assert trained.layers[0].mlp.up_proj.lora_a is None
  assert trained.layers[0].self_attn.q_proj.lora_a is not None


def test_bad_arguments():
  model = model_lib.init_model(_CFG, seed=0)
  with pytest.raises(ValueError, match="rank"):
    lora.apply_lora(model, rank=0)
  with pytest.raises(ValueError, match="attn"):
    lora.apply_lora(model, targets=("attn",))
  lora.apply_lora(model)
  with pytest.raises(ValueError, match="already"):
    lora.apply_lora(model)
