"""Decoder, config and fused log-prob/entropy (no torch needed)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.llm import model as model_lib
from rlpost.llm.config import ModelConfig, from_hf_config

_CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
_logp_jit = jax.jit(model_lib.token_logprobs_and_entropy,
                    static_argnames=("temperature", "chunk_size"))
_logits = jax.jit(model_lib.logits)


@pytest.fixture(scope="module")
def model():
  m = model_lib.init_model(_CFG, seed=1)
  m.embed_tokens.value = m.embed_tokens.value * 10.0
  return m


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 64, size=(3, 11)), jnp.int32)
  mask = jnp.ones((3, 11), jnp.int32).at[1, :4].set(0).at[2, :10].set(0)
  return tokens, mask


def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match="num_key_value_heads"):
    ModelConfig(num_attention_heads=4, num_key_value_heads=3)
  with pytest.raises(ValueError, match="param_dtype"):
    ModelConfig(param_dtype="float16")
  with pytest.raises(ValueError, match="hidden_size"):
    ModelConfig(hidden_size=0)
  tiny = ModelConfig.tiny()
  assert (tiny.vocab_size, tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads,
          tiny.num_key_value_heads, tiny.intermediate_size, tiny.tie_word_embeddings) == (
              512, 256, 4, 4, 2, 688, True)
  hf = dict(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=48,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6}, eos_token_id=[5, 6])
  cfg = from_hf_config(hf)
  assert cfg.rope_theta == 1e6 and cfg.attention_bias and cfg.eos_token_id == 5
  assert from_hf_config(cfg.to_hf_dict()) == cfg
  with pytest.raises(ValueError, match="rope_type"):
    from_hf_config(dict(hf, rope_parameters={"rope_type": "yarn", "factor": 4.0}))


def test_logprobs_equal_log_softmax_of_logits_chunked_and_jitted(model):
  tokens, mask = _batch()
  full = jax.nn.log_softmax(_logits(model, tokens, mask) / 0.8, axis=-1)
  expected = jnp.take_along_axis(full[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
  expected_ent = -jnp.sum(jnp.exp(full) * full, axis=-1)[:, :-1]
  valid = np.asarray((mask[:, 1:] * mask[:, :-1]).astype(bool))
  for chunk in (3, 512):
    logp, ent = _logp_jit(model, tokens, mask, temperature=0.8, chunk_size=chunk)
    assert logp.shape == tokens.shape
    np.testing.assert_allclose(np.asarray(logp[:, 1:])[valid], np.asarray(expected)[valid],
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent[:, 1:])[valid], np.asarray(expected_ent)[valid],
                               atol=1e-5)
    assert np.all(np.asarray(logp)[:, 0] == 0) and np.all(np.asarray(logp[:, 1:])[~valid] == 0)
  eager, _ = model_lib.token_logprobs_and_entropy(model, tokens, mask, temperature=0.8,
                                                  chunk_size=3)
  np.testing.assert_allclose(eager, logp, atol=1e-5)


def test_left_padding_does_not_change_logits(model):
  tokens, mask = _batch()
  padded = _logits(model, tokens, mask)
  alone = _logits(model, tokens[1:2, 4:], jnp.ones((1, 7), jnp.int32))
  np.testing.assert_allclose(padded[1, 4:], alone[0], atol=1e-5)
  assert np.all(np.isfinite(np.asarray(padded)))  # fully masked padding rows stay finite


def test_chunked_gradient_matches_unchunked_and_is_finite(model):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  tokens, mask = _batch()
  graphdef, params = nnx.split(model)

  def loss(p, chunk):
    lp, ent = model_lib.apply_params(graphdef, p, model_lib.token_logprobs_and_entropy, tokens,
                                     mask, chunk_size=chunk)
    return -lp.sum() - 0.1 * ent.sum()

  g3 = jax.jit(jax.grad(loss), static_argnums=1)(params, 3)
  g_full = jax.jit(jax.grad(loss), static_argnums=1)(params, 512)
  for a, b in zip(jax.tree.leaves(g3), jax.tree.leaves(g_full)):
    assert np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  assert float(jnp.abs(g3["embed_tokens"].value).sum()) > 0


def test_bf16_compute_runs_and_tracks_f32(model):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  tokens, mask = _batch()
  cfg16 = _CFG.replace(param_dtype="bfloat16", dtype="bfloat16")
  m16 = model_lib.init_model(cfg16, seed=1)
  nnx.update(m16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(model)))
  logp16, ent16 = _logp_jit(m16, tokens, mask)
  logp32, _ = _logp_jit(model, tokens, mask)
  assert logp16.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(ent16)))
  valid = np.asarray(mask.astype(bool))
  assert np.abs(np.asarray(logp16 - logp32))[valid].max() < 0.5


def test_sft_cross_entropy_is_mean_negative_logprob(model):
  tokens, mask = _batch()
  loss_mask = mask.at[:, :6].set(0)
  logp, _ = _logp_jit(model, tokens, mask)
  w = np.asarray(loss_mask * mask).astype(bool)
  w[:, 0] = False
  expected = -np.asarray(logp)[w].mean()
  sft = jax.jit(model_lib.sft_cross_entropy)
  np.testing.assert_allclose(sft(model, tokens, mask, loss_mask), expected, rtol=1e-5)
  # No loss positions at all: zero, not NaN.
  assert float(sft(model, tokens, mask, jnp.zeros_like(mask))) == 0.0


def test_apply_rope_equals_rotate_half_form_jitted_and_at_degenerate_positions():
  """apply_rope equals HF's x * cos + rotate_half(x) * sin on the tables from rope_cos_sin,
  with and without jit; position 0 is the identity."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, 3, 8)), jnp.float32)
  for positions in (jnp.asarray(rng.integers(0, 4000, size=(2, 5))), jnp.zeros((2, 5), jnp.int32)):
    cos, sin = model_lib.rope_cos_sin(positions, 8, 1e4)
    rotate_half = jnp.concatenate([-x[..., 4:], x[..., :4]], axis=-1)
    want = x * cos[:, :, None] + rotate_half * sin[:, :, None]
    got = model_lib.apply_rope(x, cos, sin)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(model_lib.apply_rope)(x, cos, sin)),
                               np.asarray(got), atol=1e-6)
    assert np.all(np.isfinite(np.asarray(got)))
  # position 0 is the identity
  cos0, sin0 = model_lib.rope_cos_sin(jnp.zeros((2, 5), jnp.int32), 8, 1e4)
  np.testing.assert_allclose(np.asarray(model_lib.apply_rope(x, cos0, sin0)), np.asarray(x))


