"""Open_ES meta-training plumbing (evosax 0.3): antithetic tasks, rank shaping, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.meta import es as es_lib


def test_antithetic_pairs_share_agent_key_and_lifetime():
  keys, lifetimes = es_lib.sample_antithetic_tasks(jax.random.key(0), 8, min_lifetime=4,
                                                   max_lifetime=100)
  assert keys.shape == (8,) and lifetimes.shape == (8,)
  data = jax.random.key_data(keys)
  np.testing.assert_array_equal(data[:4], data[4:])  # evosax's [z, -z] halves layout
  np.testing.assert_array_equal(lifetimes[:4], lifetimes[4:])
  assert len({tuple(np.asarray(x)) for x in data[:4]}) == 4  # distinct tasks across pairs


def test_lifetimes_are_log_uniform_integers_in_range():
  n = es_lib.sample_lifetimes(jax.random.key(1), 4000, min_lifetime=10, max_lifetime=250)
  n = np.asarray(n)
  assert n.dtype == np.int32 and n.min() >= 10 and n.max() <= 250
  # log-uniform: about half the mass below the geometric midpoint sqrt(10 * 251) ~ 50.
  assert 0.4 < np.mean(n < 50) < 0.6
  assert np.all(np.asarray(es_lib.sample_lifetimes(
      jax.random.key(2), 10, min_lifetime=7, max_lifetime=7)) == 7)


def _one_update(fitness_transform):
  es = es_lib.make_open_es(es_lib.ESConfig(population_size=8), {"w": jnp.zeros(5)})
  params = es.default_params
  state = es.init(jax.random.key(0), {"w": jnp.ones(5)}, params)
  population, state = es.ask(jax.random.key(1), state, params)
  returns = -jnp.sum(jnp.square(population["w"] - 3.0), axis=-1)
  state, _ = es.tell(jax.random.key(2), population, -fitness_transform(returns), state, params)
  return es.get_mean(state)["w"]


def test_rank_shaping_makes_the_update_invariant_to_monotone_transforms():
  base = _one_update(lambda r: r)
  np.testing.assert_allclose(_one_update(lambda r: 10.0 * jnp.exp(r / 50.0) + 3.0), base,
                             rtol=1e-6)
  assert not np.allclose(base, 1.0)  # the mean did move


def test_open_es_wiring_maximises_return_on_a_quadratic():
  es = es_lib.make_open_es(es_lib.ESConfig(population_size=16, learning_rate=0.05),
                           jnp.zeros(4))
  params = es.default_params

  def generation(state, key):
    k_ask, k_tell = jax.random.split(key)
    population, state = es.ask(k_ask, state, params)
    returns = -jnp.sum(jnp.square(population - 1.0), axis=-1)
    state, _ = es.tell(k_tell, population, -returns, state, params)
    return state, None

  state = es.init(jax.random.key(0), jnp.zeros(4), params)
  state, _ = jax.jit(lambda s: jax.lax.scan(generation, s, jax.random.split(
      jax.random.key(1), 60)))(state)
  np.testing.assert_allclose(es.get_mean(state), 1.0, atol=0.25)


def test_es_config_errors_name_the_field():
  with pytest.raises(ValueError, match="population_size"):
    es_lib.ESConfig(population_size=7)
  with pytest.raises(ValueError, match="max_lifetime"):
    es_lib.ESConfig(min_lifetime=10, max_lifetime=5)
  with pytest.raises(ValueError, match="fitness_shaping"):
    es_lib.ESConfig(fitness_shaping="linear")
