"""Partial-credit ("instrumentation") reward for ML-engineering agents.

Paper: "Reinforcement Learning for Machine Learning Engineering Agents", ICLR 2026,
arXiv 2509.01684 (the instrumentation reward as described for the public verl-based code's
`compute_instrumented_score`; spec: /work/shared/papers/llm_hybrids_and_agents.md).

The agent writes a program that is asked to print fixed milestone messages. The reward gives
+`per_milestone` (0.1) for each milestone message found in the program's stdout,

    I(stdout) = 0.1 * #{m in M : m occurs in stdout}      in {0, 0.1, ..., 0.5}   (|M| = 5),

with M = ("libraries imported!", "data loaded!", "model defined!", "model trained!",
"predictions made!"); a milestone counts once however often it is printed. If the program prints
"no model training detected!", the instrumentation score is -10 instead. The episode reward is

    R = score_scale * test_score + I(stdout)      (valid submission, no timeout)
    R = -10 + I(stdout)                           (missing / invalid submission, or timeout).

Choices where the spec is thin (ours):
  * The no-training penalty *replaces* the milestone credit (the spec's "instrumentation score in
    {0, 0.1, ..., 0.5}, or -10 when no training is detected", read literally), and then enters the
    episode formulas like any instrumentation score: a valid submission with the marker gets
    `score_scale * test_score - 10`, a failed one `-10 + (-10) = -20`.
  * Matching is an exact, case-sensitive substring test on the whole stdout (the messages are
    printed verbatim by the instrumented program); order does not matter.
  * A timeout counts as a failure even if a valid submission file exists.
  * `test_score` is used as given (its sign convention, e.g. lower-is-better metrics, is the
    caller's job); `score_scale` multiplies it.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray

DEFAULT_MILESTONES: tuple[str, ...] = ("libraries imported!", "data loaded!", "model defined!",
                                       "model trained!", "predictions made!")
NO_TRAINING_MARKER = "no model training detected!"


def _check(milestones: Sequence[str], per_milestone: float, no_training_marker: str) -> None:
  if isinstance(milestones, str):
    raise ValueError(f"milestones must be a sequence of strings, not one string: {milestones!r}")
  if len(milestones) == 0:
    raise ValueError("milestones must be a non-empty sequence of messages")
  for m in milestones:
    if not isinstance(m, str) or not m:
      raise ValueError(f"milestones must be non-empty strings; got {m!r}")
  if len(set(milestones)) != len(milestones):
    raise ValueError(f"milestones must be distinct; got {list(milestones)!r}")
  if not (isinstance(per_milestone, (int, float)) and math.isfinite(per_milestone)
          and per_milestone >= 0):
    raise ValueError(f"per_milestone must be a finite number >= 0; got {per_milestone!r}")
  if not isinstance(no_training_marker, str) or not no_training_marker:
    raise ValueError(f"no_training_marker must be a non-empty string; got {no_training_marker!r}")


def _as_text(stdout: Union[str, bytes, None]) -> str:
  if stdout is None:
    return ""
  if isinstance(stdout, bytes):
    return stdout.decode("utf-8", errors="replace")
  return str(stdout)


def milestone_hits(stdouts: Sequence[Union[str, bytes, None]], *,
                   milestones: Sequence[str] = DEFAULT_MILESTONES,
                   no_training_marker: str = NO_TRAINING_MARKER
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(hits [B, M] bool, no_training [B] bool) of a batch of stdouts, for the array form."""
  _check(milestones, 0.0, no_training_marker)
  texts = [_as_text(s) for s in stdouts]
  hits = np.array([[m in t for m in milestones] for t in texts], bool).reshape(len(texts),
                                                                               len(milestones))
  no_training = np.array([no_training_marker in t for t in texts], bool)
  return hits, no_training


def instrumentation_score(stdout: Union[str, bytes, None], *,
                          milestones: Sequence[str] = DEFAULT_MILESTONES,
                          per_milestone: float = 0.1,
                          no_training_marker: str = NO_TRAINING_MARKER,
                          no_training_penalty: float = -10.0) -> float:
  """I(stdout) = per_milestone * #milestones seen (each once), or `no_training_penalty` when
  `no_training_marker` occurs (it replaces the milestone credit; see the module docstring).

  Empty or garbage stdout gives 0.0. Raises ValueError naming a bad argument.
  """
  _check(milestones, per_milestone, no_training_marker)
  if not math.isfinite(no_training_penalty):
    raise ValueError(f"no_training_penalty must be finite; got {no_training_penalty!r}")
  text = _as_text(stdout)
  if no_training_marker in text:
    return float(no_training_penalty)
  return float(per_milestone * sum(m in text for m in milestones))


def mle_episode_reward(stdout: Union[str, bytes, None], *, submission_valid: bool,
                       test_score: Optional[float], timed_out: bool = False,
                       score_scale: float = 1.0, failure_penalty: float = -10.0,
                       milestones: Sequence[str] = DEFAULT_MILESTONES,
                       per_milestone: float = 0.1,
                       no_training_marker: str = NO_TRAINING_MARKER,
                       no_training_penalty: float = -10.0) -> float:
  """Episode reward: score_scale * test_score + I(stdout) for a valid submission without timeout,
  else failure_penalty + I(stdout) (arXiv 2509.01684).

  `test_score` is required (finite) when `submission_valid` and not `timed_out`; it is ignored
  otherwise. Raises ValueError naming a bad argument.
  """
  if not math.isfinite(score_scale):
    raise ValueError(f"score_scale must be finite; got {score_scale!r}")
  if not math.isfinite(failure_penalty):
    raise ValueError(f"failure_penalty must be finite; got {failure_penalty!r}")
  inst = instrumentation_score(stdout, milestones=milestones, per_milestone=per_milestone,
                               no_training_marker=no_training_marker,
                               no_training_penalty=no_training_penalty)
  if submission_valid and not timed_out:
    if test_score is None or not math.isfinite(float(test_score)):
      raise ValueError(f"test_score must be a finite number for a valid submission; got "
                       f"{test_score!r}")
    return float(score_scale * float(test_score) + inst)
  return float(failure_penalty + inst)


def instrumentation_score_from_hits(hits: Array, no_training: Array, *,
                                    per_milestone: float = 0.1,
                                    no_training_penalty: float = -10.0) -> Array:
  """Array form of `instrumentation_score` (jit-able).

  hits: [B, M] bool, or occurrence counts (a milestone counts once if its count is > 0);
  no_training: [B] bool (or counts). Returns [B] float32:
  where(no_training, no_training_penalty, per_milestone * #{m : hits[b, m] > 0}).
  """
  if not (isinstance(per_milestone, (int, float)) and math.isfinite(per_milestone)
          and per_milestone >= 0):
    raise ValueError(f"per_milestone must be a finite number >= 0; got {per_milestone!r}")
  if jnp.ndim(hits) != 2 or hits.shape[1] == 0:
    raise ValueError(f"hits must be [B, M] with M >= 1 milestones; got shape {jnp.shape(hits)}")
  if jnp.shape(no_training) != hits.shape[:1]:
    raise ValueError(f"no_training must be [B] = {hits.shape[:1]}; got {jnp.shape(no_training)}")
  seen = jnp.sum((jnp.asarray(hits) > 0).astype(jnp.float32), axis=-1)
  credit = jnp.float32(per_milestone) * seen
  return jnp.where(jnp.asarray(no_training) > 0, jnp.float32(no_training_penalty), credit)
