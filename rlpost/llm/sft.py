"""Supervised fine-tuning on gold solutions: next-token cross-entropy masked to response tokens.

    L(theta) = - sum_{b,t} m_{b,t} log p_theta(y_{b,t} | x_b, y_{b,<t}) / sum_{b,t} m_{b,t}

(token mean over the response tokens of the batch; `rlpost.llm.model.sft_cross_entropy`).

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
                       f"{response_len} (max_new_tokens)")
    tokens[i, prompt_len - len(p):prompt_len] = p
    tokens[i, prompt_len:prompt_len + len(t)] = t
    attn[i, prompt_len - len(p):prompt_len + len(t)] = 1
    loss[i, prompt_len:prompt_len + len(t)] = 1
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss}


def sft_loss(params: Any, graphdef: nnx.GraphDef, batch: dict[str, jax.Array]) -> jax.Array:
  """Token-mean cross-entropy of the response tokens (pure in params)."""
  model = nnx.merge(graphdef, params)
  return sft_cross_entropy(model, batch["tokens"], batch["attention_mask"], batch["loss_mask"])


def make_sft_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation):
  """Jitted `step(state, batch) -> (state, metrics)`; the state is donated.

  The step advances `step` by 1 and `data_pos` by the batch size.
  """

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
