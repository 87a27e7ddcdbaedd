"""Retroformer: a retrospective LM trained by policy gradient writes reflections for a frozen actor.

Yao et al., "Retroformer: Retrospective Large Language Agents with Policy Gradient
Optimization", ICLR 2024, arXiv 2308.02151 (spec: llm_hybrids_and_agents.md §11; official code
weirayao/Retroformer, read for semantics only).

After a failed trial k (prompt x, the actor's attempt, return G_k) the retrospective model M_r
writes a reflection y, which is added to the actor's next prompt. With the actor frozen:

    rating   r(x, y) = G_{k+1} - G_k                                         (paper eq.)
    objective  max_{M_r} E_{y ~ M_r(.|x)} [ r(x, y) ] - beta KL(M_r(.|x) || M_r^ref(.|x))

Here M_r is a small Flax LLM (rlpost.llm.model.Decoder, initialised from a checkpoint and kept as
the frozen reference M_r^ref) whose reflection is one of K fixed hint strings: the policy is the
LLM's own sequence probability renormalised over the K strings,

    log M_r(y_k | x) = log_softmax_k( s_k / tau ),
    s_k = (1/|hint_k|) sum_t log p_LM(hint_k[t] | x, hint_k[<t])
(length-normalised, temperature tau: without the normalisation a pretrained LM's renormalised
distribution over hints of different lengths is nearly deterministic and REINFORCE cannot
explore; measured: entropy ~1e-9 nats with the shipped SFT policy as M_r).

Loss per failed trial i with G reflections sampled per trial (group-relative baseline):

    A_ij = rloo(r_i1..r_iG)_j
    L_i  = (1/G) sum_j -A_ij log M_r(y_ij | x_i)
           + beta sum_k M_r(y_k|x_i) (log M_r - log M_r^ref)(y_k|x_i)

(`rlpost.core.pg_loss_per_token`, `rloo_advantages` and `kl_penalty`, estimator k1 weighted by
the policy over all K options, i.e. the exact KL of the categorical).

Deviations from the paper (stated in BUILD_NOTES): REINFORCE with a leave-one-out baseline
instead of PPO against a learned reward model (the spec allows the raw rating locally); a fixed
KL coefficient instead of the adaptive controller; the reflection vocabulary is K hint strings
instead of free text; the rating uses 0/1 returns, so after a failure r = G_{k+1} in {0, 1}.

The multi-attempt task (see `sample_problem`): a synthetic TabMWP-style table of people and
counts, and the question "What is the <noun> result for A and B?". The environment's hidden rule
ties the operation (add / subtract / larger / smaller) to the table's topic (the noun). The actor
is SFT-trained to follow a reflection's operation and to guess an operation without one, so it
does not know the rule; the retrospective model can learn it, and that a repeated operation
fails again, from the ratings alone.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlpost.core import kl_penalty
from rlpost.core import pg_loss_per_token
from rlpost.core import rloo_advantages
from rlpost.llm.tasks import prompts as prompts_lib
from rlpost.llm.tasks import schema
from rlpost.llm.tasks import synthetic

Array = jax.Array

OPS = ("add", "subtract", "larger", "smaller")
HINTS = {
    "add": "Add the two numbers.",
    "subtract": "Subtract the smaller number from the larger.",
    "larger": "Give the larger number.",
    "smaller": "Give the smaller number.",
}


# --- the objective (pure) ------------------------------------------------------------------------


def reflection_rating(return_prev: Array, return_next: Array) -> Array:
  """r = G_{k+1} - G_k: the improvement of the next trial's return (negative when worse)."""
  return jnp.asarray(return_next, jnp.float32) - jnp.asarray(return_prev, jnp.float32)


def reflection_log_probs(seq_logp: Array, lengths: Array | None = None, *,
                         temperature: float = 1.0) -> Array:
  """log M_r(y_k|x) = log_softmax_k(score_k / temperature) over the K reflections `[B, K]`.

  score_k is the LM's sequence log-prob of reflection k, divided by its token count when
  `lengths` is given (length-normalised; otherwise longer hints are exponentially less likely
  and a pretrained LM's renormalised distribution is nearly deterministic).
  """
  score = seq_logp.astype(jnp.float32)
  if lengths is not None:
    score = score / jnp.maximum(lengths.astype(jnp.float32), 1.0)
  return jax.nn.log_softmax(score / temperature, axis=-1)


