"""Tests for the tabular IWOCS robust-MDP solver (rlpost.planning.iwocs)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.core.distributional import TabularMDP
from rlpost.planning import iwocs
from rlpost.planning import tabular


def _rmdp(seed, num_states=5, num_actions=2, num_vertices=3):
  rng = np.random.default_rng(seed)
  vertices = rng.dirichlet(
      np.full(num_states, 0.5), size=(num_vertices, num_states, num_actions)).astype(np.float32)
  rewards = rng.uniform(-1, 1, size=(num_states, num_actions, num_states)).astype(np.float32)
  mdp = TabularMDP(jnp.asarray(vertices[0]), jnp.asarray(rewards),
                   jnp.zeros(num_states, bool), 0.9)
  return mdp, jnp.asarray(vertices)


def test_robust_vi_is_below_every_vertex_and_hull_points():
  mdp, vertices = _rmdp(0)
  v_robust, q_robust = tabular.robust_value_iteration(vertices, mdp)
  policy = jnp.argmax(q_robust, -1)
  for j in range(vertices.shape[0]):
    v_j = tabular.policy_evaluation(policy, vertices[j], mdp)
    assert np.all(v_j >= v_robust - 1e-4)
  hull = iwocs.model_from_logits(jax.random.normal(jax.random.PRNGKey(0), (5, 2, 3)), vertices)
  np.testing.assert_allclose(hull.sum(-1), 1.0, rtol=1e-5)
  assert np.all(tabular.policy_evaluation(policy, hull, mdp) >= v_robust - 1e-4)


def test_iwocs_reaches_robust_value_iteration_optimum():
  # Seed 3 is one where the per-state "lowest_value" rule stalls; the default rule does not.
  mdp, vertices = _rmdp(3)
  mu0 = jnp.full(5, 0.2)
  v_robust, _ = tabular.robust_value_iteration(vertices, mdp)
  result = iwocs.iwocs(mdp, vertices, mu0, jax.random.PRNGKey(3), num_iterations=4)
  worst = tabular.robust_policy_evaluation(result.policy, vertices, mdp)
  np.testing.assert_allclose(mu0 @ worst, mu0 @ v_robust, atol=1e-4)
  # The final search cannot push the final policy's value below the robust optimum.
  assert float(result.search_values[-1]) >= float(mu0 @ v_robust) - 1e-4
  # The worst value over the growing set is non-increasing.
  assert np.all(np.diff(np.asarray(result.set_worst_values)) <= 1e-6)
  assert result.models.shape == (5, 5, 2, 5)
  np.testing.assert_allclose(result.models.sum(-1), 1.0, rtol=1e-5)


def test_single_model_set_reduces_to_value_iteration():
  mdp, _ = _rmdp(1)
  v, q = tabular.value_iteration(mdp, num_iterations=300)
  for rule in ("set_robust", "lowest_value"):
    result = iwocs.iwocs(mdp, mdp.transitions[None], jnp.full(5, 0.2), jax.random.PRNGKey(0),
                         num_iterations=0, policy_rule=rule)
    np.testing.assert_array_equal(result.policy, jnp.argmax(q, -1))
    np.testing.assert_allclose(result.set_worst_values[0], jnp.mean(v), rtol=1e-5)


def test_lowest_value_policy_rule_and_bad_args():
  q = jnp.array([[[1.0, 2.0], [5.0, 0.0]],     # model 0
                 [[0.0, -1.0], [9.0, 8.0]]])   # model 1 (lower in state 0)
  policy = iwocs.lowest_value_policy(q, jnp.array([True, True]))
  np.testing.assert_array_equal(policy, [0, 0])  # state 0 uses model 1, state 1 model 0
  np.testing.assert_array_equal(iwocs.lowest_value_policy(q, jnp.array([True, False])), [1, 0])
  mdp, vertices = _rmdp(0)
  with pytest.raises(ValueError, match="policy_rule"):
    iwocs.iwocs(mdp, vertices, jnp.full(5, 0.2), jax.random.PRNGKey(0), policy_rule="nope")
