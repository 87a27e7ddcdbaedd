"""Issue 6 experiments: the duration bandit, the multi-objective template task and smoke runs of
experiments/{selection,duration_bandit,multiobjective}.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.llm import selection_toys as st

ARMS = dict(durations=(1.0, 4.0), rewards=(1.0, 2.0))


def test_duration_bandit_unweighted_goes_fast_weighted_goes_slow():
  out_u = st.run_duration_bandit(seed=0, weighted=False, num_updates=150, **ARMS)
  out_w = st.run_duration_bandit(seed=0, weighted=True, num_updates=150, **ARMS)
  assert out_u["arm"] == 0 and out_u["probs"][0] > 0.8  # fast arm (best reward rate)
  assert out_w["arm"] == 1 and out_w["probs"][1] > 0.8  # slow arm (best reward)
  # The completed batches are biased toward the fast arm relative to the policy.
  assert out_w["arm_frac_trace"][:20, 0].mean() > 0.5


def test_duration_bandit_equal_durations_make_weighting_a_no_op():
  a = st.run_duration_bandit(seed=1, weighted=False, durations=(2.0, 2.0), rewards=(1.0, 1.5),
                             num_updates=20)
  b = st.run_duration_bandit(seed=1, weighted=True, durations=(2.0, 2.0), rewards=(1.0, 1.5),
                             num_updates=20)
  np.testing.assert_allclose(a["prob_trace"], b["prob_trace"], rtol=1e-5)
  with pytest.raises(ValueError, match="durations"):
    st.run_duration_bandit(seed=0, weighted=True, durations=(1.0, 0.0), rewards=(1.0, 2.0))


TEMPLATES = np.asarray([[0.9, 60.0, 0.0], [0.8, 40.0, 1.0], [0.6, 20.0, 1.0], [0.3, 10.0, 0.0]],
                       np.float32)


@pytest.mark.parametrize("method", st.MO_METHODS)
def test_multiobjective_run_stays_in_the_template_hull_without_nan(method):
  run = st.make_mo_run(method, TEMPLATES, num_queries=2, group_size=4, steps=6,
                       learning_rate=0.5, lam=5.0)
  final, points, weights = run(jax.random.key(0), jnp.asarray([0.4, 0.3, 0.3]))
  final, points, weights = map(np.asarray, (final, points, weights))
  assert np.all(np.isfinite(points)) and np.all(np.isfinite(weights))
  assert points.shape == (6, 3)
  assert TEMPLATES[:, 1].min() - 1e-4 <= final[1] <= TEMPLATES[:, 1].max() + 1e-4
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  if method != "gradient":  # only the gradient method moves the weights
    np.testing.assert_allclose(weights, np.broadcast_to([0.4, 0.3, 0.3], weights.shape),
                               rtol=1e-6)


def test_multiobjective_linear_weights_pick_the_favoured_objective():
  run = st.make_mo_run("linear", TEMPLATES, num_queries=4, group_size=8, steps=80,
                       learning_rate=1.0, lam=5.0)
  acc_first = np.asarray(run(jax.random.key(0), jnp.asarray([1.0, 0.0, 0.0]))[0])
  short_first = np.asarray(run(jax.random.key(0), jnp.asarray([0.0, 1.0, 0.0]))[0])
  assert acc_first[0] > short_first[0] and short_first[1] < acc_first[1]


def test_front_hypervolume_and_pareto_mask():
  pts = np.asarray([[1.0, 5.0, 1.0], [0.5, 2.0, 1.0], [0.4, 6.0, 0.5]], np.float32)
  ref = np.asarray([0.0, 10.0, 0.0], np.float32)
  # Union of two boxes: 1*5*1 + 0.5*8*1 - overlap 0.5*5*1 = 6.5 (the third point is dominated).
  assert st.front_hypervolume(pts, ref) == pytest.approx(6.5, rel=1e-5)
  np.testing.assert_array_equal(st.pareto_mask(pts), [True, True, False])


def test_duration_bandit_binary_smoke(run_binary, tmp_path):
  out, summary = run_binary("duration_bandit.py", "experiments/configs/duration_bandit.py:smoke",
                            tmp_path / "db")
  assert set(summary["arm_choice"]) == {"unweighted", "duration_weighted"}
  assert "duration_weighted" in out


def test_multiobjective_binary_smoke(run_binary, tmp_path):
  _, summary = run_binary("multiobjective.py", "experiments/configs/multiobjective.py:smoke",
                          tmp_path / "mo")
  for m in st.MO_METHODS:
    assert np.isfinite(summary["methods"][m]["hypervolume_mean"])


@pytest.mark.slow
def test_selection_binary_smoke(run_binary, tmp_path):
  _, summary = run_binary("selection.py", "experiments/configs/selection.py:smoke",
                          tmp_path / "sel")
  assert set(summary["methods"]) == {"grpo", "d3s", "vade", "v0", "curriculum"}
  assert set(summary["mechanism"]) == {"d3s", "vade", "v0", "curriculum"}
  for run in summary["runs"]:
    assert np.all(np.isfinite(run["grad_norm_per_step"]))


def test_selection_config_errors_name_the_field(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from rlpost.llm import selection_experiment  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / "selection.py"
  spec = importlib.util.spec_from_file_location("selection_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  c.selection.methods = ("grpo", "bogus")
  with pytest.raises(ValueError, match="selection.methods"):
    selection_experiment.run_selection(c, tmp_path / "x", progress=False)
  c = mod.get_config("smoke")
  c.selection.eval_per_level = 0
  with pytest.raises(ValueError, match="selection.eval_per_level"):
    selection_experiment.run_selection(c, tmp_path / "y", progress=False)
  assert not (tmp_path / "x").exists()
