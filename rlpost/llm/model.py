"""Flax NNX decoder of the Llama / Qwen2 family, plus fused next-token log-probs and entropy.

Architecture (Touvron et al., "LLaMA", 2023, arXiv:2302.13971; Qwen Team, "Qwen2 Technical
Report", 2024, arXiv:2407.10671), per block:
  h = x + o_proj(Attn(RoPE(q_proj(RMSNorm(x))), RoPE(k_proj(.)), v_proj(.)))
  y = h + down_proj(silu(gate_proj(RMSNorm(h))) * up_proj(RMSNorm(h)))
with RMSNorm(x) = w * x / sqrt(mean(x^2) + eps) (Zhang & Sennrich, 2019, arXiv:1910.07467),
RoPE (Su et al., "RoFormer", 2021, arXiv:2104.09864) in HF's "rotate_half" layout with
inv_freq_i = theta^(-2i/d) (optionally "linear" / "llama3" scaled, see `rope_inv_freq`),
grouped-query attention (Ainslie et al., "GQA", 2023, arXiv:2305.13245)
where query head h reads KV head h // (num_heads / num_kv_heads), and SwiGLU (Shazeer, 2020,
arXiv:2002.05202).

Padding convention: sequences are LEFT-padded. Position ids come from the attention mask,
pos_t = max(cumsum(mask)_t - 1, 0), so a left-padded row has the same positions, and therefore the
same logits, as the unpadded row. Keys whose mask is 0 are never attended to.

Functional use (what a trainer should do): split once with `graphdef, params = nnx.split(model)`
(or `nnx.split(model, nnx.LoRAParam, ...)` for LoRA), write the loss as a pure function of `params`
that calls `nnx.merge(graphdef, params)` inside, and differentiate / jit it with plain `jax.grad` and
`jax.jit`. `apply_params(graphdef, params, fn, *args)` is a tiny helper for that. Plain `jax.jit` on
split state avoids nnx.jit's per-call graph traversal, and its compiled-cache size is observable
(the no-recompilation tests use it).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlpost.core import aggregate_loss
from rlpost.llm.config import ModelConfig, normalize_rope_scaling

# One (k, v) pair per layer in the compute dtype: keys [B, num_kv_heads, head_dim, S], values
# [B, num_kv_heads, S, head_dim] (`init_cache`).
KVCache = Sequence[tuple[jax.Array, jax.Array]]
_INIT_STD = 0.02  # HF initializer_range default.


@jax.custom_vjp
def dense_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., K] @ w [K, N], with the weight gradient ordered as x^T g rather than (g^T x)^T.

  Plain autodiff of `x @ w` emits the weight gradient as dot(g, x) followed by a transpose.
  XLA:CPU then writes g transposed ([N, T], T = all leading dims) before the product, which for
  the SwiGLU projections ([T, 688] cotangents) cost more than the product itself. Taking x as
  the left operand instead transposes the smaller [T, K] input. The values are identical (same
  products and sums); on the 1152-token micro-batches of `benchmarks/grpo_step.py` the SwiGLU
  backward ran ~17 % faster.
  """
  return x @ w


def _dense_matmul_fwd(x, w):
  return x @ w, (x, w)


def _dense_matmul_bwd(res, g):
  x, w = res
  dw = jax.lax.dot_general(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]),
                           (((0,), (0,)), ((), ())))
  dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
  return dx.astype(x.dtype), dw.astype(w.dtype)


dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


