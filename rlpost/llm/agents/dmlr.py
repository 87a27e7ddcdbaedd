"""DMLR: test-time policy gradient on latent "think" embeddings, with table-token retrieval.

Paper: Yang et al., "Dynamic Multimodal Latent Reasoning" (DMLR), 2025, arXiv:2512.12623
(llm_hybrids_and_agents.md §12). Nothing in the model is trained: for each problem, N latent
embeddings T in R^{N x H} are inserted into the LLM's input and improved by an evolution-strategies
(Gaussian-perturbation) policy gradient on the model's own confidence.

Equations (official code TobyYang7/DMLR, `inference.py`, as summarised in the spec):
  confidence of one next-token distribution p (DeepConf-style, k = top_k):
      c(p) = -(1/k) * sum_{j in topk(p)} log p(j)                       (peaked p -> large c)
  reward   R(T) = (1/(N+1)) * sum over the N think positions and the last input position of c(p_t)
  update   eps ~ N(0, sigma_s^2 I),  T~ = T + eps,  T <- T + lr * (R(T~) - b) * eps / sigma_s^2,
           sigma_s = sigma_0 * sigma_decay^s                             (b = 0 in the paper)
  best     keep the highest-reward T~ (and its retrieved context); the answer is a greedy decode with it.
E[R(T + eps) eps] / sigma^2 is the gradient of the Gaussian-smoothed reward (Stein's lemma), so
the update is a one-sample (or `num_samples`-sample) stochastic gradient ascent on it.

Context injection ("visual injection" in the paper, generalised to tables): from step
`injection_start_step`, every `injection_interval` steps, every `insert_stride`-th think token
retrieves the `num_retrieved` table-token input embeddings most similar to it (cosine) and they
are interleaved right after it; the retrieved ids are locked whenever that step's reward is a new
best. Between injection steps the locked set is reused.

Deviations (documented, with reasons):
  * Retrieval scores are cosine similarities between the (perturbed) think embedding and the
    table-token input embeddings, not attention weights averaged over layers and heads: the Flax
    decoder does not expose attention maps, and the brief asks for "the most relevant context
    embeddings per think token".
  * Think tokens are initialised from the mean of the prompt's table-token embeddings (the analogue
    of the paper's "pooled vision features" visual-only init), because the synthetic tokenizer has
    no placeholder token. They are inserted between the question and the trailing "\\nAnswer:",
    so the answer cue stays adjacent to generation.
  * "The last input position" in R is our reading of the (N+1) normaliser: the N think positions
    plus the position that predicts the first answer token (inferred; the prediction made just
    before the first think token cannot depend on T).
  * `sigma` is absolute. The paper's sigma_0 = 20 is for Qwen2.5-VL-7B embeddings; at the shipped
    0.16M-param model's embedding scale it is far too large, so the experiment config rescales it
    (documented there). The library keeps the paper values as defaults.
  * Optional mean-reward baseline over `num_samples >= 2` perturbations (off by default, inferred
    opt-in from the spec). The code's autograd path is not implemented (it never updates T).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlpost.llm.model import Decoder
from rlpost.llm.model import init_cache
from rlpost.llm.model import positions_from_mask

ANSWER_SUFFIX = "\nAnswer:"


# --- pure pieces ---------------------------------------------------------------------------------


def topk_confidence(logits: jax.Array, *, top_k: int = 10) -> jax.Array:
  """c = -(1/k) sum_{j in topk} log softmax(logits)_j over the last axis (f32), shape [...]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  k = min(int(top_k), logits.shape[-1])
  return -jnp.mean(jax.lax.top_k(logp, k)[0], axis=-1)


def sigma_at(step: jax.Array | int, *, sigma: float = 20.0,
             sigma_decay: float = 0.95) -> jax.Array:
  """sigma_s = sigma_0 * sigma_decay^s."""
  return jnp.asarray(sigma, jnp.float32) * jnp.asarray(sigma_decay, jnp.float32) ** jnp.asarray(
      step, jnp.float32)


