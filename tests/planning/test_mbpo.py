"""Tests for rlpost.planning.mbpo (Dyna/MBPO loop with and without COPlanner)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.planning import coplanner as cp
from rlpost.planning import mbpo

CFG = cp.EnsembleConfig(obs_dim=2, action_dim=1, num_members=4, hidden=16)


def _policy(obs, key):
  return jax.random.uniform(key, (obs.shape[0], 1), minval=-1.0, maxval=1.0)


def _rollouts(model, start, key, *, use_coplanner, rate, num_candidates=4, length=3):
  return mbpo.model_rollouts(model, _policy, start, key, CFG, length=length,
                             use_coplanner=use_coplanner, rate=rate,
                             num_candidates=num_candidates, plan_horizon=3)


def test_single_candidate_coplanner_rollouts_equal_plain_rollouts_for_any_rate():
  model = cp.init_ensemble(CFG, jax.random.PRNGKey(0))
  start = jax.random.normal(jax.random.PRNGKey(1), (6, 2))
  key = jax.random.PRNGKey(2)
  plain, u_plain = _rollouts(model, start, key, use_coplanner=False, rate=0.0)
  for rate in (0.0, -2.0, 1.0):
    co, u_co = _rollouts(model, start, key, use_coplanner=True, rate=rate, num_candidates=1)
    for k in plain:
      np.testing.assert_array_equal(np.asarray(co[k]), np.asarray(plain[k]))
    np.testing.assert_array_equal(np.asarray(u_co), np.asarray(u_plain))


def test_rate_zero_chooses_the_highest_model_return_candidate():
  model = cp.init_ensemble(CFG, jax.random.PRNGKey(3))
  obs = jnp.array([0.2, -0.4])
  key = jax.random.PRNGKey(4)
  action = mbpo.choose_action(model, _policy, obs, key, CFG, use_coplanner=True, rate=0.0,
                              num_candidates=8)
  _, info = cp.coplanner_select_action(model, _policy, obs, key, CFG, rate=0.0, num_candidates=8)
  assert int(info["index"]) == int(jnp.argmax(info["returns"]))
  k_cand, _ = jax.random.split(key)
  candidates = _policy(jnp.broadcast_to(obs, (8, 2)), k_cand)
  np.testing.assert_allclose(action, candidates[int(jnp.argmax(info["returns"]))])


def test_conservative_penalty_reduces_uncertainty_of_chosen_actions():
  model = cp.init_ensemble(CFG, jax.random.PRNGKey(5))
  start = jax.random.normal(jax.random.PRNGKey(6), (64, 2))
  key = jax.random.PRNGKey(7)
  choose = lambda rate: jax.vmap(lambda o, k: cp.coplanner_select_action(
      model, _policy, o, k, CFG, rate=rate, num_candidates=8, horizon=3)[1])(
          start, jax.random.split(key, 64))
  base, cons = choose(0.0), choose(-5.0)
  chosen = lambda info: np.take_along_axis(np.asarray(info["uncertainty"]),
                                           np.asarray(info["index"])[:, None], 1)
  u_base, u_cons = chosen(base), chosen(cons)
  assert np.all(u_cons <= u_base + 1e-6)  # same candidates per state: a penalty never adds
  assert u_cons.mean() < u_base.mean()
  # The executed model transitions of whole rollouts are less uncertain on average as well.
  _, u_plain = _rollouts(model, start, key, use_coplanner=True, rate=0.0, num_candidates=8)
  _, u_pen = _rollouts(model, start, key, use_coplanner=True, rate=-5.0, num_candidates=8)
  assert float(jnp.mean(u_pen)) < float(jnp.mean(u_plain))


@pytest.mark.parametrize("use_coplanner", [False, True])
def test_rollouts_jit_matches_no_jit(use_coplanner):
  model = cp.init_ensemble(CFG, jax.random.PRNGKey(8))
  start = jax.random.normal(jax.random.PRNGKey(9), (5, 2))
  fn = lambda s, k: _rollouts(model, s, k, use_coplanner=use_coplanner, rate=-2.0)
  eager, u_eager = fn(start, jax.random.PRNGKey(10))
  jitted, u_jit = jax.jit(fn)(start, jax.random.PRNGKey(10))
  assert eager["observations"].shape == (15, 2) and u_eager.shape == (3, 5)
  assert not np.any(np.asarray(eager["terminals"]))
  for k in eager:
    np.testing.assert_allclose(np.asarray(jitted[k], np.float32), np.asarray(eager[k], np.float32),
                               rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(u_jit, u_eager, rtol=1e-5, atol=1e-6)


def test_degenerate_inputs_stay_finite():
  model = cp.init_ensemble(CFG, jax.random.PRNGKey(11))
  big = jnp.full((4, 2), 1e3)
  rows, u = _rollouts(model, big, jax.random.PRNGKey(12), use_coplanner=True, rate=-2.0)
  assert all(np.all(np.isfinite(np.asarray(v, np.float32))) for v in rows.values())
  assert np.all(np.isfinite(np.asarray(u)))
  # A fit on a buffer whose valid prefix is a single row does not produce NaN.
  data = {"obs": jnp.zeros((8, 2)), "action": jnp.zeros((8, 1)), "next_obs": jnp.zeros((8, 2)),
          "reward": jnp.zeros((8,))}
  params, loss = cp.fit_ensemble(model, data, CFG, jax.random.PRNGKey(13), steps=3, batch=4,
                                 size=jnp.int32(1))
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="rollout_length"):
    mbpo.MBPOConfig(rollout_length=0)
  with pytest.raises(ValueError, match="real_ratio"):
    mbpo.MBPOConfig(real_ratio=1.5)
  with pytest.raises(ValueError, match="env_name"):
    mbpo.MBPOConfig(env_name="hopper")


def test_tiny_loop_runs_and_fills_buffers():
  cfg = mbpo.MBPOConfig(env_name="point_mass", num_epochs=1, epoch_length=4,
                        initial_random_steps=8, num_members=2, model_hidden=8,
                        model_train_steps=2, model_batch_size=8, rollout_batch=4,
                        rollout_length=2, model_retain_epochs=1, updates_per_step=1,
                        batch_size=8, hidden_sizes=(8,), num_candidates=2, plan_horizon=2,
                        eval_episodes=1)
  _, init, epoch, evaluate = mbpo.make_mbpo(cfg)
  state = init(jax.random.key(0))
  assert int(state.real_size) == 8
  state, metrics = epoch(state, jax.random.key(1))
  assert int(state.real_size) == 12 and int(metrics["env_steps"]) == 12
  assert int(state.synthetic_size) == 8  # rollout_batch * rollout_length
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert np.isfinite(float(evaluate(state, jax.random.key(2))[0]))


def test_smoke_binary_coplanner(tmp_path, tmp_path_factory, monkeypatch, run_binary):
  # Share the smoke reference datasets with tests/offline (same RLPOST_CACHE folder).
  monkeypatch.setenv("RLPOST_CACHE",
                     str(tmp_path_factory.getbasetemp() / "rlpost_offline_cache"))
  stdout, summary = run_binary("model_based.py",
                               "experiments/configs/model_based.py:coplanner:smoke", tmp_path)
  (row,) = summary["rows"]
  assert row["method"] == "coplanner" and np.isfinite(row["score"])
  assert "coplanner" in stdout


@pytest.mark.slow
def test_smoke_binary_all_methods(tmp_path, tmp_path_factory, monkeypatch, run_binary):
  monkeypatch.setenv("RLPOST_CACHE",
                     str(tmp_path_factory.getbasetemp() / "rlpost_offline_cache"))
  _, summary = run_binary("model_based.py", "experiments/configs/model_based.py:smoke", tmp_path)
  assert {r["method"] for r in summary["rows"]} == {"coplanner", "mbpo", "scalezero",
                                                    "scalezero_dense"}


def test_bad_config_field_is_named(tmp_path, repo_root):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from rlpost.planning import experiment  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "mb_cfg", repo_root / "experiments" / "configs" / "model_based.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with pytest.raises(ValueError, match="unknown method"):
    module.get_config("dreamer")
  config = module.get_config("mbpo:smoke")
  config.mbpo.rollout_length = 0
  with pytest.raises(ValueError, match="config.mbpo: rollout_length"):
    experiment.run_experiment(config, tmp_path, progress=lambda s: None, show_bar=False)
  config = module.get_config("smoke")
  config.methods = ["dreamer"]
  with pytest.raises(ValueError, match="config.methods"):
    experiment.validate_config(config)
