"""KV-cache sampler: one jitted prefill plus a `lax.while_loop` decode over a donated cache.

Per step, with z the next-token logits (f32) and tau the temperature:
  q(.) = softmax(truncate_{top-k, top-p}(z / tau)),   y_t ~ q,
  logp_t = log q(y_t)            (the distribution actually sampled from),
  logp_t1_t = log softmax(z)[y_t]  (temperature 1, untruncated),
  entropy_t = H(softmax(z / tau))  (untruncated).
Without top-k / top-p, `logp` equals a teacher-forced
`token_logprobs_and_entropy(model, tokens, mask, temperature=tau)` pass on the sampled sequence (the
sampler/trainer consistency that PPO-style ratios need). With truncation, `logp` is the truncated
distribution's log-prob, which a trainer cannot recompute; use the recomputed untruncated log-probs
for ratios there. `temperature=0` is greedy decoding; then logp == logp_t1.

The draw inverts the CDF of q with one uniform per row (`inverse_cdf_draw`).

Top-p follows Holtzman et al., "The Curious Case of Neural Text Degeneration", 2019,
arXiv:1904.09751: keep the smallest prefix of the sorted distribution whose mass reaches p.

Compile-time options are only greedy-or-not, top_k, top-p on/off and the pad id; temperature, the
top-p value and the stop ids are traced.

Shapes: prompts are LEFT-padded [B, P] with a mask. P is padded on the left up to a bucket and the
response buffer to a bucket (powers of two >= 16 by default); `max_new_tokens` is a traced loop bound,
so every call in the same (B, prompt bucket, response bucket, sampling options) reuses one
compiled prefill and one compiled decode. The cache buffers are donated to both and handed back, so
one allocation per bucket is reused across calls.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlpost.llm.model import Decoder, expand_rows, init_cache, positions_from_mask


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """Sampling options. Only (greedy, top_k, top_p on/off, number of stop-id slots, pad_id) are
  compile-time; temperature, the top-p value and the stop ids are traced, so changing them does
  not recompile."""
  temperature: float = 1.0
  top_k: Optional[int] = None
  top_p: Optional[float] = None
  stop_ids: tuple[int, ...] = ()
  pad_id: int = 0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k is not None and self.top_k < 1:
      raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
    if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0

  @property
  def use_top_p(self) -> bool:
    return self.top_p is not None and self.top_p < 1.0

  def stop_id_array(self) -> jax.Array:
    """Stop ids padded with -1 to a multiple of 8 slots (fewer distinct shapes)."""
    n = max(8, -(-len(self.stop_ids) // 8) * 8)
    return jnp.asarray(list(self.stop_ids) + [-1] * (n - len(self.stop_ids)), jnp.int32)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["tokens", "attention_mask", "response_tokens", "response_mask",
                                "lengths", "logp", "logp_t1", "entropy"],
                   meta_fields=["prompt_length"])
@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Sampler result. Response arrays are [B, R] (R = response bucket), right-padded.

  tokens / attention_mask are the full [B, P + R] sequences (left-padded prompt then response), ready
  for a teacher-forced pass; `tokens[:, prompt_length:] == response_tokens`.
  """
  tokens: jax.Array
  attention_mask: jax.Array
  response_tokens: jax.Array
  response_mask: jax.Array
  lengths: jax.Array
  logp: jax.Array
  logp_t1: jax.Array
  entropy: jax.Array
  prompt_length: int


def bucket_size(n: int, *, minimum: int = 16) -> int:
  """Smallest power of two >= max(n, minimum)."""
  size = max(int(minimum), 1)
  while size < n:
    size *= 2
  return size


