"""Deep IWOCS on parametric CartPole (rlpost.planning.iwocs_deep)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.control import ppo
from rlpost.planning import iwocs_deep

UNC = iwocs_deep.CartPoleUncertainty(max_steps=20)


def _set(num, count, key=0, hidden=8):
  keys = jax.random.split(jax.random.key(key), num)
  params = jax.vmap(lambda k: ppo.init_actor_critic(k, 4, 2, hidden_size=hidden))(keys)
  return iwocs_deep.PolicySet(params, jnp.asarray(count, jnp.int32))


def test_env_params_keep_derived_masses_and_the_box():
  _, default = ppo.make_env("CartPole-v1")
  p = UNC.env_params(UNC.nominal)
  for name in ("length", "masspole", "force_mag", "total_mass", "polemass_length"):
    np.testing.assert_allclose(getattr(p, name), getattr(default, name), rtol=1e-6)
  p = UNC.env_params(jnp.array([1.0, 0.4, 7.0]))
  np.testing.assert_allclose(p.polemass_length, 0.4, rtol=1e-6)
  np.testing.assert_allclose(p.total_mass, 1.4, rtol=1e-6)
  xi = UNC.from_unconstrained(jnp.array([-50.0, 0.0, 50.0]))
  assert np.all(xi >= np.array(UNC.low)) and np.all(xi <= np.array(UNC.high))
  with pytest.raises(ValueError, match="names"):
    iwocs_deep.CartPoleUncertainty(names=("pole_colour",), low=(0.1,), high=(1.0,))


def test_lowest_value_rule_follows_the_lowest_critic():
  s = _set(2, 2)
  obs = jnp.array([0.01, -0.02, 0.03, 0.0])
  # Member 1's critic is shifted far down, so the set must act with member 1's actor.
  params = jax.tree.map(lambda x: x, s.params)
  params["critic"][-1]["b"] = params["critic"][-1]["b"].at[1].add(-100.0)
  both = iwocs_deep.PolicySet(params, jnp.asarray(2))
  logits1, _ = ppo.actor_critic_apply(jax.tree.map(lambda x: x[1], params), obs)
  assert int(iwocs_deep.set_action(both, obs)) == int(jnp.argmax(logits1))
  # With count = 1 only member 0 is in the set, whatever the other critics say.
  only0 = iwocs_deep.PolicySet(params, jnp.asarray(1))
  logits0, _ = ppo.actor_critic_apply(jax.tree.map(lambda x: x[0], params), obs)
  assert int(iwocs_deep.set_action(only0, obs)) == int(jnp.argmax(logits0))


def test_worst_case_of_the_nominal_policy_is_no_better_than_nominal():
  search, evaluate = iwocs_deep.make_worst_case_search(UNC, population_size=4, num_generations=2,
                                                        num_episodes=3)
  policy = _set(2, 1)
  eval_key = jax.random.key(5)
  xi, value = search(policy, jax.random.key(4), eval_key)
  nominal = evaluate(policy, UNC.nominal, eval_key)
  assert float(value) <= float(nominal) + 1e-6
  np.testing.assert_allclose(evaluate(policy, xi, eval_key), value, rtol=1e-6)
  assert np.all(np.asarray(xi) >= np.array(UNC.low) - 1e-6)
  assert np.all(np.asarray(xi) <= np.array(UNC.high) + 1e-6)
  assert 0.0 < float(value) <= UNC.max_steps


def test_evaluate_jit_matches_eager_and_handles_degenerate_models():
  evaluate = iwocs_deep.make_evaluate(UNC, num_episodes=2)
  policy = _set(2, 2)
  for xi in (UNC.nominal, jnp.array(UNC.low), jnp.array(UNC.high)):
    eager = evaluate(policy, xi, jax.random.key(0))
    jitted = jax.jit(evaluate)(policy, xi, jax.random.key(0))
    np.testing.assert_allclose(eager, jitted)
    assert np.isfinite(float(eager))


def test_iwocs_binary_smoke(run_binary, tmp_path):
  stdout, summary = run_binary("iwocs.py", "experiments/configs/iwocs.py:smoke", tmp_path)
  deep = summary["deep"]
  for name in ("nominal_ppo", "iwocs"):
    assert deep["worst_case"][name]["return"] <= deep["nominal_model_return"][name] + 1e-6
  assert len(deep["models"]) == 2 and len(summary["tabular"]["rows"]) == 1
  assert "worst" in stdout
