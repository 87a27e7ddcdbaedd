"""Verifiable rewards for TabMWP-style responses.

PromptPG (Lu et al., ICLR 2023, arXiv 2209.14610) rewards +1 / -1 for a correct / wrong
normalised answer. For RL post-training (GRPO-style group baselines make the offset irrelevant)
we use the usual 0/1 accuracy reward r = 1[normalise(extract(y)) == normalise(answer)], plus an
optional format reward and user-supplied terms:

    r(y, x) = accuracy_weight * acc(y, x) + format_weight * fmt(y, x) + sum_k extra_k(y, x)

Deviation: 0/1 instead of PromptPG's +1/-1 (an affine change, documented here).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from rlpost.llm.tasks import answers
from rlpost.llm.tasks import prompts
from rlpost.llm.tasks import schema

RewardTerm = Callable[[str, schema.TabMWPRecord], float]
BatchRewardFn = Callable[[Sequence[str], Sequence[schema.TabMWPRecord]], np.ndarray]

_FORMAT_RE = re.compile(r"^(?:.*\S\s+)?" + re.escape(prompts.ANSWER_PREFIX) + r" (\S[^\n]*?)\.$",
                        re.DOTALL)


def accuracy_reward(response: str, record: schema.TabMWPRecord) -> float:
  """1.0 when the answer after the last "The answer is" is correct, else 0.0."""
  return float(answers.is_correct(answers.extract_answer(response), record))


def format_reward(response: str, record: schema.TabMWPRecord) -> float:
  """1.0 when the response ends with exactly one "The answer is X." (X a choice when
  multi-choice), else 0.0."""
  text = response.strip()
  if text.count(prompts.ANSWER_PREFIX) != 1:
    return 0.0
  m = _FORMAT_RE.match(text)
  if not m:
    return 0.0
  if record.ques_type == "multi_choice" and record.choices:
    return float(answers.match_choice(m.group(1).strip(), record.choices) is not None)
  return 1.0


def check_rewards_finite(rewards, records: Sequence[schema.TabMWPRecord]) -> np.ndarray:
  """Returns rewards as float32 [B]; raises naming the record ids of non-finite entries."""
  out = np.asarray(rewards, dtype=np.float32)
  if out.shape != (len(records),):
    raise ValueError(f"rewards must have shape ({len(records)},) to match the records, got "
                     f"{out.shape}")
  bad = np.flatnonzero(~np.isfinite(out))
  if bad.size:
    ids = [records[i].pid for i in bad[:5]]
    raise FloatingPointError(
        f"non-finite reward {out[bad[0]]} for record id {ids[0]!r} (batch index {bad[0]}; "
        f"{bad.size} non-finite in total, record ids {ids})")
  return out


def make_reward_fn(*, accuracy_weight: float = 1.0, format_weight: float = 0.0,
                   extra: Sequence[RewardTerm] = ()) -> BatchRewardFn:
  """Builds fn(responses, records) -> float32 rewards [B] (see module docstring).

  Every reward is checked with `check_rewards_finite`, so a user term returning NaN/inf raises
  an error naming the record id.
  """
  for name, value in (("accuracy_weight", accuracy_weight), ("format_weight", format_weight)):
    if not np.isfinite(value):
      raise ValueError(f"{name} must be finite, got {value!r}")
  extra = tuple(extra)
  for term in extra:
    if not callable(term):
      raise TypeError(f"extra reward terms must be callables (response, record) -> float, got "
                      f"{term!r}")

  def reward_fn(responses: Sequence[str],
                records: Sequence[schema.TabMWPRecord]) -> np.ndarray:
    if len(responses) != len(records):
      raise ValueError(f"got {len(responses)} responses for {len(records)} records")
    values = []
    for response, record in zip(responses, records):
      r = 0.0
      if accuracy_weight:
        r += accuracy_weight * accuracy_reward(response, record)
      if format_weight:
        r += format_weight * format_reward(response, record)
      for term in extra:
        r += float(term(response, record))
      values.append(r)
    return check_rewards_finite(values, records)

  return reward_fn