def left_pad(sequences: Sequence[Sequence[int]], *, pad_id: int = 0,
             length: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists into (tokens [B, L], mask [B, L]) int32 arrays."""
  length = length or max(len(s) for s in sequences)
  tokens = np.full((len(sequences), length), pad_id, np.int32)
  mask = np.zeros((len(sequences), length), np.int32)
  for i, seq in enumerate(sequences):
    if len(seq) > length:
      raise ValueError(f"sequence {i} has length {len(seq)} > length {length}")
    if len(seq):
      tokens[i, length - len(seq):] = seq
      mask[i, length - len(seq):] = 1
  return tokens, mask


def filter_logits(z: jax.Array, *, top_k: Optional[int],
                  top_p: Optional[float | jax.Array]) -> jax.Array:
  """Sets logits outside the top-k / nucleus (top-p) set to -inf (ties at the border are kept).

  top_k must be a Python int (static); top_p may be traced. None disables a filter.
  """
  neg_inf = jnp.array(-jnp.inf, z.dtype)
  if top_k is not None and top_k < z.shape[-1]:
    kth = jax.lax.top_k(z, top_k)[0][..., -1:]
    z = jnp.where(z < kth, neg_inf, z)
  if top_p is not None:
    sorted_z = jnp.sort(z, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_z, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p  # always keeps the argmax
    threshold = jnp.min(jnp.where(keep, sorted_z, jnp.inf), axis=-1, keepdims=True)
    z = jnp.where(z < threshold, neg_inf, z)
  return z


def sample_step(logits: jax.Array, key: jax.Array, *, temperature: float | jax.Array = 1.0,
                greedy: bool = False, top_k: Optional[int] = None,
                top_p: Optional[float | jax.Array] = None,
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One token per row from f32 logits [B, V]: (token, logp, logp_t1, entropy)."""
  logp_t1_all = jax.nn.log_softmax(logits, axis=-1)
  pick = lambda a, tok: jnp.take_along_axis(a, tok[:, None], axis=-1)[:, 0]
  if greedy:
    token = jnp.argmax(logits, axis=-1)
    logp_t1 = pick(logp_t1_all, token)
    entropy = -jnp.sum(jnp.exp(logp_t1_all) * logp_t1_all, axis=-1)
    return token, logp_t1, logp_t1, entropy
  z = logits / temperature
  logq_all = jax.nn.log_softmax(z, axis=-1)
  entropy = -jnp.sum(jnp.exp(logq_all) * logq_all, axis=-1)
  if top_k is not None or top_p is not None:
    z = filter_logits(z, top_k=top_k, top_p=top_p)
    logq_all = jax.nn.log_softmax(z, axis=-1)
  token = inverse_cdf_draw(key, logq_all)
  return token, pick(logq_all, token), pick(logp_t1_all, token), entropy


def inverse_cdf_draw(key: jax.Array, logq: jax.Array) -> jax.Array:
  """One draw per row from log-probabilities [B, V] by inverting the CDF with one uniform per row.

  Returns the smallest index j with cdf[j] > u * cdf[V - 1] (u ~ U[0, 1)), so zero-probability
  entries (-inf, e.g. filtered by top-k / top-p) are never drawn. Same distribution as the Gumbel-max
  draw of `jax.random.categorical`, which needs B * V uniforms: on XLA:CPU the threefry bits
  for a [32, 512] Gumbel draw cost ~0.4 ms per decode step, this draw ~0.1 ms.
  """
  probs = jnp.exp(logq)
  cdf = jnp.cumsum(probs, axis=-1)
  x = jax.random.uniform(key, logq.shape[:-1] + (1,), cdf.dtype) * cdf[..., -1:]
  idx = jnp.sum(cdf <= x, axis=-1)
  # u * total can round up to total: fall back to the last entry with non-zero probability.
  last = logq.shape[-1] - 1 - jnp.argmax((probs > 0)[..., ::-1], axis=-1)
  return jnp.minimum(idx, last).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def _prefill(graphdef, params, cache, prompt, prompt_mask):
  model = nnx.merge(graphdef, params)
  p = prompt.shape[1]
  s = cache[0][1].shape[2]
  key_mask = jnp.concatenate(
      [prompt_mask.astype(bool), jnp.zeros((prompt.shape[0], s - p), bool)], axis=1)
  causal = jnp.arange(s)[None, :] <= jnp.arange(p)[:, None]  # [P, S]
  positions = positions_from_mask(prompt_mask)
  hidden, cache = model(prompt, positions, causal[None] & key_mask[:, None, :], cache=cache,
                        cache_index=0)
  return cache, model.hidden_to_logits(hidden[:, -1]), positions[:, -1] + 1


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def _prefill_shared_rows(graphdef, params, cache, prompt, prompt_mask, rows):
  """Prefill of U distinct prompts, copied to the B = len(cache) rows that continue them.

  Row r continues prompt `rows[r]` (an int array [B]). Each prompt is run once on a prompt-only
  cache; its keys/values, last logits and next position are then copied to its rows and written
  into the donated [B, S] cache.
  """
  model = nnx.merge(graphdef, params)
  small, logits, next_pos = _run_prompts(model, prompt, prompt_mask, cache[0][0].dtype)
  start = (0, 0, 0, 0)
  cache = [(jax.lax.dynamic_update_slice(ck, expand_rows(sk, rows), start),
            jax.lax.dynamic_update_slice(cv, expand_rows(sv, rows), start))
           for (ck, cv), (sk, sv) in zip(cache, small)]
  return cache, expand_rows(logits, rows), expand_rows(next_pos, rows)


@functools.partial(jax.jit, static_argnames=("graphdef", "expand"))
def _prefill_prefix(graphdef, params, prompt, prompt_mask, expand):
  """Prefill of U distinct prompts for G = `expand` consecutive rows each (B = U G).

  Returns the U prompts' keys/values (the shared prefix that `_decode` reads in place) and the
  last logits and next positions repeated to the B rows.
  """
  model = nnx.merge(graphdef, params)
  prefix_kv, logits, next_pos = _run_prompts(model, prompt, prompt_mask, model.config.jnp_dtype)
  return prefix_kv, expand_rows(logits, expand), expand_rows(next_pos, expand)


def _run_prompts(model, prompt, prompt_mask, dtype):
  u, p = prompt.shape
  small = init_cache(model.config, u, p, dtype)
  causal = jnp.tril(jnp.ones((p, p), bool))
  positions = positions_from_mask(prompt_mask)
  hidden, small = model(prompt, positions, causal[None] & prompt_mask.astype(bool)[:, None, :],
                        cache=small, cache_index=0)
  return small, model.hidden_to_logits(hidden[:, -1]), positions[:, -1] + 1


@functools.partial(jax.jit, static_argnames=("graphdef", "greedy", "top_k", "use_top_p", "pad_id"),
                   donate_argnames=("cache",))
def _decode(graphdef, params, cache, logits, next_pos, prompt_mask, rng, max_new_tokens,
            temperature, top_p, stop_ids, *, greedy, top_k, use_top_p, pad_id, prefix=None):
  """The decode loop. Without `prefix` the cache holds [prompt, response] slots per row; with a
  shared prefix (per-layer prompt keys/values [U, ...], prompt mask [U, P]) it holds only the
  response slots and the prompts are read in place (`Decoder.__call__(prefix=...)`)."""
  model = nnx.merge(graphdef, params)
  b = logits.shape[0]
  p = 0 if prefix is not None else prompt_mask.shape[1]
  r = cache[0][1].shape[2] - p
  prompt_keys = prompt_mask.astype(bool)[:, :p]

  def cond(state):
    i, done = state[0], state[4]
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(state):
    i, cache, logits, pos, done, toks, mask, logp, logp_t1, ent = state
    token, lp, lp1, h = sample_step(logits, jax.random.fold_in(rng, i), temperature=temperature,
                                    greedy=greedy, top_k=top_k,
                                    top_p=top_p if use_top_p else None)
    live = ~done
    token = jnp.where(live, token, pad_id).astype(jnp.int32)
    col = lambda a, v: jax.lax.dynamic_update_slice(a, v[:, None].astype(a.dtype), (0, i))
    toks, mask = col(toks, token), col(mask, live)
    logp = col(logp, jnp.where(live, lp, 0.0))
    logp_t1 = col(logp_t1, jnp.where(live, lp1, 0.0))
    ent = col(ent, jnp.where(live, h, 0.0))
    done = done | (live & jnp.any(token[:, None] == stop_ids[None, :], axis=-1))
    keys = jnp.concatenate([prompt_keys, jnp.broadcast_to(jnp.arange(r) <= i, (b, r))], axis=1)
    hidden, cache = model(token[:, None], pos[:, None], keys[:, None, :], cache=cache,
                          cache_index=p + i, prefix=prefix)
    return (i + 1, cache, model.hidden_to_logits(hidden[:, 0]), pos + 1, done, toks, mask,
            logp, logp_t1, ent)

  zeros = jnp.zeros((b, r), jnp.float32)
  state = (jnp.int32(0), cache, logits, next_pos, jnp.zeros((b,), bool),
           jnp.full((b, r), pad_id, jnp.int32), jnp.zeros((b, r), jnp.int32), zeros,
           zeros, zeros)
  _, cache, _, _, _, toks, mask, logp, logp_t1, ent = jax.lax.while_loop(cond, body, state)
  return cache, toks, mask, logp, logp_t1, ent


def compile_counts() -> dict[str, int]:
  """Number of compiled executables held by the prefill and decode jits (for recompile tests)."""
  # pylint: disable=protected-access
  return {"prefill": _prefill._cache_size(), "decode": _decode._cache_size(),
          "prefill_shared": _prefill_prefix._cache_size() + _prefill_shared_rows._cache_size()}


class Sampler:
  """Bucketed, cache-reusing generator for a `Decoder`.

  Usage:
    sampler = Sampler(model)
    out = sampler.generate(prompt_tokens, prompt_mask, max_new_tokens=128, temperature=1.0,
                           stop_ids=(eos_id,), seed=step)
  After a train step, pass the new weights with `sampler.set_params(params)` (the `nnx.State`
  from `nnx.split(model)`), or construct a new Sampler.
  """

  def __init__(self, model: Decoder, *, min_prompt_bucket: int = 16,
               min_response_bucket: int = 16):
    self.config = model.config
    self.graphdef, self.params = nnx.split(model)
    self.min_prompt_bucket = min_prompt_bucket
    self.min_response_bucket = min_response_bucket
    self._caches: dict[tuple[int, int, int], Any] = {}
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None  # for shards > 1
    self._pool_size = 0

  def set_params(self, params: Any) -> None:
    self.params = params

  def generate(self, prompt_tokens: Any, prompt_mask: Any, *, max_new_tokens: int,
               temperature: float = 1.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, stop_ids: Sequence[int] = (), pad_id: int = 0,
               seed: int | jax.Array = 0, expand: Optional[int | Sequence[int]] = None,
               shards: int = 1) -> SampleOutput:
    """Samples up to `max_new_tokens` per row; rows stop after emitting a stop id (kept).

    `expand` samples several completions per prompt with one prefill per distinct prompt: an int
    G gives G consecutive rows per prompt (B = U * G), an index sequence [B] gives row r the
    prompt `expand[r]`. The outputs then have B rows; without it, one row per prompt.

    `shards` > 1 splits the prompts into that many contiguous chunks (at most one per prompt)
    and runs one prefill + decode per chunk, each from its own host thread, so the chunks execute
    concurrently (XLA:CPU runs executions issued from different threads in parallel; a decode
    step's small matmuls otherwise keep ~one core busy). Chunk s samples with
    `fold_in(key, s)`, so a result depends on (seed, shards); with shards=1 the key is used as
    is. Outputs are concatenated in prompt order. An index-array `expand` always runs as one
    chunk.
    """
    sampling = SamplingParams(temperature=float(temperature), top_k=top_k, top_p=top_p,
                              stop_ids=tuple(int(s) for s in stop_ids), pad_id=int(pad_id))
    prompt_tokens = np.asarray(prompt_tokens, np.int32)
    prompt_mask = np.asarray(prompt_mask, np.int32)
    if prompt_tokens.ndim != 2 or prompt_tokens.shape != prompt_mask.shape:
      raise ValueError(f"prompt_tokens {prompt_tokens.shape} and prompt_mask "
                       f"{prompt_mask.shape} must be equal [B, P] shapes")
    lengths = prompt_mask.sum(axis=1)
    if lengths.min() < 1:
      raise ValueError("every prompt needs at least one unmasked token")
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    limit = self.config.max_position_embeddings
    if int(lengths.max()) + max_new_tokens > limit:
      raise ValueError(f"prompt length {int(lengths.max())} + max_new_tokens {max_new_tokens} "
                       f"exceeds max_position_embeddings {limit}")
    u, p = prompt_tokens.shape
    if expand is None:
      b = u
    elif isinstance(expand, (int, np.integer)) and not isinstance(expand, bool):
      if expand < 1:
        raise ValueError(f"expand must be >= 1 completions per prompt, got {expand}")
      expand, b = int(expand), u * int(expand)
    else:
      expand = np.asarray(expand)
      if expand.ndim != 1 or expand.size == 0 or not np.issubdtype(expand.dtype, np.integer) or \
          expand.min() < 0 or expand.max() >= u:
        raise ValueError(f"expand must be an int or a non-empty 1-D index array into the {u} "
                         f"prompts, got {expand!r}")
      b = int(expand.size)
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
      raise ValueError(f"shards must be an int >= 1, got {shards!r}")
    pb = bucket_size(p, minimum=self.min_prompt_bucket)
    rb = bucket_size(max_new_tokens, minimum=self.min_response_bucket)
    if pb > p:  # more left padding
      prompt_tokens = np.pad(prompt_tokens, ((0, 0), (pb - p, 0)), constant_values=pad_id)
      prompt_mask = np.pad(prompt_mask, ((0, 0), (pb - p, 0)))
    rng = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
    n = min(int(shards), u) if not isinstance(expand, np.ndarray) else 1
    run = functools.partial(self._run, max_new_tokens=max_new_tokens, sampling=sampling, rb=rb,
                            pb=pb)
    if n == 1:
      return run(prompt_tokens, prompt_mask, rng, expand, b, 0)
    chunks = np.array_split(np.arange(u), n)
    per = 1 if expand is None else expand

    def one(s):
      rows = chunks[s]
      out = run(prompt_tokens[rows], prompt_mask[rows], jax.random.fold_in(rng, s), expand,
                len(rows) * per, s)
      return jax.block_until_ready(out)

    if self._pool is None or self._pool_size < n:
      self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=n,
                                                         thread_name_prefix="rlpost-sampler")
      self._pool_size = n
    outs = list(self._pool.map(one, range(n)))
    cat = lambda name: jnp.concatenate([getattr(o, name) for o in outs], axis=0)
    return SampleOutput(**{f: cat(f) for f in ("tokens", "attention_mask", "response_tokens",
                                               "response_mask", "lengths", "logp", "logp_t1",
                                               "entropy")}, prompt_length=pb)

  def _run(self, prompt_tokens: np.ndarray, prompt_mask: np.ndarray, rng: jax.Array, expand,
           b: int, slot: int, *, max_new_tokens: int, sampling: SamplingParams, rb: int,
           pb: int) -> SampleOutput:
    """One prefill + decode on bucket-padded prompts; `slot` keys this chunk's cache buffer."""
    tokens, mask = jnp.asarray(prompt_tokens), jnp.asarray(prompt_mask)
    prefix = None
    # Cache slots per row: prompt + response, or only the response when a shared prefix holds
    # the prompts.
    length = rb if isinstance(expand, int) else pb + rb
    cache = self._caches.pop((b, length, slot), None)
    if cache is None:
      cache = init_cache(self.config, b, length)
    if expand is None:
      cache, logits, next_pos = _prefill(self.graphdef, self.params, cache, tokens, mask)
    elif isinstance(expand, int):
      prefix_kv, logits, next_pos = _prefill_prefix(self.graphdef, self.params, tokens, mask,
                                                    expand=expand)
      prefix = (prefix_kv, mask)
      tokens, mask = expand_rows(tokens, expand), expand_rows(mask, expand)
    else:
      rows = jnp.asarray(expand, jnp.int32)
      cache, logits, next_pos = _prefill_shared_rows(self.graphdef, self.params, cache, tokens,
                                                     mask, rows)
      tokens, mask = expand_rows(tokens, rows), expand_rows(mask, rows)
    cache, toks, rmask, logp, logp_t1, ent = _decode(
        self.graphdef, self.params, cache, logits, next_pos, mask, rng,
        jnp.int32(max_new_tokens), jnp.float32(max(sampling.temperature, 1e-6)),
        jnp.float32(sampling.top_p or 1.0), sampling.stop_id_array(), greedy=sampling.greedy,
        top_k=sampling.top_k, use_top_p=sampling.use_top_p, pad_id=sampling.pad_id,
        prefix=prefix)
    self._caches[(b, length, slot)] = cache
    return SampleOutput(
        tokens=jnp.concatenate([tokens, toks], axis=1),
        attention_mask=jnp.concatenate([mask, rmask], axis=1),
        response_tokens=toks, response_mask=rmask, lengths=rmask.sum(axis=1), logp=logp,
        logp_t1=logp_t1, entropy=ent, prompt_length=pb)
