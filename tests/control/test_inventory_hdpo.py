"""HDPO training, neural/GNN policies and the PPO/REINFORCE baseline on the inventory problems."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.control.inventory import baselines, env, hdpo, pg, policies

_TINY = dict(batch_size=128, periods=30, ignore_periods=10, eval_every=20, dev_scenarios=256,
             dev_periods=60, dev_ignore=20, test_scenarios=256, test_periods=300, test_ignore=100)


def test_hdpo_base_stock_recovers_closed_form_level():
  prob = env.one_store_backlogged(lead_time=1, p=4.0)
  pol = baselines.make_base_stock(prob, init_level=8.0)
  cfg = hdpo.HDPOConfig(n_steps=80, learning_rate=0.2, final_lr_fraction=0.05, **_TINY)
  res = hdpo.train_hdpo(prob, pol, cfg)
  level = float(jax.nn.softplus(res.params["level"]))
  s_star = baselines.backlog_optimal_level(mean=5.0, std=1.6, lead_time=1, p=4.0)
  assert abs(level - s_star) < 0.3, (level, s_star)
  cost, se = hdpo.evaluate_test_cost(prob, pol, res.params, cfg)
  opt = baselines.backlog_optimal_cost(std=1.6, lead_time=1, p=4.0)
  assert cost == pytest.approx(opt, rel=0.02) and cost > opt - 4 * se
  assert res.history[-1]["dev_cost"] < res.history[0]["dev_cost"]


def test_hdpo_mlp_smoke_is_finite_and_improves():
  prob = env.one_store_lost_sales(lead_time=2, p=4.0)
  pol = policies.make_mlp_policy(prob)
  cfg = hdpo.HDPOConfig(n_steps=20, learning_rate=1e-2, **{**_TINY, "eval_every": 10})
  res = hdpo.train_hdpo(prob, pol, cfg)
  devs = [h["dev_cost"] for h in res.history]
  assert all(np.isfinite(devs)) and res.best_dev < devs[0]
  # Model selection keeps the best dev parameters.
  assert res.best_dev == pytest.approx(min(devs))


def test_rollout_jit_matches_eager_and_degenerate_demand_is_finite():
  prob = env.one_store_lost_sales(lead_time=2, p=9.0)
  pol = policies.make_mlp_policy(prob)
  params = pol.init(jax.random.PRNGKey(0))
  init, demand = hdpo.sample_scenarios(prob, jax.random.PRNGKey(1), 16, 12)
  f = lambda pr, s, d: hdpo.hdpo_loss(prob, pol.apply, pr, s, d, ignore_periods=2)
  np.testing.assert_allclose(f(params, init, demand), jax.jit(f)(params, init, demand), rtol=1e-5)
  zeros = jnp.zeros_like(demand)
  g = jax.jit(jax.grad(f))(params, jnp.zeros_like(init), zeros)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))


def test_rematerialised_rollout_gradient_matches_stored_residuals():
  prob = env.one_store_lost_sales(lead_time=3, p=4.0)
  pol = policies.make_mlp_policy(prob)
  params = pol.init(jax.random.PRNGKey(3))
  init, demand = hdpo.sample_scenarios(prob, jax.random.PRNGKey(4), 32, 20)

  def loss(pr, remat):
    return hdpo.rollout_costs(prob, pol.apply, pr, init, demand, remat=remat)[5:].mean()

  g_remat = jax.jit(jax.grad(lambda pr: loss(pr, True)))(params)
  g_plain = jax.jit(jax.grad(lambda pr: loss(pr, False)))(params)
  for a, b in zip(jax.tree.leaves(g_remat), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g_remat))


def test_fixed_hindsight_scenarios_are_reused():
  prob = env.one_store_lost_sales(lead_time=1, p=4.0)
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  a = hdpo.scenarios_from_keys(prob, keys[jnp.array([0, 1])], 10)
  b = hdpo.scenarios_from_keys(prob, keys[jnp.array([1, 0])], 10)
  np.testing.assert_array_equal(a[1][:, 0], b[1][:, 1])


def test_gnn_is_store_permutation_equivariant_and_size_agnostic():
  prob = env.OneWarehouse.sample(3, 4)
  pol = policies.make_gnn_policy(prob)
  params = pol.init(jax.random.PRNGKey(0))
  state = prob.init_state(jax.random.PRNGKey(1), (2,))
  act = jax.jit(pol.apply)(params, state)
  perm = np.array([2, 0, 3, 1])
  permuted = env.OneWarehouse(means=tuple(np.asarray(prob.means)[perm]),
                              stds=tuple(np.asarray(prob.stds)[perm]),
                              p=tuple(np.asarray(prob.p)[perm]), h=tuple(np.asarray(prob.h)[perm]),
                              lead_times=tuple(int(v) for v in np.asarray(prob.lead_times)[perm]))
  act_p = policies.make_gnn_policy(permuted).apply(
      params, env.WarehouseState(state.stores[:, perm], state.warehouse))
  np.testing.assert_allclose(act_p.stores, act.stores[:, perm], rtol=1e-5)
  np.testing.assert_allclose(act_p.warehouse, act.warehouse, rtol=1e-5)
  # The same weights run on a network with a different number of stores.
  bigger = env.OneWarehouse.sample(4, 7)
  out = policies.make_gnn_policy(bigger).apply(params, bigger.init_state(jax.random.PRNGKey(2)))
  assert out.stores.shape == (7,) and bool(jnp.all(jnp.isfinite(out.stores)))
  assert bool(jnp.all(out.stores >= 0)) and 0 <= float(out.warehouse) <= bigger.warehouse_bound


@pytest.mark.slow
def test_warehouse_hdpo_gnn_smoke():
  prob = env.OneWarehouse.sample(0, 3)
  pol = policies.make_gnn_policy(prob, message_steps=1)
  cfg = hdpo.HDPOConfig(n_steps=20, learning_rate=3e-3, grad_clip=1.0, n_train_scenarios=64,
                        **{**_TINY, "batch_size": 32, "eval_every": 10, "dev_scenarios": 64})
  res = hdpo.train_hdpo(prob, pol, cfg)
  assert np.isfinite(res.best_dev) and res.best_dev <= res.history[0]["dev_cost"]


@pytest.mark.parametrize("algorithm", ["ppo", pytest.param("reinforce", marks=pytest.mark.slow)])
def test_pg_baseline_smoke(algorithm):
  prob = env.one_store_lost_sales(lead_time=1, p=4.0)
  cfg = pg.PGConfig(algorithm=algorithm, n_updates=6, num_envs=16, rollout_len=8, minibatches=2)
  init, train = pg.make_pg_train(prob, cfg, updates_per_call=3)
  state = init(jax.random.PRNGKey(0))
  state, m = train(state)
  state, m = train(state)
  assert m["train_cost"].shape == (3,)
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in m.values())
  q = pg.greedy_policy(prob).apply(state.params, jnp.zeros((4, 1)))
  assert q.shape == (4,) and bool(jnp.all((q >= 0) & (q < cfg.n_actions)))


def test_config_validation_names_fields():
  with pytest.raises(ValueError, match="batch_size"):
    hdpo.HDPOConfig(batch_size=0)
  with pytest.raises(ValueError, match="ignore_periods"):
    hdpo.HDPOConfig(periods=10, ignore_periods=10)
  with pytest.raises(ValueError, match="algorithm"):
    pg.PGConfig(algorithm="a2c")


def test_serial_policies_are_feasible_and_differentiable():
  prob = env.Serial()
  state = prob.init_state(jax.random.PRNGKey(0), (8,))
  mlp = policies.make_mlp_policy(prob)
  a = mlp.apply(mlp.init(jax.random.PRNGKey(1)), state)
  assert a.shape == (8, prob.n_echelons) and bool(jnp.all(a >= 0))
  # MLP shipments never exceed upstream on-hand (sigmoid * on-hand).
  assert bool(jnp.all(a[:, :-1] <= state[:, 1:, 0] + 1e-6))
  pol = baselines.make_echelon_stock(prob)
  params = pol.init(None)
  init, demand = hdpo.sample_scenarios(prob, jax.random.PRNGKey(2), 8, 12)
  g = jax.jit(jax.grad(lambda pr: hdpo.hdpo_loss(prob, pol.apply, pr, init, demand,
                                                 ignore_periods=2)))(params)
  assert bool(jnp.all(jnp.isfinite(g["increments"])))
  # Echelon levels are nondecreasing upstream by construction.
  levels = jnp.cumsum(jax.nn.softplus(params["increments"]))
  assert bool(jnp.all(jnp.diff(levels) > 0))