def retroformer_loss_per_example(logp_all: Array, ref_logp_all: Array, actions: Array,
                                 advantages: Array, *, kl_coef: float = 0.2,
                                 ) -> tuple[Array, dict[str, Array]]:
  """Per-sample loss `[B]`: -A log M_r(y|x) + kl_coef KL(M_r(.|x) || M_r^ref(.|x)).

  Args:
    logp_all: `[B, K]` log-probs of every reflection under the policy (`reflection_log_probs`).
    ref_logp_all: `[B, K]` the same under the frozen reference (no gradient).
    actions: `[B]` int, the sampled reflection.
    advantages: `[B]` (e.g. `rloo_advantages(ratings[P, G]).reshape(-1)`).
    kl_coef: beta (the paper's init_kl_coef 0.2, here fixed).

  Returns:
    (loss `[B]`, aux with `pg` and `kl`, each `[B]`).
  """
  logp_all = logp_all.astype(jnp.float32)
  ref = jax.lax.stop_gradient(ref_logp_all.astype(jnp.float32))
  picked = jnp.take_along_axis(logp_all, actions[:, None].astype(jnp.int32), axis=-1)
  pg, _ = pg_loss_per_token(picked, advantages.astype(jnp.float32)[:, None],
                            jnp.ones_like(picked))
  kl = jnp.sum(jnp.exp(logp_all) * kl_penalty(logp_all, ref, estimator="k1"), axis=-1)
  return pg[:, 0] + kl_coef * kl, {"pg": pg[:, 0], "kl": kl}


def group_advantages(ratings: Array, group_size: int) -> Array:
  """Leave-one-out advantages of `[P * G]` ratings (G reflections per failed trial) -> `[P * G]`."""
  return rloo_advantages(ratings.reshape(-1, group_size)).reshape(-1)


# --- the multi-attempt task ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RetroProblem:
  """A problem of the multi-attempt task: the record (for prompts and rewards) and its rule."""
  record: schema.TabMWPRecord
  op: str
  rows: tuple[tuple[str, int], tuple[str, int]]  # the two named rows (name, value)


def hidden_op(noun: str, *, rule_seed: int = 0) -> str:
  """The environment's rule: the operation of a topic (unknown to the actor)."""
  themes = [t[0] for t in synthetic.THEMES]
  perm = np.random.default_rng([rule_seed, 99]).permutation(len(themes))
  return OPS[int(perm[themes.index(noun)]) % len(OPS)]


def apply_op(op: str, a: int, b: int) -> int:
  return {"add": a + b, "subtract": abs(a - b), "larger": max(a, b), "smaller": min(a, b)}[op]


def solution_text(op: str, rows) -> str:
  """The actor's write-up for `op` (copy the rows, then one step), without the answer line."""
  (na, a), (nb, b) = rows
  copied = f"{na} | {a}. {nb} | {b}."
  if op == "add":
    return f"{copied} {a} + {b} = {a + b}."
  if op == "subtract":
    hi, lo = max(a, b), min(a, b)
    return f"{copied} {hi} - {lo} = {hi - lo}."
  return f"{copied} The {op} is {apply_op(op, a, b)}."


def sample_problem(*, seed: int, split: str, index: int, rule_seed: int = 0,
                   max_value: int = 9) -> RetroProblem:
  """Problem `index` of `split` (deterministic); split-disjoint through `synthetic.split_of`."""
  split_id = synthetic.SPLITS.index(split)
  for attempt in range(1000):
    rng = np.random.default_rng([seed, split_id, index, attempt, 23])
    names = [synthetic.NAMES[i] for i in rng.choice(len(synthetic.NAMES), 3, replace=False)]
    values = [int(v) + 1 for v in rng.choice(max_value, 3, replace=False)]
    noun, _, past = synthetic.THEMES[int(rng.integers(len(synthetic.THEMES)))]
    i, j = sorted(rng.choice(3, 2, replace=False).tolist())
    question = f"What is the {noun} result for {names[i]} and {names[j]}?"
    columns = {"Name": names, noun.capitalize(): [str(v) for v in values]}
    table, row_num, column_num = schema.make_table(columns)
    if synthetic.split_of(question, table) == split:
      break
  op = hidden_op(noun, rule_seed=rule_seed)
  rows = ((names[i], values[i]), (names[j], values[j]))
  answer = apply_op(op, values[i], values[j])
  record = schema.validate_record(dict(
      question=question, choices=None, answer=str(answer), unit=None,
      table_title=f"{noun.capitalize()} {past}", table=table, table_for_pd=columns,
      row_num=row_num, column_num=column_num, solution=solution_text(op, rows),
      ques_type="free_text", ans_type="integer_number", grade=2, split=split,
      family=f"retro_{op}", difficulty=1), pid=f"retro-{split}-s{seed}-{index}")
  return RetroProblem(record=record, op=op, rows=rows)


def actor_prompt(problem: RetroProblem, *, previous: str | None = None,
                 reflection: str | None = None) -> str:
  """Table and question, then the previous answer and the reflection when given, then "Answer:"."""
  base = prompts_lib.format_prompt(problem.record)  # ends with "\nAnswer:"
  head = base[:-len("Answer:")]
  extra = ""
  if previous is not None:
    extra += f"Previous answer: {previous}\n"
  if reflection is not None:
    extra += f"Reflection: {reflection}\n"
  return head + extra + "Answer:"


def actor_target(problem: RetroProblem, op: str) -> str:
  answer = apply_op(op, problem.rows[0][1], problem.rows[1][1])
  return f" {solution_text(op, problem.rows)} {prompts_lib.format_answer(str(answer))}"