@pytest.mark.parametrize("key_layout", ["bksd", "bkds"])
def test_head_major_attention_equals_einsum_attention(key_layout):
  """`_attention_head_major` (used by every teacher-forced pass and the prefill) against the
  plain grouped-query formula, with and without jit; a fully masked query row stays finite."""
  rng = np.random.default_rng(1)
  b, t, s, kv, g, d = 3, 5, 7, 2, 2, 8
  q = jnp.asarray(rng.normal(size=(b, t, kv, g, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b, s, kv, d)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, s, kv, d)), jnp.float32)
  mask = jnp.asarray(rng.random((b, t, s)) < 0.7).at[0, 1].set(False)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k) / np.sqrt(d)
  scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
  want = jnp.einsum("bkgts,bskd->btkgd", jax.nn.softmax(scores, axis=-1), v).reshape(b, t, -1)
  keys = k.transpose(0, 2, 1, 3) if key_layout == "bksd" else k.transpose(0, 2, 3, 1)
  fn = lambda *a: model_lib._attention_head_major(*a, jnp.float32, key_layout=key_layout)  # pylint: disable=protected-access
  got = fn(q, keys, v.transpose(0, 2, 1, 3), mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(q, keys, v.transpose(0, 2, 1, 3), mask)),
                             np.asarray(got), atol=1e-6)
  assert np.all(np.isfinite(np.asarray(got)))
