"""LPO / TA-LPO / DPO drift properties (arXiv 2210.05639, arXiv 2402.05828)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core
from rlpost.control import ppo
from rlpost.meta import drift as drift_lib

_PROGRESS = ppo.Progress(frac=jnp.float32(0.3), log_lifetime=jnp.log(jnp.float32(100.0)))


def _grid():
  r = jnp.exp(jnp.linspace(-3.0, 3.0, 41))
  a = jnp.linspace(-4.0, 4.0, 17)
  rr, aa = jnp.meshgrid(r, a)
  return rr.ravel(), aa.ravel()


def _learned(time_aware, seed, ppo_init):
  params = drift_lib.init_lpo_params(jax.random.key(seed), time_aware=time_aware, output_scale=3.0)
  fn = drift_lib.ta_lpo_drift if time_aware else drift_lib.lpo_drift
  return functools.partial(fn, ppo_init=ppo_init), params


@pytest.mark.parametrize("time_aware", [False, True])
@pytest.mark.parametrize("ppo_init", [False, True])
def test_learned_drift_nonnegative_and_zero_at_ratio_one(time_aware, ppo_init):
  fn, _ = _learned(time_aware, 0, ppo_init)

  @jax.jit
  def check(params):
    r, a = _grid()
    ones = jnp.ones_like(a)
    grad_r = jax.vmap(jax.grad(lambda x, y: fn(params, x, y, _PROGRESS)))(ones, a)
    return fn(params, r, a, _PROGRESS), fn(params, ones, a, _PROGRESS), grad_r

  for seed in range(3):
    d, d1, grad_r = check(_learned(time_aware, seed, ppo_init)[1])
    assert bool(jnp.all(d >= 0.0))
    assert float(jnp.max(d)) > 1e-3  # the random net is not trivially zero
    np.testing.assert_array_equal(np.asarray(d1), 0.0)
    # D vanishes in a neighbourhood of r = 1, so its r-derivative there is 0.
    np.testing.assert_array_equal(np.asarray(grad_r), 0.0)


def test_ta_lpo_at_zero_progress_equals_lpo_with_first_rows():
  ta_params = drift_lib.init_lpo_params(jax.random.key(1), time_aware=True, output_scale=3.0)
  lpo_params = {"w_in": ta_params["w_in"][:drift_lib.LPO_NUM_FEATURES],
                "w_out": ta_params["w_out"]}
  r, a = _grid()
  zero = ppo.Progress(frac=jnp.float32(0.0), log_lifetime=jnp.float32(3.0))
  np.testing.assert_allclose(drift_lib.ta_lpo_drift(ta_params, r, a, zero),
                             drift_lib.lpo_drift(lpo_params, r, a), rtol=1e-6, atol=1e-7)
  # ... and the progress input matters away from 0.
  late = ppo.Progress(frac=jnp.float32(0.9), log_lifetime=jnp.float32(3.0))
  assert not np.allclose(drift_lib.ta_lpo_drift(ta_params, r, a, late),
                         drift_lib.lpo_drift(lpo_params, r, a))


def test_lpo_with_zero_output_and_ppo_init_is_ppo_drift():
  params = drift_lib.init_lpo_params(jax.random.key(0), output_scale=0.0)
  r, a = _grid()
  d = drift_lib.lpo_drift(params, r, a, ppo_init=True)
  ref = jax.nn.relu(drift_lib.ppo_drift(None, r, a, None) - drift_lib.DRIFT_SHIFT)
  np.testing.assert_allclose(d, ref, atol=1e-7)


def test_ppo_drift_objective_equals_core_ppo_clip():
  key = jax.random.key(3)
  logp = jax.random.normal(key, (64,)) * 0.5 - 1.0
  old_logp = logp + 0.4 * jax.random.normal(jax.random.key(4), (64,))
  adv = jax.random.normal(jax.random.key(5), (64,))
  mask = jnp.ones((64,), bool)
  ref, _ = core.ppo_clip_loss_per_token(logp, old_logp, adv, mask, clip_low=0.2, clip_high=0.2)
  ratio = jnp.exp(logp - old_logp)
  mine = ppo.drift_policy_loss_per_sample(ratio, adv, drift_lib.ppo_drift(None, ratio, adv, None))
  np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-6)


def test_dpo_drift_closed_form_and_properties():
  r, a = _grid()
  d = drift_lib.dpo_drift(None, r, a)
  assert bool(jnp.all(d >= 0.0))
  np.testing.assert_array_equal(np.asarray(drift_lib.dpo_drift(None, jnp.ones_like(a), a)), 0.0)
  # Hand-computed points: A = 1, r = 3 -> (2 - 2 tanh(1)); A = -1, r = e -> ReLU(-1 + .6 tanh(1/.6)).
  got = drift_lib.dpo_drift(None, jnp.array([3.0, np.e, 0.5]), jnp.array([1.0, -1.0, -2.0]))
  x3 = np.log(0.5) * -2.0
  want = [2.0 - 2.0 * np.tanh(1.0), 0.0, x3 - 0.6 * np.tanh(x3 / 0.6)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match="alpha"):
    drift_lib.dpo_drift(None, r, a, alpha=0.0)


@pytest.mark.parametrize("name", ["lpo", "ta_lpo", "dpo"])
def test_drift_jit_matches_eager(name):
  r, a = _grid()
  if name == "dpo":
    fn, params = drift_lib.dpo_drift, None
  else:
    fn, params = _learned(name == "ta_lpo", 0, True)
  eager = fn(params, r, a, _PROGRESS)
  jitted = jax.jit(fn)(params, r, a, _PROGRESS)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lpo", "ta_lpo", "dpo"])
def test_drift_degenerate_ratios_are_finite(name):
  r = jnp.array([0.0, 1e-30, 1e-8, 1.0, 1e8, jnp.inf])
  a = jnp.array([-1e3, 0.0, 5.0, 0.0, -5.0, 1e3])
  if name == "dpo":
    fn, params = drift_lib.dpo_drift, None
  else:
    fn, params = _learned(name == "ta_lpo", 0, True)
  d = fn(params, r, a, _PROGRESS)
  assert bool(jnp.all(jnp.isfinite(d[:-1])))  # r = inf with ppo_init can only give inf, not NaN
  assert not bool(jnp.any(jnp.isnan(d)))
  g = jax.grad(lambda x: jnp.sum(fn(params, x, a[:5], _PROGRESS)))(r[:5])
  assert bool(jnp.all(jnp.isfinite(g)))


def test_wrong_param_shape_names_the_problem():
  params = drift_lib.init_lpo_params(jax.random.key(0), time_aware=True)
  with pytest.raises(ValueError, match="input features"):
    drift_lib.lpo_drift(params, jnp.ones(3), jnp.ones(3))


def test_switch_drift_selects_branch_under_vmap():
  lpo = _learned(False, 0, True)
  fns = [drift_lib.ppo_drift, drift_lib.dpo_drift, lpo[0]]
  params = (None, None, lpo[1])
  switch = drift_lib.switch_drift(fns)
  r, a = _grid()
  out = jax.vmap(lambda i: switch((i, params), r, a, _PROGRESS))(jnp.arange(3))
  for i, fn in enumerate(fns):
    np.testing.assert_allclose(out[i], fn(params[i], r, a, _PROGRESS), rtol=1e-6, atol=1e-7)
