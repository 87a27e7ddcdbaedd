"""PromptPG: a policy network that picks the in-context examples of a frozen solver, by REINFORCE.

Lu et al., "Dynamic Prompt Learning via Policy Gradient for Semi-structured Mathematical
Reasoning", ICLR 2023, arXiv 2209.14610 (spec: llm_hybrids_and_agents.md §10; official code
lupantech/PromptPG, run_gpt3_rl/learn_policy.py and model.py, read for semantics only).

Policy (paper eq. for the selection distribution, over a candidate pool C of in-context examples):

    h(x)            = W f(x)                              f frozen, W trainable (Linear)
    pi(c_j | p_i)   = softmax_j( h(p_i) . h(c_j) )        j = 1..|C|
    ids_i           ~ pi(.|p_i), shot_number ids WITHOUT replacement (Gumbel top-k), reversed so
                      the most likely example sits next to the question
    r_i             = +1 if the solver's answer to prompt(ids_i, p_i) is correct else -1
    L               = - sum_i r_i sum_{j in ids_i} log pi(c_j | p_i)     (no baseline, summed)

The log-probability term is the paper's marginal form (code parity); `exact=True` gives the
Plackett-Luce likelihood of the ordered draw, log pi(c_1) + sum_{j>1} [log pi(c_j) -
log(1 - sum_{l<j} pi(c_l))], whose REINFORCE gradient is unbiased for the expected reward.
Inference takes the top-`shot_number` candidates by score, reversed.

Deviations (all because GPT-3 and BERT are not available offline; stated in BUILD_NOTES):
  * f(x) is a small Flax encoder: the frozen token embeddings of the solver (standing in for
    frozen BERT), mean-pooled over the text, then the trainable Linear(d -> 128) of the paper.
    Queries are encoded from their question (and options); candidates from their question and
    solution, so examples of different solution styles get different encodings.
  * The solver is rlpost's own tiny Flax LLM, trained here by SFT on prompts "example + query"
    where the example is of the SAME question family as the query and the target follows the
    example's solution style (a few-shot LLM is also prompted with relevant examples). An
    example of another family or a harder style is therefore unhelpful or misleading, which is
    what the selection policy can learn. Greedy decoding (the paper's temperature 0).
  * Default shot_number in the configs is 1 (paper: 2), and the configs show examples without
    their table (question + worked solution), to keep prompts short for the tiny solver on a
    shared CPU; the functions support any shot_number and `with_table=True`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlpost.core import pg_loss_per_token
from rlpost.llm.tasks import prompts as prompts_lib

Array = jax.Array


# --- the selection policy (pure) -----------------------------------------------------------------


def candidate_logits(query_emb: Array, cand_emb: Array) -> Array:
  """scores[b, j] = h(p_b) . h(c_j): `[B, D] x [C, D] -> [B, C]` (f32)."""
  return jnp.einsum("bd,cd->bc", query_emb.astype(jnp.float32), cand_emb.astype(jnp.float32))


def sample_candidates(key: Array, logits: Array, *, shot_number: int = 2) -> Array:
  """`shot_number` distinct candidate ids per row, drawn without replacement from softmax(logits).

  Gumbel top-k: the k largest of logits + Gumbel noise are an ordered draw without replacement
  (Plackett-Luce). Returned in draw order (most likely first); reverse for the prompt.
  """
  if shot_number > logits.shape[-1]:
    raise ValueError(f"shot_number={shot_number} > number of candidates {logits.shape[-1]}")
  g = jax.random.gumbel(key, logits.shape, jnp.float32)
  return jax.lax.top_k(logits.astype(jnp.float32) + g, shot_number)[1]


def greedy_candidates(logits: Array, *, shot_number: int = 2) -> Array:
  """Inference: the top-`shot_number` ids by score, in descending order (reverse for the prompt)."""
  if shot_number > logits.shape[-1]:
    raise ValueError(f"shot_number={shot_number} > number of candidates {logits.shape[-1]}")
  return jax.lax.top_k(logits.astype(jnp.float32), shot_number)[1]


def selection_log_probs(logits: Array, ids: Array, *, exact: bool = False) -> Array:
  """Per-pick log-probabilities `[B, k]` of the ids drawn in order (see module docstring)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, ids, axis=-1)
  if not exact:
    return picked
  # Mass already drawn before pick j; 1 - mass is floored so a degenerate policy stays finite.
  before = jnp.cumsum(jnp.exp(picked), axis=-1) - jnp.exp(picked)
  return picked - jnp.log(jnp.maximum(1.0 - before, 1e-12))