class Dense(nnx.Module):
  """y = x W (+ b) (+ scale * (x A) B when a LoRA adapter is attached). W is [in, out]."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool,
               config: ModelConfig, rngs: nnx.Rngs):
    init = jax.nn.initializers.normal(_INIT_STD)
    self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features),
                                 config.jnp_param_dtype))
    self.bias = (nnx.Param(jnp.zeros((out_features,), config.jnp_param_dtype))
                 if use_bias else None)
    # Data slots that lora.apply_lora may fill with nnx.LoRAParam adapters later.
    self.lora_a: Optional[nnx.LoRAParam] = nnx.data(None)
    self.lora_b: Optional[nnx.LoRAParam] = nnx.data(None)
    self.lora_scale = 0.0
    self.dtype = config.jnp_dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    y = dense_matmul(x, self.kernel.value.astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias.value.astype(self.dtype)
    if self.lora_a is not None:
      low = x @ self.lora_a.value.astype(self.dtype)
      y = y + self.lora_scale * (low @ self.lora_b.value.astype(self.dtype))
    return y


class RMSNorm(nnx.Module):
  """HF-exact RMSNorm: statistics in f32, weight applied in the compute dtype."""

  def __init__(self, dim: int, *, config: ModelConfig):
    self.weight = nnx.Param(jnp.ones((dim,), config.jnp_param_dtype))
    self.eps = config.rms_norm_eps
    self.dtype = config.jnp_dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight.value.astype(self.dtype) * y.astype(self.dtype)


def rope_inv_freq(head_dim: int, theta: float,
                  rope_scaling: Any = None) -> np.ndarray:
  """RoPE inverse frequencies [head_dim // 2] (float32, numpy, read-only), scaling applied.

  Default (Su et al., "RoFormer", 2021, arXiv:2104.09864): inv_freq_i = theta^(-2i/d).
  "linear" (Chen et al., "Extending Context Window of Large Language Models via Positional
  Interpolation", 2023, arXiv:2306.15595): inv_freq_i / factor, i.e. positions divided by factor.
  "llama3" (Llama Team, "The Llama 3 Herd of Models", 2024, arXiv:2407.21783), with wavelength
  w_i = 2 pi / inv_freq_i, L = original_max_position_embeddings, lo/hi = low/high_freq_factor:
    w_i < L / hi              -> inv_freq_i                      (high frequencies kept)
    w_i > L / lo              -> inv_freq_i / factor             (low frequencies interpolated)
    otherwise, s = (L / w_i - lo) / (hi - lo):
                              -> (1 - s) inv_freq_i / factor + s inv_freq_i.
  The arithmetic follows transformers' float32 computation (`modeling_rope_utils`) so the tables
  match torch bit-for-bit or to an ulp; the result is a trace-time constant (no tracing cost).

  Args:
    head_dim: rotary dimension (even).
    theta: RoPE base.
    rope_scaling: None, a dict such as {"rope_type": "llama3", "factor": 8.0, ...}, or the
      normalized pairs stored in `ModelConfig.rope_scaling`.
  """
  return _rope_inv_freq(int(head_dim), float(theta), normalize_rope_scaling(
      rope_scaling, field="rope_scaling"))


@functools.lru_cache(maxsize=64)
def _rope_inv_freq(head_dim: int, theta: float, rope_scaling: Optional[tuple]) -> np.ndarray:
  exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
  # theta^e rounded once to f32 (as torch's f32 pow is), then the f32 reciprocal.
  inv_freq = np.float32(1.0) / (np.float64(theta) ** exponent.astype(np.float64)).astype(
      np.float32)
  params = dict(rope_scaling) if rope_scaling else {"rope_type": "default"}
  rope_type = params["rope_type"]
  if rope_type == "linear":
    inv_freq = inv_freq / np.float32(params["factor"])
  elif rope_type == "llama3":
    factor = np.float32(params["factor"])
    low, high = params["low_freq_factor"], params["high_freq_factor"]
    context = params["original_max_position_embeddings"]
    wavelen = (np.float32(1.0) / inv_freq) * np.float32(2 * math.pi)
    low_freq_wavelen = np.float32(context / low)
    high_freq_wavelen = np.float32(context / high)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = ((np.float32(1.0) / wavelen) * np.float32(context) - np.float32(low)) / np.float32(
        high - low)
    smoothed = (np.float32(1.0) - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  elif rope_type != "default":  # unreachable: normalize_rope_scaling rejects other types
    raise ValueError(f"rope_scaling['rope_type']={rope_type!r} is not supported")
  inv_freq = np.asarray(inv_freq, dtype=np.float32)
  inv_freq.setflags(write=False)
  return inv_freq


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float,
                 rope_scaling: Any = None) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables [B, T, head_dim] for integer positions [B, T] (computed in f32).

  `rope_scaling` is as in `rope_inv_freq` (None: default RoPE); the inverse frequencies are a
  numpy constant computed once per (head_dim, theta, rope_scaling).
  """
  inv_freq = jnp.asarray(rope_inv_freq(head_dim, theta, rope_scaling))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, T, H, D] by the "rotate_half" convention used by HF Llama/Qwen2."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  return x * cos + rotated * sin


class Attention(nnx.Module):
  """Grouped-query self-attention with optional q/k/v bias and an optional KV cache."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    h, d = config.hidden_size, config.resolved_head_dim
    self.num_heads = config.num_attention_heads
    self.num_kv_heads = config.num_key_value_heads
    self.head_dim = d
    self.dtype = config.jnp_dtype
    bias = config.attention_bias
    self.q_proj = Dense(h, self.num_heads * d, use_bias=bias, config=config, rngs=rngs)
    self.k_proj = Dense(h, self.num_kv_heads * d, use_bias=bias, config=config, rngs=rngs)
    self.v_proj = Dense(h, self.num_kv_heads * d, use_bias=bias, config=config, rngs=rngs)
    self.o_proj = Dense(self.num_heads * d, h, use_bias=False, config=config, rngs=rngs)

  def __call__(self, x, cos, sin, mask, cache_kv=None, cache_index=None, prefix_kv=None,
               prefix_mask=None):
    b, t, _ = x.shape
    d, nkv = self.head_dim, self.num_kv_heads
    groups = self.num_heads // nkv
    q = apply_rope(self.q_proj(x).reshape(b, t, self.num_heads, d), cos, sin)
    k = apply_rope(self.k_proj(x).reshape(b, t, nkv, d), cos, sin)
    v = self.v_proj(x).reshape(b, t, nkv, d)
    q = q.reshape(b, t, nkv, groups, d)
    if cache_kv is None:  # a teacher-forced pass (SFT, log-probs, the RL update)
      if prefix_kv is not None:  # rows after a shared prefix
        out = _prefix_attention_head_major(q, k, v, prefix_kv, mask, prefix_mask, self.dtype)
      else:
        out = _attention_head_major(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask,
                                    self.dtype, key_layout="bksd")
      return self.o_proj(out), None
    # Cache layout (see `init_cache`): keys [B, KV, D, S], values [B, KV, S, D]. A decode step
    # (t = 1) then reads both as multiply-reduce loops over a contiguous minor dimension,
    # with no transposed copy of the cache per step (a batched dot with 2 query rows per KV
    # head ran ~2.5x slower on XLA:CPU, mostly in such copies).
    cache_k, cache_v = cache_kv
    k = jax.lax.dynamic_update_slice(cache_k, k.transpose(0, 2, 3, 1).astype(cache_k.dtype),
                                     (0, 0, 0, cache_index))
    v = jax.lax.dynamic_update_slice(cache_v, v.swapaxes(1, 2).astype(cache_v.dtype),
                                     (0, 0, cache_index, 0))
    new_kv = (k, v)
    if t > 1 and prefix_kv is None:  # a prefill into the cache
      return self.o_proj(_attention_head_major(q, k, v, mask, self.dtype,
                                               key_layout="bkds")), new_kv
    if t == 1:
      prod = q[:, 0, :, :, :, None].astype(jnp.float32) * k[:, :, None].astype(jnp.float32)
      scores = jnp.sum(prod, axis=-2)[:, :, :, None, :] * (d ** -0.5)  # [B, KV, G, 1, S]
    else:  # several new tokens after a shared prefix
      scores = jnp.einsum("btkgd,bkds->bkgts", q, k.astype(self.dtype),
                          preferred_element_type=jnp.float32) * (d ** -0.5)
    # A finite fill keeps fully-masked (padding) query rows NaN-free; their outputs are unused.
    fill = jnp.finfo(jnp.float32).min
    scores = jnp.where(mask[:, None, None, :, :], scores, fill)
    if prefix_kv is not None:
      # Shared-prefix attention: the rows are U blocks of `per` rows that continue the same
      # prefix, whose keys/values [U, KV, D, P] / [U, KV, P, D] are stored once. The prefix scores
      # of a block are one matrix product over its per * groups * t queries (Juravsky et al.,
      # "Hydragen", 2024, arXiv:2402.05099); one softmax then spans prefix and own keys, so the
      # result equals attention over the concatenated keys.
      pk, pv = prefix_kv
      u, p = pk.shape[0], pk.shape[-1]
      per = b // u
      qu = q.reshape(u, per, t, nkv, groups, d)
      sp = jnp.einsum("untkgd,ukdp->unkgtp", qu, pk.astype(self.dtype),
                      preferred_element_type=jnp.float32) * (d ** -0.5)
      sp = jnp.where(prefix_mask[:, None, None, None, None, :], sp, fill)
      scores = jnp.concatenate([sp.reshape(b, nkv, groups, t, p), scores], axis=-1)
      probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
      probs_p, probs = probs[..., :p], probs[..., p:]
      out_p = jnp.einsum("unkgtp,ukpd->untkgd", probs_p.reshape(u, per, nkv, groups, t, p),
                         pv.astype(self.dtype)).reshape(b, t, nkv, groups, d)
    else:
      probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
      out_p = None
    if t == 1:
      out = jnp.sum(probs[:, :, :, 0, :, None] * v[:, :, None].astype(self.dtype), axis=-2)[:, None]
    else:
      out = jnp.einsum("bkgts,bksd->btkgd", probs, v.astype(self.dtype))
    if out_p is not None:
      out = out + out_p
    return self.o_proj(out.reshape(b, t, self.num_heads * d)), new_kv


def _attention_head_major(q, keys, values, mask, dtype, *, key_layout: str) -> jax.Array:
  """Grouped-query attention with the query heads moved next to the batch dimension.

  q [B, T, KV, G, D]; keys [B, KV, S, D] (key_layout "bksd") or [B, KV, D, S] ("bkds", the
  `init_cache` layout); values [B, KV, S, D]; mask [B, T, S] bool. Returns [B, T, KV * G * D],
  the same values as softmax(q k^T / sqrt(D)) v written as einsums over [B, T, KV, G, D] (tested).
  q is transposed once to
  [B, KV, G * T, D], so both products are plain batched matrix products with leading batch
  dimensions and XLA:CPU inserts no layout copies around them in the forward or the backward pass
  (one layer at B = 16, T = 192: fwd 8.4 vs 13-14 ms, fwd+bwd 16 vs 22-24 ms).
  """
  b, t, nkv, groups, d = q.shape
  s = mask.shape[-1]
  qh = q.transpose(0, 2, 3, 1, 4).reshape(b, nkv, groups * t, d)
  scores = jnp.einsum(f"bkqd,{key_layout}->bkqs", qh, keys.astype(dtype),
                      preferred_element_type=jnp.float32) * (d ** -0.5)
  m = jnp.broadcast_to(mask[:, None, None], (b, 1, groups, t, s)).reshape(b, 1, groups * t, s)
  # A finite fill keeps fully-masked (padding) query rows NaN-free; their outputs are unused.
  scores = jnp.where(m, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  out = jnp.einsum("bkqs,bksd->bkqd", probs, values.astype(dtype)).reshape(b, nkv, groups, t, d)
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, nkv * groups * d)


def _prefix_attention_head_major(q, k, v, prefix_kv, mask, prefix_mask, dtype) -> jax.Array:
  """Shared-prefix attention of B = U * N rows over T new tokens each, laid out head-major.

  q [B, T, KV, G, D], k / v [B, T, KV, D], prefix keys / values [U, KV, D, P] / [U, KV, P, D]
  (`init_cache` layout), mask [B, T, T] over the rows' own keys, prefix_mask [U, P]. Returns
  [B, T, KV * G * D]. The same attention as the decode path in `Attention.__call__` (one softmax
  over prefix and own keys; Hydragen, arXiv:2402.05099), but q, k and v are transposed once to
  [U, KV, N, G * T, D] so every product has its batch dimensions (U, KV[, N]) leading and the
  prefix product is one [N * G * T, D] x [D, P] matrix product per (prompt, KV head): XLA:CPU
  then inserts no layout copies around the products in the forward or the backward pass (a
  one-layer micro-benchmark on the GRPO-step shapes ran fwd 2.0 vs 3.0 ms and fwd+bwd 4.8 vs
  5.6 ms).
  """
  b, t, nkv, groups, d = q.shape
  pk, pv = prefix_kv
  u, p = pk.shape[0], pk.shape[-1]
  n = b // u
  scale = d ** -0.5
  fill = jnp.finfo(jnp.float32).min
  qh = q.reshape(u, n, t, nkv, groups, d).transpose(0, 3, 1, 4, 2, 5).reshape(
      u, nkv, n, groups * t, d)
  kh = k.reshape(u, n, t, nkv, d).transpose(0, 3, 1, 2, 4).astype(dtype)  # [U, KV, N, T, D]
  vh = v.reshape(u, n, t, nkv, d).transpose(0, 3, 1, 2, 4).astype(dtype)
  own = jnp.einsum("uknqd,uknsd->uknqs", qh, kh, preferred_element_type=jnp.float32) * scale
  own_mask = jnp.broadcast_to(mask.reshape(u, 1, n, 1, t, t), (u, 1, n, groups, t, t))
  own = jnp.where(own_mask.reshape(u, 1, n, groups * t, t), own, fill)
  pre = jnp.einsum("ukqd,ukdp->ukqp", qh.reshape(u, nkv, n * groups * t, d), pk.astype(dtype),
                   preferred_element_type=jnp.float32) * scale
  pre = jnp.where(prefix_mask[:, None, None, :], pre, fill).reshape(u, nkv, n, groups * t, p)
  probs = jax.nn.softmax(jnp.concatenate([pre, own], axis=-1), axis=-1).astype(dtype)
  out_pre = jnp.einsum("ukqp,ukpd->ukqd", probs[..., :p].reshape(u, nkv, n * groups * t, p),
                       pv.astype(dtype))
  out_own = jnp.einsum("uknqs,uknsd->uknqd", probs[..., p:], vh)
  out = out_pre.reshape(u, nkv, n, groups, t, d) + out_own.reshape(u, nkv, n, groups, t, d)
  return out.transpose(0, 2, 4, 1, 3, 5).reshape(b, t, nkv * groups * d)


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    h, i = config.hidden_size, config.intermediate_size
    self.gate_proj = Dense(h, i, use_bias=False, config=config, rngs=rngs)
    self.up_proj = Dense(h, i, use_bias=False, config=config, rngs=rngs)
    self.down_proj = Dense(i, h, use_bias=False, config=config, rngs=rngs)

  def __call__(self, x):
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(config.hidden_size, config=config)
    self.self_attn = Attention(config, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(config.hidden_size, config=config)
    self.mlp = MLP(config, rngs=rngs)

  def __call__(self, x, cos, sin, mask, cache_kv=None, cache_index=None, prefix_kv=None,
               prefix_mask=None):
    attn, new_kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache_kv, cache_index,
                                  prefix_kv, prefix_mask)
    x = x + attn
    x = x + self.mlp(self.post_attention_layernorm(x))
    return x, new_kv


class Decoder(nnx.Module):
  """The causal LM. Attribute names follow HF so the checkpoint mapping stays obvious."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    init = jax.nn.initializers.normal(_INIT_STD)
    self.embed_tokens = nnx.Param(
        init(rngs.params(), (config.vocab_size, config.hidden_size), config.jnp_param_dtype))
    self.layers = nnx.List([DecoderLayer(config, rngs=rngs)
                            for _ in range(config.num_hidden_layers)])
    self.norm = RMSNorm(config.hidden_size, config=config)
    self.lm_head = (None if config.tie_word_embeddings else Dense(
        config.hidden_size, config.vocab_size, use_bias=False, config=config, rngs=rngs))

  def __call__(self, tokens: Optional[jax.Array], positions: jax.Array, mask: jax.Array, *,
               cache: Optional[KVCache] = None, cache_index: Any = 0,
               inputs_embeds: Optional[jax.Array] = None,
               prefix: Optional[tuple[KVCache, jax.Array]] = None
               ) -> tuple[jax.Array, Optional[list]]:
    """Final hidden states [B, T, H] (after the last norm) and the updated cache.

    Args:
      tokens: [B, T] int ids.
      positions: [B, T] RoPE positions.
      mask: [B, T, S] bool, True where query t may attend key s. S == T without a cache and
        S == cache length with one.
      cache: optional per-layer (k, v) buffers (`init_cache` layout: k [B, KV, D, S], v
        [B, KV, S, D]); the new keys/values are written at slots [cache_index, cache_index + T).
      cache_index: int or scalar int array.
      inputs_embeds: optional [B, T, H] input embeddings used instead of looking up `tokens`
        (which may then be None), e.g. for latent "think" embeddings (agents/dmlr.py).
      prefix: optional shared prefix (per-layer (k, v) of U prefixes in the `init_cache` layout,
        key mask [U, P] bool), e.g. the `cache` returned by running U prompts. B must be a
        multiple of U: rows [j * B/U, (j + 1) * B/U) continue prefix j and attend to its keys
        before their own (`mask` and `cache` then cover only the keys after the prefix).
    """
    cfg = self.config
    if inputs_embeds is None:
      x = jnp.take(self.embed_tokens.value, tokens, axis=0).astype(cfg.jnp_dtype)
    else:
      x = inputs_embeds.astype(cfg.jnp_dtype)
    cos, sin = rope_cos_sin(positions, cfg.resolved_head_dim, cfg.rope_theta,
                            cfg.rope_scaling)
    new_cache = [] if cache is not None else None
    if prefix is not None and x.shape[0] % prefix[1].shape[0]:
      raise ValueError(f"prefix: {x.shape[0]} rows are not a multiple of the "
                       f"{prefix[1].shape[0]} prefixes")
    for i, layer in enumerate(self.layers):
      kv = cache[i] if cache is not None else None
      pkv, pmask = (prefix[0][i], prefix[1].astype(bool)) if prefix is not None else (None, None)
      x, new_kv = layer(x, cos, sin, mask, kv, cache_index, pkv, pmask)
      if cache is not None:
        new_cache.append(new_kv)
    return self.norm(x), new_cache

  def head_weight(self) -> jax.Array:
    """The [H, V] output projection (the transposed embedding when tied)."""
    if self.lm_head is None:
      return self.embed_tokens.value.T
    return self.lm_head.kernel.value

  def hidden_to_logits(self, hidden: jax.Array) -> jax.Array:
    return _project(self.head_weight(), hidden, self.config.jnp_dtype)


def _project(weight: jax.Array, hidden: jax.Array, dtype) -> jax.Array:
  return jnp.einsum("...h,hv->...v", hidden.astype(dtype), weight.astype(dtype),
                    preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def _init_state(config: ModelConfig, seed: jax.Array) -> nnx.State:
  return nnx.state(Decoder(config, rngs=nnx.Rngs(params=seed)))


def init_model(config: ModelConfig, *, seed: int = 0) -> Decoder:
  """Random Decoder (normal(0.02) weights, unit norms, zero biases), initialised under jit."""
  abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(params=0)))
  return nnx.merge(nnx.graphdef(abstract), _init_state(config, jax.random.key(seed)))


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
  """pos_t = max(cumsum(mask)_t - 1, 0): left padding does not shift positions."""
  m = attention_mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0)


