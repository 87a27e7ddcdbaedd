"""Exact references for inventory control: closed-form backlog optimum, newsvendor, lost-sales VI."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.control.inventory import baselines, dp, env, hdpo


@pytest.mark.parametrize("lead_time,p,expected", [(1, 4.0, 3.1674), (4, 9.0, 6.2788),
                                                 (10, 19.0, 10.9460), (20, 39.0, 17.1411)])
def test_backlog_closed_form_table(lead_time, p, expected):
  assert baselines.backlog_optimal_cost(std=1.6, lead_time=lead_time, p=p) == pytest.approx(
      expected, abs=1e-4)


def test_backlog_closed_form_is_the_minimum_over_levels_in_simulation():
  prob = env.one_store_backlogged(lead_time=4, p=9.0)
  s_star = baselines.backlog_optimal_level(mean=5.0, std=1.6, lead_time=4, p=9.0)
  assert s_star == pytest.approx(29.585, abs=1e-3)

  @jax.jit
  def cost(level, key):
    apply = lambda params, x: jax.nn.relu(level - x.sum(-1))
    return hdpo.make_evaluate(prob, apply, n_scenarios=256, periods=300, ignore=100)(None, key)[0]

  key = jax.random.PRNGKey(0)
  c_star = float(cost(s_star, key))
  assert c_star == pytest.approx(6.2788, rel=0.01)
  # Common random numbers: moving the level by +-1 costs more.
  assert float(cost(s_star - 1.0, key)) > c_star and float(cost(s_star + 1.0, key)) > c_star


def test_newsvendor_levels_match_zipkin_base_stock():
  assert baselines.newsvendor_level(mean=5.0, std=0.0, lead_time=1, p=4.0, demand="poisson") == 13
  assert baselines.newsvendor_level(mean=5.0, std=0.0, lead_time=2, p=4.0, demand="poisson") == 18
  with pytest.raises(ValueError, match="demand"):
    baselines.newsvendor_level(mean=5.0, std=1.0, lead_time=1, p=4.0, demand="gamma")


def test_value_iteration_reproduces_zipkin_optima():
  sol = dp.solve_lost_sales(lead_time=1, p=4.0)
  assert round(sol.gain, 2) == 4.04  # Zipkin (2008), L=1, p=4
  assert sol.gain_high - sol.gain_low < 1e-3
  assert round(dp.solve_lost_sales(lead_time=2, p=4.0).gain, 2) == 4.40  # Zipkin, L=2, p=4
  # Truncation does not bind: a larger grid gives the same gain.
  big = dp.solve_lost_sales(lead_time=1, p=4.0, max_on_hand=60, max_order=30)
  assert big.gain == pytest.approx(sol.gain, abs=2e-4)
  # The optimal policy is a capped, base-stock-like rule: orders fall as on-hand rises.
  assert np.all(np.diff(sol.policy[:20]) <= 0) and sol.policy[0] > 0 and sol.policy[-1] == 0


@pytest.mark.slow
def test_value_iteration_policy_simulates_to_its_gain_and_no_policy_beats_it():
  sol = dp.solve_lost_sales(lead_time=1, p=4.0)
  prob = dataclass_with_integer_start(env.one_store_lost_sales(lead_time=1, p=4.0))
  table = jnp.asarray(sol.policy, jnp.float32)
  apply = lambda params, x: table[jnp.clip(jnp.round(x[..., 0]).astype(jnp.int32), 0,
                                           table.shape[0] - 1)]
  mean, se = hdpo.make_evaluate(prob, apply, n_scenarios=1024, periods=600, ignore=100)(
      None, jax.random.PRNGKey(1))
  assert abs(float(mean) - sol.gain) < 4 * float(se) + 5e-3
  capped = lambda params, x: jnp.minimum(jax.nn.relu(12.0 - x.sum(-1)), 6.0)
  mean_c, _ = hdpo.make_evaluate(prob, capped, n_scenarios=1024, periods=600, ignore=100)(
      None, jax.random.PRNGKey(1))
  assert float(mean_c) > sol.gain


def dataclass_with_integer_start(prob):
  class IntegerStart(env.SingleStore):

    def init_state(self, key, batch_shape=()):
      return jnp.zeros((*batch_shape, self.lead_time))

  return IntegerStart(lead_time=prob.lead_time, p=prob.p, h=prob.h, lost_sales=True,
                      demand="poisson", mean=prob.mean, std=prob.std)


def test_value_iteration_rejects_bad_lead_time():
  with pytest.raises(ValueError, match="lead_time"):
    dp.solve_lost_sales(lead_time=0, p=4.0)
