"""Instrumentation (partial-credit) reward of arXiv 2509.01684 (rlpost.llm.agents.partial_credit)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.llm.agents import partial_credit as pc

M = pc.DEFAULT_MILESTONES


def test_each_milestone_counts_once_however_often_printed():
  out = "\n".join([M[0]] * 5 + [M[1], "noise", M[1], M[0]])
  assert pc.instrumentation_score(out) == pytest.approx(0.2)
  assert pc.instrumentation_score("\n".join(M * 3)) == pytest.approx(0.5)
  # Order does not matter; unrelated text around the messages does not matter.
  assert pc.instrumentation_score("xx" + M[4] + "yy" + M[2]) == pytest.approx(0.2)


def test_scores_lie_on_the_grid_or_are_the_penalty():
  grid = np.round(np.arange(6) * 0.1, 6)
  for r in range(len(M) + 1):
    for subset in itertools.combinations(M, r):
      s = pc.instrumentation_score("\n".join(subset))
      assert s == pytest.approx(0.1 * r)
      assert np.isclose(s, grid).any()
      # The no-training marker replaces the milestone credit (literal spec reading).
      assert pc.instrumentation_score("\n".join(subset + (pc.NO_TRAINING_MARKER,))) == -10.0


def test_episode_reward_cases():
  out = "\n".join(M[:3])  # 0.3
  assert pc.mle_episode_reward(out, submission_valid=True, test_score=0.8) == pytest.approx(1.1)
  assert pc.mle_episode_reward(out, submission_valid=True, test_score=0.8,
                               score_scale=10.0) == pytest.approx(8.3)
  assert pc.mle_episode_reward(out, submission_valid=False, test_score=None) == pytest.approx(-9.7)
  assert pc.mle_episode_reward(out, submission_valid=True, test_score=0.8,
                               timed_out=True) == pytest.approx(-9.7)
  bad = out + "\n" + pc.NO_TRAINING_MARKER
  assert pc.mle_episode_reward(bad, submission_valid=True, test_score=0.8) == pytest.approx(-9.2)
  assert pc.mle_episode_reward(bad, submission_valid=False, test_score=None) == -20.0


def test_string_and_array_forms_agree_under_jit_and_not():
  rng = np.random.default_rng(0)
  outs = []
  for _ in range(32):
    parts = [m for m in M if rng.random() < 0.5] * int(rng.integers(1, 3))
    if rng.random() < 0.2:
      parts.append(pc.NO_TRAINING_MARKER)
    rng.shuffle(parts)
    outs.append("\n".join(parts))
  outs += ["", "\x00\xff garbage ###"]
  want = np.array([pc.instrumentation_score(o) for o in outs], np.float32)
  hits, no_train = pc.milestone_hits(outs)
  fn = lambda h, n: pc.instrumentation_score_from_hits(h, n)
  eager = np.asarray(fn(jnp.asarray(hits), jnp.asarray(no_train)))
  jitted = np.asarray(jax.jit(fn)(jnp.asarray(hits), jnp.asarray(no_train)))
  np.testing.assert_allclose(eager, want, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(eager, jitted)
  # Counts instead of booleans: a milestone still counts once.
  counts = hits.astype(np.int32) * 3
  np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(counts), jnp.asarray(no_train))), eager)


def test_empty_and_garbage_stdout_is_zero_without_nan():
  for out in ("", None, b"\xff\xfe\x00", "LIBRARIES IMPORTED!", "data loaded", "\n" * 100):
    s = pc.instrumentation_score(out)
    assert s == 0.0 and np.isfinite(s)
  hits = jnp.zeros((3, len(M)), bool)
  r = np.asarray(pc.instrumentation_score_from_hits(hits, jnp.zeros((3,), bool)))
  assert np.all(r == 0.0) and np.all(np.isfinite(r))
  empty = pc.instrumentation_score_from_hits(jnp.zeros((0, len(M)), bool), jnp.zeros((0,), bool))
  assert empty.shape == (0,)


def test_bad_arguments_raise_naming_the_argument():
  with pytest.raises(ValueError, match="per_milestone"):
    pc.instrumentation_score("x", per_milestone=-0.1)
  with pytest.raises(ValueError, match="milestones"):
    pc.instrumentation_score("x", milestones=())
  with pytest.raises(ValueError, match="milestones"):
    pc.instrumentation_score("x", milestones=("a", ""))
  with pytest.raises(ValueError, match="test_score"):
    pc.mle_episode_reward("x", submission_valid=True, test_score=None)
  with pytest.raises(ValueError, match="test_score"):
    pc.mle_episode_reward("x", submission_valid=True, test_score=float("nan"))
  with pytest.raises(ValueError, match="per_milestone"):
    pc.instrumentation_score_from_hits(jnp.zeros((2, 5), bool), jnp.zeros((2,), bool),
                                       per_milestone=-1.0)
  with pytest.raises(ValueError, match="hits"):
    pc.instrumentation_score_from_hits(jnp.zeros((2, 0), bool), jnp.zeros((2,), bool))
  with pytest.raises(ValueError, match="no_training"):
    pc.instrumentation_score_from_hits(jnp.zeros((2, 5), bool), jnp.zeros((3,), bool))