def promptpg_loss_per_example(logits: Array, ids: Array, rewards: Array, *,
                              exact: bool = False) -> tuple[Array, dict[str, Array]]:
  """L_i = -r_i sum_j log pi(ids_ij | p_i) (unreduced `[B]`; the paper sums over the batch).

  Built on `rlpost.core.pg_loss_per_token` with one "token" per pick and the reward as its
  advantage (no baseline, as in the paper).
  """
  logp = selection_log_probs(logits, ids, exact=exact)
  adv = jnp.broadcast_to(rewards.astype(jnp.float32)[:, None], logp.shape)
  per_pick, aux = pg_loss_per_token(logp, adv, jnp.ones(logp.shape, jnp.float32))
  return jnp.sum(per_pick, axis=-1), {**aux, "logp": logp}


def expected_reward(logits: Array, reward_table: Array) -> Array:
  """sum_j pi(c_j|p) R[p, j] for shot_number 1: `[B, C] x [B, C] -> [B]` (the objective)."""
  return jnp.sum(jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * reward_table, axis=-1)


# --- the encoder ---------------------------------------------------------------------------------


class FrozenEmbedding(nnx.Variable):
  """A variable that is not an `nnx.Param`, so the optimizer never updates it."""


class ProblemEncoder(nnx.Module):
  """h(x) = W mean_t E[x_t] + b: frozen token embeddings E, trainable Linear W (paper: frozen
  BERT [CLS] then a trainable Linear(768 -> 128))."""

  def __init__(self, embeddings: Array, *, out_dim: int = 128, rngs: nnx.Rngs):
    self.embeddings = FrozenEmbedding(jnp.asarray(embeddings, jnp.float32))
    self.linear = nnx.Linear(embeddings.shape[1], out_dim, rngs=rngs)

  def __call__(self, tokens: Array, mask: Array) -> Array:
    e = jnp.take(self.embeddings.value, tokens, axis=0)
    m = mask.astype(jnp.float32)[..., None]
    pooled = jnp.sum(e * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    return self.linear(pooled)


def query_text(record: Any) -> str:
  text = record.question
  if record.choices:
    text += " Options: " + prompts_lib.format_choices(record.choices)
  return text


def candidate_text(record: Any) -> str:
  return query_text(record) + " Answer: " + record.solution


def encode_texts(tokenizer, texts: Sequence[str], *, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded (tokens, mask) [N, max_len]; longer texts are truncated."""
  tokens = np.zeros((len(texts), max_len), np.int32)
  mask = np.zeros((len(texts), max_len), np.int32)
  for i, t in enumerate(texts):
    ids = tokenizer.encode(t, add_special_tokens=False)[:max_len]
    tokens[i, :len(ids)] = ids
    mask[i, :len(ids)] = 1
  return tokens, mask


def make_policy_step(graphdef: nnx.GraphDef, frozen: Any, optimizer: optax.GradientTransformation,
                     *, exact: bool = False):
  """Jitted `step(params, opt_state, q_tok, q_mask, c_tok, c_mask, ids, rewards)`.

  Returns (params, opt_state, metrics); the loss is the batch SUM of the per-example losses.
  """

  def loss_fn(params, q_tok, q_mask, c_tok, c_mask, ids, rewards):
    enc = nnx.merge(graphdef, params, frozen)
    logits = candidate_logits(enc(q_tok, q_mask), enc(c_tok, c_mask))
    per_example, aux = promptpg_loss_per_example(logits, ids, rewards, exact=exact)
    probs = jax.nn.softmax(logits, axis=-1)
    entropy = -jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return jnp.sum(per_example), {"entropy": jnp.mean(entropy),
                                  "logp_selected": jnp.mean(aux["logp"])}

  @jax.jit
  def step(params, opt_state, q_tok, q_mask, c_tok, c_mask, ids, rewards):
    (loss, met), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, q_tok, q_mask, c_tok, c_mask, ids, rewards)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **met}

  return step


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _logits(graphdef, params, frozen, q_tok, q_mask, c_tok, c_mask):
  enc = nnx.merge(graphdef, params, frozen)
  return candidate_logits(enc(q_tok, q_mask), enc(c_tok, c_mask))


# --- prompts for the solver ----------------------------------------------------------------------


def style_of(record: Any) -> Optional[str]:
  """The solution style a record's `solution` was taken from (None for real TabMWP)."""
  for name, text in record.solutions.items():
    if text == record.solution:
      return name
  return None


def with_style(record: Any, style: str) -> Any:
  """The record with `solution` replaced by its `style` write-up (a candidate example)."""
  return dataclasses.replace(record, solution=record.solutions[style])


def example_text(example: Any, *, with_table: bool = True, answer_only: bool = False) -> str:
  """A solved example: TQ-SA ("Table: ...\nQuestion: ...\nAnswer: {solution} The answer is X.");
  with_table=False drops the table lines, answer_only=True the worked solution."""
  text = prompts_lib.format_prompt(example)
  if not with_table:
    text = "\n".join(line for line in text.split("\n")[example.row_num + 1:])
  if answer_only:
    return text + " " + prompts_lib.format_answer(example.answer)
  return text + prompts_lib.format_target(example)


def fewshot_prompt(examples: Sequence[Any], query: Any, *, with_table: bool = True,
                   answer_only: bool = False) -> str:
  """Solved examples (each followed by a blank line) then the query prompt."""
  shots = [example_text(e, with_table=with_table, answer_only=answer_only) for e in examples]
  return "\n\n".join(shots + [prompts_lib.format_prompt(query)])


def fewshot_target(examples: Sequence[Any], query: Any, *, answer_only: bool = False) -> str:
  """The query's target, in the style of the example next to it when it has styles."""
  if answer_only:
    return " " + prompts_lib.format_answer(query.answer)
  style = style_of(examples[-1]) if examples else None
  if style is not None and style in query.solutions:
    return prompts_lib.format_target(query, style)
  return prompts_lib.format_target(query)


# --- training and evaluation of the selection policy ---------------------------------------------


@dataclasses.dataclass
class SelectionSetup:
  """What a PromptPG run needs: the solver (sampler + params), tokenizer and the problem sets."""
  sampler: Any
  solver_params: Any
  tokenizer: Any
  candidates: Sequence[Any]
  train: Sequence[Any]
  prompt_len: int
  max_new_tokens: int
  solve_batch_size: int
  example_table: bool = True
  answer_only: bool = False


def solve(setup: SelectionSetup, queries: Sequence[Any], ids: np.ndarray) -> np.ndarray:
  """0/1 correctness of the solver on each query with candidates `ids[i]` (draw order)."""
  from rlpost.llm.agents import common  # pylint: disable=g-import-not-at-top
  texts = [fewshot_prompt([setup.candidates[j] for j in row[::-1]], q,
                          with_table=setup.example_table, answer_only=setup.answer_only)
           for q, row in zip(queries, np.asarray(ids))]
  outs = common.generate_texts(setup.sampler, setup.solver_params, setup.tokenizer, texts,
                               prompt_len=setup.prompt_len,
                               max_new_tokens=setup.max_new_tokens,
                               batch_size=setup.solve_batch_size)
  return common.correctness(outs, queries)


def init_policy(tokenizer, solver_embeddings: Array, *, out_dim: int = 128, seed: int = 0):
  """(graphdef, trainable params, frozen state) of a fresh ProblemEncoder."""
  enc = ProblemEncoder(solver_embeddings, out_dim=out_dim, rngs=nnx.Rngs(seed))
  del tokenizer
  return nnx.split(enc, nnx.Param, ...)


def train_selection_policy(setup: SelectionSetup, *, seed: int, epochs: int = 20,
                           batch_size: int = 20, learning_rate: float = 1e-3,
                           shot_number: int = 2, out_dim: int = 128, exact: bool = False,
                           encoder_max_len: int = 64, log_fn=None, pbar=None):
  """REINFORCE training of the selection policy (paper defaults: Adam 1e-3, 20 epochs, batch 20).

  Keeps the parameters of the epoch with the best mean training reward (as the paper's released
  checkpoint). Returns (policy dict, per-step metric records).
  """
  tok = setup.tokenizer
  embeddings = setup.sampler.params["embed_tokens"].value
  graphdef, params, frozen = init_policy(tok, embeddings, out_dim=out_dim, seed=seed)
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)
  step_fn = make_policy_step(graphdef, frozen, optimizer, exact=exact)
  c_tok, c_mask = encode_texts(tok, [candidate_text(c) for c in setup.candidates],
                               max_len=encoder_max_len)
  q_tok_all, q_mask_all = encode_texts(tok, [query_text(q) for q in setup.train],
                                       max_len=encoder_max_len)
  rng = np.random.default_rng([seed, 7])
  key = jax.random.key(seed)
  best = (-np.inf, params, -1)
  history, step = [], 0
  n = len(setup.train)
  for epoch in range(epochs):
    order = rng.permutation(n)
    rewards_epoch = []
    for start in range(0, n, batch_size):
      idx = order[start:start + batch_size]
      if len(idx) < batch_size:  # fixed shapes: top up from the start of the permutation
        idx = np.concatenate([idx, order[:batch_size - len(idx)]])
      q_tok, q_mask = q_tok_all[idx], q_mask_all[idx]
      logits = _logits(graphdef, params, frozen, q_tok, q_mask, c_tok, c_mask)
      ids = np.asarray(sample_candidates(jax.random.fold_in(key, step), logits,
                                         shot_number=shot_number))
      correct = solve(setup, [setup.train[i] for i in idx], ids)
      rewards = 2.0 * correct - 1.0  # paper: +1 / -1
      params, opt_state, met = step_fn(params, opt_state, q_tok, q_mask, c_tok, c_mask,
                                       jnp.asarray(ids), jnp.asarray(rewards))
      step += 1
      rec = {k: float(v) for k, v in jax.device_get(met).items()}
      rec.update(phase="policy", seed=seed, step=step, epoch=epoch + 1,
                 reward_mean=float(rewards.mean()), accuracy=float(correct.mean()))
      from rlpost.llm.train import check_finite  # pylint: disable=g-import-not-at-top
      check_finite(rec, phase="promptpg", step=step)
      history.append(rec)
      rewards_epoch.append(float(rewards.mean()))
      if log_fn is not None:
        log_fn(rec)
      if pbar is not None:
        pbar.update(1)
        pbar.set_postfix(seed=seed, epoch=epoch + 1, acc=f"{rec['accuracy']:.2f}")
    mean_r = float(np.mean(rewards_epoch))
    if mean_r > best[0]:
      best = (mean_r, jax.tree.map(jnp.copy, params), epoch + 1)
  policy = {"graphdef": graphdef, "params": best[1], "frozen": frozen, "best_epoch": best[2],
            "best_epoch_reward": best[0], "c_tok": c_tok, "c_mask": c_mask,
            "encoder_max_len": encoder_max_len}
  return policy, history


def policy_selection(setup: SelectionSetup, policy: dict, queries: Sequence[Any], *,
                     shot_number: int) -> np.ndarray:
  """Greedy (top-k) candidate ids `[N, k]` of a trained policy."""
  q_tok, q_mask = encode_texts(setup.tokenizer, [query_text(q) for q in queries],
                               max_len=policy["encoder_max_len"])
  logits = _logits(policy["graphdef"], policy["params"], policy["frozen"], q_tok, q_mask,
                   policy["c_tok"], policy["c_mask"])
  return np.asarray(greedy_candidates(logits, shot_number=shot_number))


def random_selection(num_queries: int, num_candidates: int, *, shot_number: int,
                     seed: int) -> np.ndarray:
  """Uniformly random distinct candidate ids `[N, k]` (the paper's random-selection baseline)."""
  rng = np.random.default_rng([seed, 11])
  return np.stack([rng.choice(num_candidates, size=shot_number, replace=False)
                   for _ in range(num_queries)]) if num_queries else np.zeros(
                       (0, shot_number), np.int64)
