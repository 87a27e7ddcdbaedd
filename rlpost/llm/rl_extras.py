"""Extra rollout / train-time inputs the issue-5 objectives need inside the LLM RL loop.

`rlpost.llm.rl` calls these; each one feeds a registry part (rlpost/objectives.py):

  EMPG      `sentence_segment_ids`: steps = sentence spans of the response, a step ends at a
            boundary token ("." or newline), so "Kim | 7. Zoe | 5. 7 - 5 = 2." has 3 steps
            (EMPG, arXiv 2509.09265, defines steps as reason-act turns of an agent; our reading for
            single-turn text).
  dist_po   `make_tempered_logprob_fn`: the rollout policy's log-probs of the sampled tokens at
            logits / T, T = `core.dist_po_temperature(H_prev)` (arXiv 2601.12730, double IS).
  OBLR-PO   `per_sample_grad_sq_norms`: w_i = ||grad_theta sum_t log pi(y_i,t)||^2, exact, one
            vmapped backward per response (arXiv 2511.23310, inferred form of the optimal
            baseline); `find_oblr_state` reads the chained `core.oblr_scale` state for logging.
  CAPO      `lm_head_adam` (the real optimizer's Adam moments of the LM-head rows, [V, d]) and
            `capo_metrics` (chunked `core.capo_token_metrics` on the last hidden states and the
            head weight; arXiv 2510.00819).

Everything is pure JAX (jit-safe) except `boundary_token_ids`, which reads the tokenizer.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlpost import core
from rlpost.llm.model import chunked_logp_entropy
from rlpost.llm.model import hidden_states

# Adam betas of `rlpost.llm.train.make_optimizer` (the optimizer CAPO simulates).
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.99, 1e-8


# --- EMPG: sentence steps --------------------------------------------------------------------------


def boundary_token_ids(tokenizer, boundaries: Sequence[str] = (".", "\n")) -> tuple[int, ...]:
  """Vocabulary ids of the step-boundary strings that are single tokens (unknown ones dropped)."""
  unk = getattr(tokenizer, "unk_token_id", None)
  out = []
  for b in boundaries:
    i = tokenizer.convert_tokens_to_ids(b)
    if isinstance(i, int) and i != unk and i >= 0:
      out.append(i)
  if not out:
    raise ValueError(f"none of the EMPG step boundaries {boundaries!r} is a token of the tokenizer")
  return tuple(out)


def sentence_segment_ids(response_tokens: jax.Array, mask: jax.Array,
                         boundary_ids: Sequence[int], *, max_steps: int) -> jax.Array:
  """`[B, R]` 0-based step index per response token; -1 on padding.

  A boundary token closes its step (it belongs to the sentence it ends), so step k starts right
  after the k-th boundary. Steps beyond `max_steps - 1` are merged into the last one (the EMPG
  core function gives tokens outside `[0, max_steps)` zero advantage, which would silently drop
  the tail of long responses).
  """
  m = mask.astype(bool)
  is_b = jnp.zeros(response_tokens.shape, bool)
  for b in boundary_ids:
    is_b = is_b | (response_tokens == b)
  is_b = (is_b & m).astype(jnp.int32)
  seg = jnp.cumsum(is_b, axis=-1) - is_b
  return jnp.where(m, jnp.minimum(seg, max_steps - 1), -1).astype(jnp.int32)


# --- dist_po: tempered old log-probs -------------------------------------------------------------


def make_tempered_logprob_fn(graphdef: nnx.GraphDef, prompt_len: int):
  """Jitted `fn(params, tokens, attention_mask, temperature) -> [B, R]` log-probs at logits / T.

  Same response grid as `rl.response_logp_entropy` (0 on padding); T is traced (no recompile
  when it flips between 1.2 and 0.8).
  """

  @jax.jit
  def fn(params, tokens, attention_mask, temperature):
    model = nnx.merge(graphdef, params)
    hidden = hidden_states(model, tokens, attention_mask)[:, prompt_len - 1:-1]
    logp, _ = chunked_logp_entropy(model.head_weight(), hidden, tokens[:, prompt_len:],
                                   dtype=model.config.jnp_dtype,
                                   temperature=jnp.asarray(temperature, jnp.float32))
    return logp * attention_mask[:, prompt_len:].astype(jnp.float32)

  return fn


# --- OBLR-PO: per-response gradient norms ----------------------------------------------------------


def per_sample_grad_sq_norms(graphdef: nnx.GraphDef, params: Any, tokens: jax.Array,
                             attention_mask: jax.Array, mask: jax.Array, *, prompt_len: int,
                             chunk: int = 8) -> jax.Array:
  """`[B]` w_i = ||grad_theta sum_t mask_it log pi(y_it | x, y_<t)||^2 over all parameters.

  Exact per-response gradients (vmapped over `chunk` responses at a time, `lax.map` over the
  chunks, so at most `chunk` parameter-sized gradients are live). Call it under jit.
  """
  b = tokens.shape[0]
  chunk = max(1, min(chunk, b))
  pad = (-b) % chunk

  def seq_logp(p, tok, attn, m):
    model = nnx.merge(graphdef, p)
    hidden = hidden_states(model, tok[None], attn[None])[:, prompt_len - 1:-1]
    logp, _ = chunked_logp_entropy(model.head_weight(), hidden, tok[None, prompt_len:],
                                   dtype=model.config.jnp_dtype)
    return jnp.sum(jnp.where(m[None].astype(bool), logp, 0.0))

  def one(tok, attn, m):
    g = jax.grad(seq_logp)(params, tok, attn, m)
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(g))

  def padded(x):
    return jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x

  xs = tuple(padded(x).reshape((-1, chunk) + x.shape[1:]) for x in (tokens, attention_mask, mask))
  out = jax.lax.map(lambda c: jax.vmap(one)(*c), xs)
  return out.reshape(-1)[:b]


def find_oblr_state(opt_state: Any) -> Optional[core.optim.OblrScaleState]:
  """The `core.oblr_scale` state inside a (chained) optax state, or None."""
  for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, core.optim.OblrScaleState)):
    if isinstance(leaf, core.optim.OblrScaleState):
      return leaf
  return None


# --- CAPO: last-layer curvature ---------------------------------------------------------------------


def lm_head_adam(params: Any, opt_state: Any) -> Optional[tuple[jax.Array, jax.Array, jax.Array]]:
  """(mu, nu, count) of the LM head as `[V, d]` rows from the optimizer's Adam state, or None.

  Tied embeddings: the embedding table's moments (input and output gradients share them, as in
  the real optimizer). Untied: the transposed `lm_head.kernel` moments. None when the optimizer
  has no Adam state (CAPO then models SGD).
  """
  adam = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
  if not adam:
    return None
  st = adam[0]

  def head(tree):
    if "lm_head" in tree and tree["lm_head"] is not None:
      return jnp.asarray(tree["lm_head"]["kernel"].value).T
    return jnp.asarray(tree["embed_tokens"].value)

  del params
  return head(st.mu), head(st.nu), st.count


def capo_metrics(hidden: jax.Array, head_weight: jax.Array, actions: jax.Array,
                 advantages: jax.Array, *, lr: float, adam: Optional[tuple] = None,
                 chunk: int = 128) -> dict[str, jax.Array]:
  """`core.capo_token_metrics` for `[B, T]` tokens, chunked over tokens to bound memory.

  hidden `[B, T, d]` (final-norm states feeding the head), head_weight `[d, V]`. With `adam` the
  Adam form materialises `[chunk, V, d]` per chunk. Returns `m_hessian`, `m_fisher` `[B, T]`.
  """
  b, t, d = hidden.shape
  n = b * t
  chunk = max(1, min(chunk, n))
  pad = (-n) % chunk
  h = jax.lax.stop_gradient(hidden.reshape(n, d).astype(jnp.float32))
  w = jax.lax.stop_gradient(head_weight.astype(jnp.float32))
  a = actions.reshape(n)
  adv = advantages.reshape(n).astype(jnp.float32)
  if pad:
    h = jnp.concatenate([h, jnp.zeros((pad, d), h.dtype)])
    a = jnp.concatenate([a, jnp.zeros((pad,), a.dtype)])
    adv = jnp.concatenate([adv, jnp.zeros((pad,), adv.dtype)])
  kw = {}
  if adam is not None:
    mu, nu, count = adam
    kw = dict(adam_mu=mu.astype(jnp.float32), adam_nu=nu.astype(jnp.float32), adam_count=count,
              b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS)

  def one(xs):
    hc, ac, advc = xs
    out = core.capo_token_metrics(hc, hc @ w, ac, advc, lr=lr, **kw)
    return out["m_hessian"], out["m_fisher"]

  mh, mf = jax.lax.map(one, (h.reshape(-1, chunk, d), a.reshape(-1, chunk),
                             adv.reshape(-1, chunk)))
  return {"m_hessian": mh.reshape(-1)[:n].reshape(b, t), "m_fisher": mf.reshape(-1)[:n].reshape(b, t)}


# --- mechanism metrics --------------------------------------------------------------------------


def masked_corr(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
  """Pearson correlation of x and y over the valid entries (0 when either is constant)."""
  m = np.asarray(mask).astype(bool)
  xv, yv = np.asarray(x, np.float64)[m], np.asarray(y, np.float64)[m]
  if xv.size < 2 or xv.std() == 0 or yv.std() == 0:
    return 0.0
  return float(np.corrcoef(xv, yv)[0, 1])