def reflection_prompt(problem: RetroProblem, attempt: str, return_: float) -> str:
  """What the retrospective model reads: the task, the failed attempt and its return."""
  head = prompts_lib.format_prompt(problem.record)[:-len("Answer:")]
  return head + f"Attempt:{attempt}\nReturn: {return_:g}\nReflection:"


def short_answer(response: str) -> str:
  """The previous answer shown to the actor on a retry ("?" when none was given)."""
  from rlpost.llm.tasks import extract_answer  # pylint: disable=g-import-not-at-top
  return extract_answer(response) or "?"


# --- the retrospective LM over K reflections -----------------------------------------------------


def encode_reflection_batch(tokenizer, prompts: Sequence[str], hints: Sequence[str], *,
                            prompt_len: int) -> dict[str, np.ndarray]:
  """tokens / attention_mask / hint_mask `[B * K, prompt_len + H]`: prompt i with hint k in row
  i * K + k (prompt left-padded, hint right-padded to the longest hint H)."""
  pad = tokenizer.pad_token_id or 0
  hint_ids = [tokenizer.encode(" " + h, add_special_tokens=False) for h in hints]
  h_len = max(len(h) for h in hint_ids)
  k = len(hints)
  rows = len(prompts) * k
  tokens = np.full((rows, prompt_len + h_len), pad, np.int32)
  attn = np.zeros_like(tokens)
  hint_mask = np.zeros_like(tokens)
  for i, text in enumerate(prompts):
    p = [tokenizer.bos_token_id] + tokenizer.encode(text, add_special_tokens=False)
    if len(p) > prompt_len:
      raise ValueError(f"reflection prompt {i} has {len(p)} tokens > prompt_len={prompt_len}")
    for j, h in enumerate(hint_ids):
      r = i * k + j
      tokens[r, prompt_len - len(p):prompt_len] = p
      tokens[r, prompt_len:prompt_len + len(h)] = h
      attn[r, prompt_len - len(p):prompt_len + len(h)] = 1
      hint_mask[r, prompt_len:prompt_len + len(h)] = 1
  return {"tokens": tokens, "attention_mask": attn, "hint_mask": hint_mask}


def reflection_logp_all(graphdef: nnx.GraphDef, params: Any, batch: dict[str, Array],
                        num_hints: int, *, temperature: float = 1.0) -> Array:
  """log M_r(y_k | x_i) `[B, K]` (length-normalised, see `reflection_log_probs`) from a batch
  made by `encode_reflection_batch`."""
  from rlpost.llm.model import token_logprobs_and_entropy  # pylint: disable=g-import-not-at-top
  model = nnx.merge(graphdef, params)
  logp, _ = token_logprobs_and_entropy(model, batch["tokens"], batch["attention_mask"])
  mask = batch["hint_mask"].astype(jnp.float32)
  seq = jnp.sum(logp * mask, axis=-1)
  return reflection_log_probs(seq.reshape(-1, num_hints), mask.sum(-1).reshape(-1, num_hints),
                              temperature=temperature)


def make_reflection_fns(graphdef: nnx.GraphDef, optimizer, *, num_hints: int, group_size: int,
                        kl_coef: float, temperature: float = 1.0):
  """Jitted (logp_fn(params, batch) -> [B, K], step(params, opt_state, batch, ref_logp_all,
  actions, ratings) -> (params, opt_state, metrics)).

  `ratings` are `[P * G]` (G samples per prompt, contiguous); the batch covers the P prompts, and
  each prompt's K log-probs are repeated for its G samples. The loss is the mean over samples.
  """
  import optax  # pylint: disable=g-import-not-at-top

  @jax.jit
  def logp_fn(params, batch):
    return reflection_logp_all(graphdef, params, batch, num_hints, temperature=temperature)

  def loss_fn(params, batch, ref_logp_all, actions, ratings):
    logp_all = jnp.repeat(reflection_logp_all(graphdef, params, batch, num_hints,
                                              temperature=temperature), group_size, axis=0)
    ref = jnp.repeat(ref_logp_all, group_size, axis=0)
    adv = group_advantages(ratings, group_size)
    per, aux = retroformer_loss_per_example(logp_all, ref, actions, adv, kl_coef=kl_coef)
    ent = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return jnp.mean(per), {"pg_loss": jnp.mean(aux["pg"]), "kl": jnp.mean(aux["kl"]),
                           "entropy": jnp.mean(ent)}

  @jax.jit
  def step(params, opt_state, batch, ref_logp_all, actions, ratings):
    (loss, met), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch, ref_logp_all, actions, ratings)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **met}

  return logp_fn, step


@functools.partial(jax.jit, static_argnames=("group_size",))
def sample_reflections(key: Array, logp_all: Array, *, group_size: int) -> Array:
  """`[P * G]` reflection ids: G categorical draws per prompt from `logp_all [P, K]`."""
  logits = jnp.repeat(logp_all, group_size, axis=0)
  return jax.random.categorical(key, logits, axis=-1)