def gaussian_es_gradient(reward_fn: Callable[[jax.Array], jax.Array], theta: jax.Array,
                         key: jax.Array, *, sigma: float | jax.Array, num_samples: int = 1,
                         baseline: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """ES estimate g = (1/n) sum_i (R(theta + eps_i) - b) eps_i / sigma^2, eps_i ~ N(0, sigma^2 I).

  `reward_fn` maps a batch of parameters [n, *theta.shape] to rewards [n, ...]; the rewards'
  trailing axes (e.g. a batch of problems) must be the leading axes of theta. b = mean_i R_i when
  `baseline` (needs n >= 2), else 0 (the paper). Returns (g, rewards [n, ...], eps [n, ...]).
  """
  if baseline and num_samples < 2:
    raise ValueError("baseline=True needs num_samples >= 2 (the baseline is the sample mean)")
  eps = sigma * jax.random.normal(key, (num_samples,) + theta.shape, jnp.float32)
  rewards = reward_fn(theta[None] + eps)
  centred = rewards - jnp.mean(rewards, axis=0, keepdims=True) if baseline else rewards
  weights = centred.reshape(centred.shape + (1,) * (eps.ndim - centred.ndim))
  return jnp.mean(weights * eps, axis=0) / sigma ** 2, rewards, eps


def retrieve_context(queries: jax.Array, context: jax.Array, context_mask: jax.Array, *,
                     num_retrieved: int) -> tuple[jax.Array, jax.Array]:
  """Top-`num_retrieved` context rows by cosine similarity to each query.

  Args:
    queries: [N, H] think embeddings.
    context: [S, H] candidate (table-token) embeddings.
    context_mask: [S] bool, False rows are never picked first (picked only if fewer are valid).
  Returns:
    (indices [N, k] int32 into context, valid [N, k] bool: the picked row is a real candidate).
  """
  unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  sims = unit(queries.astype(jnp.float32)) @ unit(context.astype(jnp.float32)).T
  valid = context_mask.astype(bool)
  sims = jnp.where(valid[None, :], sims, -3.0)  # below any cosine
  _, idx = jax.lax.top_k(sims, min(num_retrieved, context.shape[0]))
  return idx.astype(jnp.int32), valid[idx]


@dataclasses.dataclass(frozen=True)
class ThinkLayout:
  """Static slot layout of the think block: think token i sits at `think_slots[i]`; the
  `num_retrieved` retrieved embeddings of the j-th inserting think token follow it, at
  `retrieved_slots[j]`."""
  num_think_tokens: int
  insert_stride: int
  num_retrieved: int

  @property
  def inserting(self) -> tuple[int, ...]:
    if self.num_retrieved == 0:
      return ()
    return tuple(range(0, self.num_think_tokens, self.insert_stride))

  @property
  def block_len(self) -> int:
    return self.num_think_tokens + len(self.inserting) * self.num_retrieved

  @property
  def think_slots(self) -> np.ndarray:
    slots, pos = [], 0
    for i in range(self.num_think_tokens):
      slots.append(pos)
      pos += 1 + (self.num_retrieved if i in self.inserting else 0)
    return np.asarray(slots, np.int32)

  @property
  def retrieved_slots(self) -> np.ndarray:
    t = self.think_slots
    return np.asarray([[t[i] + 1 + j for j in range(self.num_retrieved)] for i in self.inserting],
                      np.int32).reshape(len(self.inserting), self.num_retrieved)


# --- batched model inputs ------------------------------------------------------------------------


@dataclasses.dataclass
class DMLRBatch:
  """Left-padded prompts split before the trailing "\\nAnswer:" (numpy, host side)."""
  prefix_tokens: np.ndarray  # [B, P] int32 ([<bos>] + table + question)
  prefix_mask: np.ndarray  # [B, P] int32
  table_mask: np.ndarray  # [B, P] bool: token lies inside the record's table text
  suffix_tokens: np.ndarray  # [S] int32 ("\nAnswer:")


def encode_batch(tokenizer, records: Sequence[Any], *, prefix_len: int) -> DMLRBatch:
  """Encodes records for DMLR; raises naming the record when a prefix exceeds `prefix_len`."""
  from rlpost.llm.tasks import format_prompt  # pylint: disable=g-import-not-at-top
  suffix = tokenizer(ANSWER_SUFFIX, add_special_tokens=False)["input_ids"]
  b = len(records)
  tokens = np.full((b, prefix_len), tokenizer.pad_token_id or 0, np.int32)
  mask = np.zeros((b, prefix_len), np.int32)
  table = np.zeros((b, prefix_len), bool)
  for i, r in enumerate(records):
    text = format_prompt(r)
    if not text.endswith(ANSWER_SUFFIX):
      raise ValueError(f"prompt of record {r.pid!r} does not end with {ANSWER_SUFFIX!r}")
    prefix = text[:-len(ANSWER_SUFFIX)]
    enc = tokenizer(prefix, add_special_tokens=False, return_offsets_mapping=True)
    ids = [tokenizer.bos_token_id] + list(enc["input_ids"])
    start = prefix.find(r.table)
    spans = [(0, 0)] + list(enc["offset_mapping"])
    in_table = [start >= 0 and a >= start and b_ <= start + len(r.table) and b_ > a
                for a, b_ in spans]
    if len(ids) > prefix_len:
      raise ValueError(f"prompt of record {r.pid!r} has {len(ids)} prefix tokens > "
                       f"prefix_len={prefix_len}; raise config.prefix_len")
    tokens[i, prefix_len - len(ids):] = ids
    mask[i, prefix_len - len(ids):] = 1
    table[i, prefix_len - len(ids):] = in_table
  return DMLRBatch(tokens, mask, table, np.asarray(suffix, np.int32))


def assemble_inputs(embed_table: jax.Array, prefix_tokens: jax.Array, prefix_mask: jax.Array,
                    suffix_tokens: jax.Array, think: Optional[jax.Array],
                    retrieved_idx: Optional[jax.Array], retrieved_on: Optional[jax.Array],
                    layout: Optional[ThinkLayout]) -> tuple[jax.Array, jax.Array]:
  """(embeds [B, L, H], mask [B, L]) for [prefix | think block | suffix] (no block if think None).

  retrieved_idx: [B, n_insert, k] prefix positions; retrieved_on: [B, n_insert, k] bool.
  """
  b = prefix_tokens.shape[0]
  emb = lambda t: jnp.take(embed_table, t, axis=0)
  prefix = emb(prefix_tokens)
  suffix = jnp.broadcast_to(emb(suffix_tokens)[None], (b,) + (suffix_tokens.shape[0],) +
                            embed_table.shape[1:])
  suffix_mask = jnp.ones((b, suffix_tokens.shape[0]), jnp.int32)
  if think is None:
    return (jnp.concatenate([prefix, suffix], axis=1),
            jnp.concatenate([prefix_mask.astype(jnp.int32), suffix_mask], axis=1))
  h = embed_table.shape[1]
  block = jnp.zeros((b, layout.block_len, h), prefix.dtype)
  block_mask = jnp.zeros((b, layout.block_len), jnp.int32)
  block = block.at[:, layout.think_slots].set(think.astype(prefix.dtype))
  block_mask = block_mask.at[:, layout.think_slots].set(1)
  if layout.inserting:
    got = jax.vmap(lambda p, i: p[i])(prefix, retrieved_idx)  # [B, n_insert, k, H]
    slots = layout.retrieved_slots
    block = block.at[:, slots].set(got)
    block_mask = block_mask.at[:, slots].set(retrieved_on.astype(jnp.int32))
  return (jnp.concatenate([prefix, block, suffix], axis=1),
          jnp.concatenate([prefix_mask.astype(jnp.int32), block_mask, suffix_mask], axis=1))


def forward_logits(model: Decoder, embeds: jax.Array, mask: jax.Array,
                   positions_idx: jax.Array) -> jax.Array:
  """Next-token logits [B, K, V] (f32) at sequence positions `positions_idx` [K]."""
  m = mask.astype(bool)
  causal = jnp.tril(jnp.ones((m.shape[1],) * 2, bool))[None] & m[:, None, :]
  hidden, _ = model(None, positions_from_mask(mask), causal, inputs_embeds=embeds)
  return model.hidden_to_logits(hidden[:, positions_idx])


def greedy_decode(model: Decoder, embeds: jax.Array, mask: jax.Array, *, max_new_tokens: int,
                  stop_id: int, pad_id: int = 0,
                  top_k: int = 10) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Greedy continuation of an embedding prompt with a KV cache.

  Returns (tokens [B, R], response mask [B, R], per-token confidence [B, R], 0 where masked).
  Rows stop after emitting `stop_id` (kept).
  """
  b, length = mask.shape
  cfg = model.config
  cache = init_cache(cfg, b, length + max_new_tokens)
  s = length + max_new_tokens
  m = mask.astype(bool)
  keys = jnp.concatenate([m, jnp.zeros((b, max_new_tokens), bool)], axis=1)
  causal = jnp.arange(s)[None, :] <= jnp.arange(length)[:, None]
  positions = positions_from_mask(mask)
  hidden, cache = model(None, positions, causal[None] & keys[:, None, :], cache=cache,
                        cache_index=0, inputs_embeds=embeds)
  logits = model.hidden_to_logits(hidden[:, -1])

  def body(carry, i):
    cache, logits, pos, done = carry
    token = jnp.where(done, pad_id, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
    conf = jnp.where(done, 0.0, topk_confidence(logits, top_k=top_k))
    live = ~done
    done = done | (token == stop_id)
    step_keys = jnp.concatenate([m, jnp.broadcast_to(jnp.arange(max_new_tokens) <= i,
                                                     (b, max_new_tokens))], axis=1)
    hidden, cache = model(token[:, None], pos[:, None], step_keys[:, None, :], cache=cache,
                          cache_index=length + i)
    return (cache, model.hidden_to_logits(hidden[:, 0]), pos + 1, done), (token, live, conf)

  init = (cache, logits, positions[:, -1] + 1, jnp.zeros((b,), bool))
  _, (toks, live, conf) = jax.lax.scan(body, init, jnp.arange(max_new_tokens))
  return toks.T, live.T.astype(jnp.int32), conf.T


# --- the test-time optimisation ------------------------------------------------------------------


def initial_think(embed_table: jax.Array, prefix_tokens: jax.Array, prefix_mask: jax.Array,
                  table_mask: jax.Array, num_think_tokens: int) -> jax.Array:
  """T_0 [B, N, H]: the mean table-token input embedding, repeated N times (zeros: no table)."""
  emb = jnp.take(embed_table, prefix_tokens, axis=0).astype(jnp.float32)
  w = (table_mask.astype(bool) & prefix_mask.astype(bool)).astype(jnp.float32)[..., None]
  pooled = jnp.sum(emb * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
  return jnp.broadcast_to(pooled[:, None, :],
                          (pooled.shape[0], num_think_tokens, pooled.shape[-1]))


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["best_think", "best_retrieved_idx", "best_retrieved_on",
                                "best_reward", "initial_reward", "rewards", "sigmas",
                                "new_best"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class DMLRResult:
  best_think: jax.Array  # [B, N, H]
  best_retrieved_idx: jax.Array  # [B, n_insert, k]
  best_retrieved_on: jax.Array  # [B, n_insert, k] bool
  best_reward: jax.Array  # [B]
  initial_reward: jax.Array  # [B] R(T_0), no retrieval
  rewards: jax.Array  # [num_steps, B] max over samples of R(T~) per step
  sigmas: jax.Array  # [num_steps]
  new_best: jax.Array  # [num_steps, B] bool


def dmlr_optimize(model: Decoder, prefix_tokens: jax.Array, prefix_mask: jax.Array,
                  table_mask: jax.Array, suffix_tokens: jax.Array, key: jax.Array, *,
                  num_think_tokens: int = 8, sigma: float = 20.0, sigma_decay: float = 0.95,
                  learning_rate: float = 0.005, num_steps: int = 20, top_k: int = 10,
                  num_samples: int = 1, baseline: bool = False, injection_start_step: int = 5,
                  injection_interval: int = 5, insert_stride: int = 4,
                  num_retrieved: int = 2) -> DMLRResult:
  """Runs the DMLR ES loop (lax.scan over steps) for a batch of prompts; see the module docstring.

  Defaults: num_think_tokens, sigma, sigma_decay, learning_rate, num_steps, top_k are the paper's
  (main.py); the injection schedule (start 5, every 5, stride 4, 2 retrieved) is inferred.
  num_retrieved = 0 turns injection off.
  """
  for name, v in (("num_think_tokens", num_think_tokens), ("num_steps", num_steps),
                  ("top_k", top_k), ("num_samples", num_samples),
                  ("injection_interval", injection_interval), ("insert_stride", insert_stride)):
    if not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive int, got {v!r}")
  if num_retrieved < 0 or injection_start_step < 0:
    raise ValueError("num_retrieved and injection_start_step must be >= 0")
  if not sigma > 0 or not 0 < sigma_decay <= 1:
    raise ValueError(f"need sigma > 0 and 0 < sigma_decay <= 1, got {sigma}, {sigma_decay}")
  layout = ThinkLayout(num_think_tokens, insert_stride, num_retrieved)
  embed_table = model.embed_tokens[...]
  b, p = prefix_tokens.shape
  n_ins = len(layout.inserting)
  prefix_emb = jnp.take(embed_table, prefix_tokens, axis=0).astype(jnp.float32)
  tmask = (table_mask.astype(bool) & prefix_mask.astype(bool))
  think0 = initial_think(embed_table, prefix_tokens, prefix_mask, table_mask, num_think_tokens)
  total = p + layout.block_len + suffix_tokens.shape[0]
  read_at = jnp.asarray(list(p + layout.think_slots) + [total - 1], jnp.int32)

  def reward(think, idx, on):  # think [B, N, H] -> [B]
    embeds, mask = assemble_inputs(embed_table, prefix_tokens, prefix_mask, suffix_tokens, think,
                                   idx, on, layout)
    return jnp.mean(topk_confidence(forward_logits(model, embeds, mask, read_at), top_k=top_k),
                    axis=-1)

  def retrieve(think):  # [B, N, H] -> idx, valid [B, n_ins, k]
    if not n_ins:
      return (jnp.zeros((b, 0, num_retrieved), jnp.int32), jnp.zeros((b, 0, num_retrieved), bool))
    queries = think[:, jnp.asarray(layout.inserting)]
    return jax.vmap(functools.partial(retrieve_context, num_retrieved=num_retrieved))(
        queries, prefix_emb, tmask)

  no_idx = jnp.zeros((b, n_ins, num_retrieved), jnp.int32)
  no_on = jnp.zeros((b, n_ins, num_retrieved), bool)
  r0 = reward(think0, no_idx, no_on)

  def step(carry, s):
    think, best_think, best_r, best_idx, best_on, key = carry
    key, sub = jax.random.split(key)
    sig = sigma_at(s, sigma=sigma, sigma_decay=sigma_decay)
    inject = (n_ins > 0) & (s >= injection_start_step) & (
        (s - injection_start_step) % injection_interval == 0)

    def candidates(thinks):  # [n, B, N, H] -> retrieved ids used at this step
      cand_idx, cand_on = jax.vmap(retrieve)(thinks)
      return (jnp.where(inject, cand_idx, best_idx[None]),
              jnp.where(inject, cand_on, best_on[None]))

    def batched_reward(thinks):  # [n, B, N, H] -> [n, B]
      return jax.vmap(reward)(thinks, *candidates(thinks))

    grad, rewards, eps = gaussian_es_gradient(batched_reward, think, sub, sigma=sig,
                                              num_samples=num_samples, baseline=baseline)
    perturbed = think[None] + eps
    idx, on = candidates(perturbed)
    think = think + learning_rate * grad
    i = jnp.argmax(rewards, axis=0)  # best sample per row
    pick = lambda a: jnp.take_along_axis(a, i.reshape((1, b) + (1,) * (a.ndim - 2)), 0)[0]
    r_s = pick(rewards)
    better = r_s > best_r
    sel = lambda new, old: jnp.where(better.reshape((b,) + (1,) * (old.ndim - 1)), new, old)
    best_think = sel(pick(perturbed), best_think)
    best_idx = sel(pick(idx), best_idx)
    best_on = sel(pick(on), best_on)
    best_r = jnp.maximum(best_r, r_s)
    return (think, best_think, best_r, best_idx, best_on, key), (r_s, sig, better)

  init = (think0, think0, r0, no_idx, no_on, key)
  (_, best_think, best_r, best_idx, best_on, _), (rs, sigs, better) = jax.lax.scan(
      step, init, jnp.arange(num_steps))
  return DMLRResult(best_think, best_idx, best_on, best_r, r0, rs, sigs, better)


def make_runner(model: Decoder, *, layout_kwargs: dict[str, Any], max_new_tokens: int,
                stop_id: int, pad_id: int, top_k: int = 10):
  """Jitted (optimise, decode) pair over split params: returns two functions

    optimise(params, prefix_tokens, prefix_mask, table_mask, suffix_tokens, key) -> DMLRResult
    decode(params, prefix_tokens, prefix_mask, suffix_tokens, think, idx, on)
        -> (tokens, mask, confidence); think=None decodes the plain prompt (the baseline).
  `layout_kwargs` are dmlr_optimize's keyword arguments.
  """
  graphdef, _ = nnx.split(model)
  layout = ThinkLayout(layout_kwargs.get("num_think_tokens", 8),
                       layout_kwargs.get("insert_stride", 4),
                       layout_kwargs.get("num_retrieved", 2))

  @jax.jit
  def optimise(params, prefix_tokens, prefix_mask, table_mask, suffix_tokens, key):
    return dmlr_optimize(nnx.merge(graphdef, params), prefix_tokens, prefix_mask, table_mask,
                         suffix_tokens, key, top_k=top_k, **layout_kwargs)

  @jax.jit
  def decode(params, prefix_tokens, prefix_mask, suffix_tokens, think, idx, on):
    m = nnx.merge(graphdef, params)
    embeds, mask = assemble_inputs(m.embed_tokens[...], prefix_tokens, prefix_mask,
                                   suffix_tokens, think, idx, on,
                                   None if think is None else layout)
    return greedy_decode(m, embeds, mask, max_new_tokens=max_new_tokens, stop_id=stop_id,
                         pad_id=pad_id, top_k=top_k)

  return optimise, decode
