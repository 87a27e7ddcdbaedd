"""PRDC: exact blocked nearest-neighbour search and the dataset-constraint actor loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import cKDTree

from rlpost.offline import prdc


@pytest.mark.parametrize("block_size", [7, 64, 4096])
@pytest.mark.parametrize("use_jit", [False, True])
def test_nearest_neighbour_matches_kdtree(block_size, use_jit):
  rng = np.random.default_rng(0)
  keys = rng.normal(size=(1000, 5)).astype(np.float32)
  queries = rng.normal(size=(200, 5)).astype(np.float32)
  fn = lambda q, k: prdc.nearest_neighbour(q, k, block_size=block_size)
  fn = jax.jit(fn) if use_jit else fn
  index, sq_dist = fn(jnp.asarray(queries), jnp.asarray(keys))
  tree_dist, tree_index = cKDTree(keys.astype(np.float64)).query(queries.astype(np.float64), k=1)
  np.testing.assert_array_equal(np.asarray(index), tree_index)
  np.testing.assert_allclose(np.sqrt(np.asarray(sq_dist)), tree_dist, rtol=1e-4, atol=1e-5)


def test_nearest_neighbour_ties_go_to_lowest_index():
  keys = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
  queries = jnp.zeros((1, 2))
  for block_size in (1, 2, 3, 4):
    index, sq_dist = prdc.nearest_neighbour(queries, keys, block_size=block_size)
    assert int(index[0]) == 0 and float(sq_dist[0]) == 1.0


def test_prdc_beta_limits():
  # beta -> inf: the state dominates, so a_nn is the action of the nearest dataset state.
  # beta -> 0: only the action matters, so a_nn is the nearest action anywhere in the data.
  obs = jnp.array([[0.0], [1.0], [5.0]])
  actions = jnp.array([[0.9], [-0.9], [0.0]])
  query_obs = jnp.array([[0.1]])
  query_action = jnp.array([[0.05]])
  big = prdc.prdc_nearest_actions(query_obs, query_action,
                                  prdc.dataset_keys(obs, actions, beta=1e4), beta=1e4)[0]
  small = prdc.prdc_nearest_actions(query_obs, query_action,
                                    prdc.dataset_keys(obs, actions, beta=0.0), beta=0.0)[0]
  np.testing.assert_allclose(big, [[0.9]])
  np.testing.assert_allclose(small, [[0.0]])


def test_prdc_constraint_is_zero_on_dataset_actions():
  rng = np.random.default_rng(1)
  obs = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
  actions = jnp.asarray(rng.uniform(-1, 1, size=(64, 2)), jnp.float32)
  keys = prdc.dataset_keys(obs, actions)
  q = jnp.asarray(rng.normal(size=(64,)), jnp.float32)
  loss, aux = prdc.prdc_actor_loss_per_sample(q, actions, obs, keys, alpha=0.0)
  np.testing.assert_array_equal(np.asarray(aux["nn_index"]), np.arange(64))
  np.testing.assert_allclose(loss, 0.0, atol=1e-7)
  # Moving pi(s) away from the data makes the constraint positive.
  loss_off, _ = prdc.prdc_actor_loss_per_sample(q, actions + 0.5, obs, keys, alpha=0.0)
  assert float(jnp.min(loss_off)) > 0.0


def test_prdc_loss_jit_and_degenerate_inputs():
  obs = jnp.zeros((8, 3))
  actions = jnp.zeros((8, 2))
  keys = prdc.dataset_keys(obs, actions)
  q = jnp.zeros((8,))  # all-zero Q: lambda must stay finite
  f = lambda q, a: prdc.prdc_actor_loss_per_sample(q, a, obs, keys)[0]
  eager, jitted = f(q, actions + 0.1), jax.jit(f)(q, actions + 0.1)
  assert np.all(np.isfinite(eager))
  np.testing.assert_allclose(eager, jitted, rtol=1e-6)
  grad = jax.grad(lambda a: jnp.mean(f(q, a)))(actions + 0.1)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0