def causal_mask(attention_mask: jax.Array) -> jax.Array:
  """[B, T, T] bool: causal and key-is-not-padding."""
  t = attention_mask.shape[-1]
  tril = jnp.tril(jnp.ones((t, t), dtype=bool))
  return tril[None] & attention_mask.astype(bool)[:, None, :]


def hidden_states(model: Decoder, tokens: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Final-norm hidden states [B, T, H] of a (left-padded) batch, no cache."""
  hidden, _ = model(tokens, positions_from_mask(attention_mask), causal_mask(attention_mask))
  return hidden


def init_cache(config: ModelConfig, batch: int, length: int,
               dtype=None) -> list[tuple[jax.Array, jax.Array]]:
  """Zeroed per-layer (k, v) buffers: keys [B, KV, D, S], values [B, KV, S, D] (`KVCache`)."""
  kv, d = config.num_key_value_heads, config.resolved_head_dim
  dtype = dtype or config.jnp_dtype
  return [(jnp.zeros((batch, kv, d, length), dtype), jnp.zeros((batch, kv, length, d), dtype))
          for _ in range(config.num_hidden_layers)]


def expand_rows(x: jax.Array, expand: int | jax.Array) -> jax.Array:
  """Row r of the result is prompt row `r // expand` (int) or `expand[r]` (an index array).

  The int form is a broadcast (its gradient is a sum over each block of `expand` rows); the array
  form is a gather, for layouts where prompts have different numbers of completions.
  """
  if isinstance(expand, (int, np.integer)):
    return jnp.repeat(x, int(expand), axis=0, total_repeat_length=x.shape[0] * int(expand))
  return jnp.take(x, expand, axis=0)


def shared_prompt_hidden(model: Decoder, prompt_tokens: jax.Array, prompt_mask: jax.Array,
                         response_tokens: jax.Array, response_mask: jax.Array,
                         expand: int | jax.Array) -> jax.Array:
  """Final hidden states that predict each response token, with every prompt run once.

  In RL, the G completions of a prompt share its prompt tokens. With U left-padded prompts
  [U, P] and B response rows [B, R] (row r continues prompt `expand_rows(., expand)[r]`), the
  prompt is run once per prompt and only the response tokens are run per completion, attending to
  their prompt's keys and causally to themselves. With an int `expand` the prompt keys/values are
  read in place by shared-prefix attention (`Decoder.__call__(prefix=...)`); with an index array
  they are copied to each row. Returns [B, R, H] equal to
  `hidden_states(model, concat(prompt[rows], response), concat(prompt_mask[rows],
  response_mask))[:, P - 1:-1]` (tested), so position t predicts response_tokens[:, t]. With G
  completions per prompt the token count falls from G (P + R) to P + G R per group (P = R = 64,
  G = 8: 1.8x fewer), in the forward and the backward pass.

  response_mask must be right-padded (ones then zeros), as the sampler writes it.
  """
  cfg = model.config
  u, p = prompt_tokens.shape
  b, r = response_tokens.shape
  empty = init_cache(cfg, u, p)
  pm = prompt_mask.astype(bool)
  positions = positions_from_mask(prompt_mask)
  causal = jnp.tril(jnp.ones((p, p), bool))
  prompt_hidden, prompt_kv = model(prompt_tokens, positions, causal[None] & pm[:, None, :],
                                   cache=empty, cache_index=0)
  start = expand_rows(positions[:, -1] + 1, expand)
  resp_positions = start[:, None] + jnp.arange(r)[None, :]
  rm = response_mask.astype(bool)
  if isinstance(expand, (int, np.integer)):
    # G consecutive rows per prompt: shared-prefix attention reads the U prompts' keys once.
    own = jnp.tril(jnp.ones((r, r), bool))[None] & rm[:, None, :]
    resp_hidden, _ = model(response_tokens, resp_positions, own, prefix=(prompt_kv, pm))
  else:  # uneven groups: copy the prompt keys/values to each row's cache
    pad_k, pad_v = init_cache(cfg, b, r)[0]
    cache = [(jnp.concatenate([expand_rows(k, expand), pad_k], axis=3),
              jnp.concatenate([expand_rows(v, expand), pad_v], axis=2)) for k, v in prompt_kv]
    keys = jnp.concatenate([expand_rows(pm, expand), rm], axis=1)
    resp_causal = jnp.arange(p + r)[None, :] <= (p + jnp.arange(r))[:, None]  # [R, P + R]
    resp_hidden, _ = model(response_tokens, resp_positions, resp_causal[None] & keys[:, None, :],
                           cache=cache, cache_index=p)
  return jnp.concatenate([expand_rows(prompt_hidden[:, -1:], expand), resp_hidden[:, :-1]],
                         axis=1)


def logits(model: Decoder, tokens: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Next-token logits [B, T, V] in f32; logits[:, t] predicts tokens[:, t + 1]."""
  return model.hidden_to_logits(hidden_states(model, tokens, attention_mask))


def logp_entropy_from_logits(logits_: jax.Array, targets: jax.Array,
                             temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """log softmax(z / tau)[target] and H(softmax(z / tau)) for logits z [..., V] (f32)."""
  z = logits_.astype(jnp.float32) / temperature
  lse = jax.nn.logsumexp(z, axis=-1)
  target_z = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
  logq = z - lse[..., None]
  entropy = -jnp.sum(jnp.exp(logq) * logq, axis=-1)  # no lse - E[z] cancellation when peaked
  return target_z - lse, entropy


def token_logprobs_and_entropy(model: Decoder, tokens: jax.Array, attention_mask: jax.Array, *,
                               temperature: float = 1.0,
                               chunk_size: int = 512) -> tuple[jax.Array, jax.Array]:
  """Teacher-forced log p(tokens[t] | tokens[<t]) and the predictive entropy, aligned with tokens.

  With z_{t-1} the logits at position t-1 and tau the temperature:
    logp[:, t] = z_{t-1}[tokens[t]] / tau - logsumexp(z_{t-1} / tau),
    entropy[:, t] = H(softmax(z_{t-1} / tau)),
  for t >= 1 where attention_mask[:, t] and attention_mask[:, t-1] are set, and 0 elsewhere
  (including t = 0). So a response mask over the same [B, T] grid can multiply them directly.

  Memory: the vocabulary projection runs over chunks of `chunk_size` positions inside
  `lax.map` under `jax.checkpoint`, so at most one [B, chunk, V] f32 logits block is live (also in
  the backward pass, which recomputes it) and no [B, T, V] array is ever materialised when
  T > chunk_size.

  Returns:
    (logp, entropy), both [B, T] float32.
  """
  hidden = hidden_states(model, tokens, attention_mask)[:, :-1]
  targets = tokens[:, 1:]
  logp, entropy = chunked_logp_entropy(model.head_weight(), hidden, targets,
                                       dtype=model.config.jnp_dtype, temperature=temperature,
                                       chunk_size=chunk_size)
  m = attention_mask.astype(bool)
  valid = (m[:, 1:] & m[:, :-1]).astype(jnp.float32)
  zeros = jnp.zeros_like(logp[:, :1])
  return (jnp.concatenate([zeros, logp * valid], axis=1),
          jnp.concatenate([zeros, entropy * valid], axis=1))


def chunked_logp_entropy(head_weight: jax.Array, hidden: jax.Array, targets: jax.Array, *,
                         dtype=jnp.float32, temperature: float = 1.0,
                         chunk_size: int = 512) -> tuple[jax.Array, jax.Array]:
  """(logp, entropy) [B, T] of `targets` under softmax(hidden @ head_weight / tau), T-chunked."""
  b, t, h = hidden.shape
  n = max(1, -(-t // chunk_size))
  c = -(-t // n)
  pad = n * c - t
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))

  @jax.checkpoint
  def one_chunk(weight, h_chunk, t_chunk):
    return logp_entropy_from_logits(_project(weight, h_chunk, dtype), t_chunk, temperature)

  hs = hidden.reshape(b, n, c, h).swapaxes(0, 1)
  ts = targets.reshape(b, n, c).swapaxes(0, 1)
  logp, entropy = jax.lax.map(lambda xs: one_chunk(head_weight, *xs), (hs, ts))
  logp = logp.swapaxes(0, 1).reshape(b, n * c)[:, :t]
  entropy = entropy.swapaxes(0, 1).reshape(b, n * c)[:, :t]
  return logp, entropy


def apply_params(graphdef: nnx.GraphDef, params: Any, fn: Callable[..., Any], *args,
                 **kwargs) -> Any:
  """fn(nnx.merge(graphdef, params), *args, **kwargs): the pure form to use under jax.grad/jit."""
  return fn(nnx.merge(graphdef, params), *args, **kwargs)


def sft_cross_entropy(model: Decoder, tokens: jax.Array, attention_mask: jax.Array,
                      loss_mask: jax.Array) -> jax.Array:
  """Token-mean next-token cross-entropy over positions where loss_mask[:, t] (t >= 1) is set."""
  logp, _ = token_logprobs_and_entropy(model, tokens, attention_mask)
  w = loss_mask.astype(jnp.float32).at[:, 0].set(0.0) * attention_mask.astype(jnp.float32)
  return aggregate_loss(-logp, w, "token_mean")
