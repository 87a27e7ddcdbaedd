"""Supervised fine-tuning on gold solutions: next-token cross-entropy masked to response tokens.

    L(theta) = - sum_{b,t} m_{b,t} log p_theta(y_{b,t} | x_b, y_{b,<t}) / sum_{b,t} m_{b,t}

(token mean over the response tokens of the batch; `rlpost.llm.model.sft_cross_entropy`).

`loss="otr"` swaps the cross-entropy for One-Token Rollout (`otr_sft_loss`, arXiv 2509.26313):
at every gold position K candidate tokens are drawn from the tempered, stop-gradient policy and
rewarded 1 when they equal the gold token, `wrong_reward` otherwise (rlpost.core
`otr_loss_per_token`); the per-token losses are token-meaned over the batch like SFT.

Bucketing: every example uses the RL layout, the prompt LEFT-padded to `prompt_len` and the
target (solution + " The answer is X." + <eos>) RIGHT-padded to `response_len`, so SFT and RL
share one shape per bucket and the jitted step compiles once. (Packing several examples per row
would need block-diagonal masks; with ~70-token examples bucketing wastes little.)
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlpost import core
from rlpost.llm.model import hidden_states
from rlpost.llm.model import sft_cross_entropy
from rlpost.llm.tasks import encode_example
from rlpost.llm.train import TrainState


def make_sft_batch(tokenizer, records: Sequence[Any], *, prompt_len: int, response_len: int,
                   style: Optional[str] = None) -> dict[str, np.ndarray]:
  """tokens / attention_mask / loss_mask [B, prompt_len + response_len] (int32).

  Raises:
    ValueError naming the record when its prompt or target does not fit its bucket.
  """
  pad = tokenizer.pad_token_id or 0
  b, length = len(records), prompt_len + response_len
  tokens = np.full((b, length), pad, np.int32)
  attn = np.zeros((b, length), np.int32)
  loss = np.zeros((b, length), np.int32)
  for i, r in enumerate(records):
    p, t = encode_example(tokenizer, r, style=style)
    if len(p) > prompt_len:
      raise ValueError(f"prompt of record {r.pid!r} has {len(p)} tokens > prompt_len="
                       f"{prompt_len}")
    if len(t) > response_len:
      raise ValueError(f"target of record {r.pid!r} has {len(t)} tokens > response_len="
                       f"{response_len} (config.sft.response_len, 0 = rl.max_new_tokens)")
    tokens[i, prompt_len - len(p):prompt_len] = p
    tokens[i, prompt_len:prompt_len + len(t)] = t
    attn[i, prompt_len - len(p):prompt_len + len(t)] = 1
    loss[i, prompt_len:prompt_len + len(t)] = 1
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss}


def sft_loss(params: Any, graphdef: nnx.GraphDef, batch: dict[str, jax.Array]) -> jax.Array:
  """Token-mean cross-entropy of the response tokens (pure in params)."""
  model = nnx.merge(graphdef, params)
  return sft_cross_entropy(model, batch["tokens"], batch["attention_mask"], batch["loss_mask"])


SFT_LOSSES = ("xent", "otr")


def check_sft_loss(loss: str, *, otr_num_samples: int = 16, otr_temperature: float = 1.0,
                   otr_wrong_reward: float = 0.0) -> None:
  """Validates the SFT loss choice; errors name the config field (`sft.loss`, `sft.otr_*`)."""
  if loss not in SFT_LOSSES:
    raise ValueError(f"config.sft.loss must be one of {SFT_LOSSES}, got {loss!r}")
  if loss == "otr":
    if isinstance(otr_num_samples, bool) or not isinstance(otr_num_samples, (int, np.integer)) \
        or otr_num_samples < 1:
      raise ValueError(f"config.sft.otr_num_samples must be a positive int, got "
                       f"{otr_num_samples!r}")
    if not otr_temperature >= 0:
      raise ValueError(f"config.sft.otr_temperature must be >= 0, got {otr_temperature!r}")
    if not -1.0 <= otr_wrong_reward < 1.0:
      raise ValueError(f"config.sft.otr_wrong_reward must be in [-1, 1) (beta < 1), got "
                       f"{otr_wrong_reward!r}")


def otr_sft_loss(params: Any, graphdef: nnx.GraphDef, batch: dict[str, jax.Array], key: jax.Array,
                 *, num_samples: int, temperature: float, wrong_reward: float,
                 prompt_len: Optional[int] = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """One-Token Rollout as a drop-in replacement for the SFT cross-entropy (pure in params).

    L_OTR = -(1/N) sum_{b,t} m_{b,t} (1/K) sum_k R(a_k, x_t) log pi_theta(a_k | x, x_<t),
    a_k ~ softmax(sg(z_t) / temperature),  R(a, x_t) = 1 if a == x_t else wrong_reward,

  N = number of trained tokens in the batch (token mean, like SFT; the paper's 1/T per sequence
  is not recoverable, see llm_hybrids_and_agents.md §1). With wrong_reward = 0, temperature 0
  (greedy) and a correct top token this is exactly the cross-entropy.

  Paper: "One-Token Rollout: Guiding Supervised Fine-Tuning of LLMs with Policy Gradient", 2025,
  arXiv 2509.26313. Deviation: K defaults to 16 in the configs, not the paper's 256, because
  `jax.random.categorical` draws a [K, B, T, V] Gumbel tensor (memory and 2-core CPU time).

  Args:
    params, graphdef: the policy.
    batch: `make_sft_batch` arrays (tokens, attention_mask, loss_mask).
    key: PRNG key of the candidate draws.
    num_samples, temperature, wrong_reward: K, tau, beta.
    prompt_len: when given, only positions >= prompt_len are projected to the vocabulary (the
      loss mask is zero on the prompt anyway); None projects the whole row.

  Returns:
    (scalar loss, aux with `hit_rate`).
  """
  model = nnx.merge(graphdef, params)
  start = 1 if prompt_len is None else prompt_len
  tokens, attn = batch["tokens"], batch["attention_mask"]
  hidden = hidden_states(model, tokens, attn)[:, start - 1:-1]
  logits_ = model.hidden_to_logits(hidden)
  a = attn.astype(jnp.float32)
  mask = batch["loss_mask"][:, start:].astype(jnp.float32) * a[:, start:] * a[:, start - 1:-1]
  per_token, aux = core.otr_loss_per_token(logits_, tokens[:, start:], mask, key,
                                           num_samples=num_samples, temperature=temperature,
                                           wrong_reward=wrong_reward)
  return core.aggregate_loss(per_token, mask, "token_mean"), aux


def make_sft_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, *,
                  loss: str = "xent", otr_num_samples: int = 16, otr_temperature: float = 1.0,
                  otr_wrong_reward: float = 0.0, prompt_len: Optional[int] = None):
  """Jitted `step(state, batch) -> (state, metrics)`; the state is donated.

  The step advances `step` by 1 and `data_pos` by the batch size. `loss="xent"` (default) is the
  token-mean cross-entropy; `loss="otr"` is `otr_sft_loss`, whose candidate draws use the key
  fold_in(key(state.rng), state.step), so a resumed run draws the same candidates.
  """
  check_sft_loss(loss, otr_num_samples=otr_num_samples, otr_temperature=otr_temperature,
                 otr_wrong_reward=otr_wrong_reward)
  if loss == "otr":
    return _make_otr_step(graphdef, optimizer, num_samples=otr_num_samples,
                          temperature=otr_temperature, wrong_reward=otr_wrong_reward,
                          prompt_len=prompt_len)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: TrainState, batch: dict[str, jax.Array]):
    loss, grads = jax.value_and_grad(sft_loss)(state["params"], graphdef, batch)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1,
                 "data_pos": state["data_pos"] + batch["tokens"].shape[0]}
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "tokens": jnp.sum(batch["loss_mask"])}
    return new_state, metrics

  return step


def _make_otr_step(graphdef, optimizer, *, num_samples, temperature, wrong_reward, prompt_len):
  otr = functools.partial(otr_sft_loss, num_samples=num_samples, temperature=temperature,
                          wrong_reward=wrong_reward, prompt_len=prompt_len)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: TrainState, batch: dict[str, jax.Array]):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    (loss, aux), grads = jax.value_and_grad(otr, has_aux=True)(state["params"], graphdef, batch,
                                                               key)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1,
                 "data_pos": state["data_pos"] + batch["tokens"].shape[0]}
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "tokens": jnp.sum(batch["loss_mask"]), "otr_hit_rate": aux["hit_rate"]}
    return new_state, metrics

  return step


def sft_step_from_config(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                         sft_config: Any, *, prompt_len: Optional[int] = None):
  """`make_sft_step` with the loss fields of a config's `sft` section (absent fields: xent)."""
  get = sft_config.get if hasattr(sft_config, "get") else lambda k, d: getattr(sft_config, k, d)
  return make_sft_step(graphdef, optimizer, loss=get("loss", "xent"),
                       otr_num_samples=get("otr_num_samples", 16),
                       otr_temperature=get("otr_temperature", 1.0),
                       otr_wrong_reward=get("otr_wrong_reward", 0.0), prompt_len=prompt_len)
