"""PromptPG selection policy (rlpost.llm.agents.promptpg) and its experiment binary."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.llm import tasks
from rlpost.llm.agents import common
from rlpost.llm.agents import promptpg as ppg


def _logits(seed=0, b=3, c=4):
  return jax.random.normal(jax.random.key(seed), (b, c))


def test_sampled_ids_distinct_and_greedy_is_top_k():
  logits = _logits(b=64, c=6)
  ids = np.asarray(ppg.sample_candidates(jax.random.key(1), logits, shot_number=3))
  assert ids.shape == (64, 3)
  assert all(len(set(row)) == 3 for row in ids)
  top = np.asarray(ppg.greedy_candidates(logits, shot_number=2))
  np.testing.assert_array_equal(top, np.argsort(-np.asarray(logits), axis=-1)[:, :2])
  with pytest.raises(ValueError, match="shot_number"):
    ppg.sample_candidates(jax.random.key(0), logits, shot_number=7)


def test_gumbel_top_k_matches_plackett_luce_probabilities():
  logits = jnp.array([[1.0, 0.0, -1.0]])
  keys = jax.random.split(jax.random.key(3), 20000)
  ids = np.asarray(jax.vmap(lambda k: ppg.sample_candidates(k, logits, shot_number=2)[0])(keys))
  p = np.asarray(jax.nn.softmax(logits[0]))
  for i, j in itertools.permutations(range(3), 2):
    exact = p[i] * p[j] / (1 - p[i])
    freq = np.mean((ids[:, 0] == i) & (ids[:, 1] == j))
    assert abs(freq - exact) < 0.015, (i, j, freq, exact)
  # The exact log-likelihood of the ordered draw is the Plackett-Luce one.
  lp = ppg.selection_log_probs(logits, jnp.array([[0, 2]]), exact=True)
  np.testing.assert_allclose(float(jnp.sum(lp)), np.log(p[0] * p[2] / (1 - p[0])), rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_reinforce_gradient_equals_enumerated_expected_reward_gradient(jit):
  """One shot: E_{j ~ pi}[grad of -r_j log pi_j] == -grad sum_j pi_j r_j (enumeration)."""
  theta = jax.random.normal(jax.random.key(0), (2, 5))
  reward_table = jnp.array([[1.0, -1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, -1.0, -1.0]])

  def surrogate_expectation(th):
    probs = jax.lax.stop_gradient(jax.nn.softmax(th, axis=-1))
    total = 0.0
    for j in range(th.shape[1]):
      ids = jnp.full((th.shape[0], 1), j)
      loss, _ = ppg.promptpg_loss_per_example(th, ids, reward_table[:, j])
      total = total + jnp.sum(probs[:, j] * loss)
    return total

  grad_fn = jax.grad(surrogate_expectation)
  grad_fn = jax.jit(grad_fn) if jit else grad_fn
  g_pg = grad_fn(theta)
  g_true = -jax.grad(lambda th: jnp.sum(ppg.expected_reward(th, reward_table)))(theta)
  np.testing.assert_allclose(np.asarray(g_pg), np.asarray(g_true), atol=1e-5)


def test_exact_form_is_unbiased_for_two_shots():
  """Two shots, exact Plackett-Luce form: enumeration over ordered pairs matches grad E[r]."""
  theta = jnp.array([[0.3, -0.2, 0.5, 0.0]])
  rng = np.random.default_rng(0)
  pair_reward = {pr: float(rng.choice([-1.0, 1.0])) for pr in itertools.permutations(range(4), 2)}

  def prob(th, i, j):
    p = jax.nn.softmax(th[0])
    return p[i] * p[j] / (1 - p[i])

  def expected(th):
    return sum(prob(th, i, j) * r for (i, j), r in pair_reward.items())

  def surrogate(th):
    total = 0.0
    for (i, j), r in pair_reward.items():
      w = jax.lax.stop_gradient(prob(th, i, j))
      loss, _ = ppg.promptpg_loss_per_example(th, jnp.array([[i, j]]), jnp.array([r]), exact=True)
      total = total + w * loss[0]
    return total

  np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(surrogate))(theta)),
                             -np.asarray(jax.jit(jax.grad(expected))(theta)), atol=1e-5)


def test_reward_sign_moves_selected_log_prob():
  logits = _logits()
  ids = jnp.array([[1], [2], [0]])
  grad = jax.jit(jax.grad(lambda z, r: jnp.sum(ppg.promptpg_loss_per_example(z, ids, r)[0])))
  for sign in (1.0, -1.0):
    g = grad(logits, sign * jnp.ones(3))
    new = ppg.selection_log_probs(logits - 0.1 * g, ids)
    old = ppg.selection_log_probs(logits, ids)
    assert bool(jnp.all((new - old) * sign > 0))


def test_degenerate_inputs_are_finite():
  # Single candidate, all-correct rewards, a near-one-hot policy with the exact form.
  one = jnp.zeros((3, 1))
  loss, _ = ppg.promptpg_loss_per_example(one, jnp.zeros((3, 1), jnp.int32), jnp.ones(3))
  assert np.all(np.isfinite(loss)) and np.allclose(loss, 0.0)
  peaked = jnp.array([[80.0, -80.0, -80.0]])
  loss, _ = ppg.promptpg_loss_per_example(peaked, jnp.array([[0, 1]]), jnp.ones(1), exact=True)
  g = jax.grad(lambda z: ppg.promptpg_loss_per_example(
      z, jnp.array([[0, 1]]), jnp.ones(1), exact=True)[0].sum())(peaked)
  assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))
  assert np.asarray(ppg.random_selection(0, 4, shot_number=1, seed=0)).shape == (0, 1)


def test_encoder_trains_only_the_linear_and_policy_step_jit_matches_eager():
  tok = tasks.load_tokenizer()
  emb = jax.random.normal(jax.random.key(0), (len(tok), 8))
  graphdef, params, frozen = ppg.init_policy(tok, emb, out_dim=4, seed=0)
  assert {tuple(x.shape) for x in jax.tree_util.tree_leaves(params)} == {(8, 4), (4,)}
  recs = tasks.generate_dataset(5, seed=0, level=1)
  c_tok, c_mask = ppg.encode_texts(tok, [ppg.candidate_text(r) for r in recs], max_len=32)
  q_tok, q_mask = ppg.encode_texts(tok, [ppg.query_text(r) for r in recs[:2]], max_len=32)
  import optax
  opt = optax.adam(1e-3)
  step = ppg.make_policy_step(graphdef, frozen, opt)
  args = (q_tok, q_mask, c_tok, c_mask, jnp.array([[0], [3]]), jnp.array([1.0, -1.0]))
  p1, _, m1 = step(params, opt.init(params), *args)
  with jax.disable_jit():
    p2, _, m2 = step(params, opt.init(params), *args)
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # The frozen embeddings are not in the trainable state.
  assert isinstance(nnx.merge(graphdef, params, frozen).embeddings, ppg.FrozenEmbedding)


def test_fewshot_prompt_and_target_follow_the_example_style():
  recs = tasks.generate_dataset(2, seed=0, level=1, families=("sum",))
  ex = ppg.with_style(recs[0], "terse")
  assert ppg.style_of(ex) == "terse"
  prompt = ppg.fewshot_prompt([ex], recs[1], with_table=False)
  assert prompt.startswith("Question:") and prompt.endswith("Answer:")
  assert recs[1].table in prompt and recs[0].table not in prompt
  assert ppg.fewshot_target([ex], recs[1]) == tasks.format_target(recs[1], "terse")
  batch = common.make_text_batch(tasks.load_tokenizer(), [prompt],
                                 [ppg.fewshot_target([ex], recs[1])], prompt_len=112,
                                 response_len=24)
  assert batch["loss_mask"].sum() > 0 and batch["tokens"].shape == (1, 136)


def test_bad_config_fields_are_named(repo_root, tmp_path):
  import importlib.util
  from rlpost.llm.agents import promptpg_experiment
  spec = importlib.util.spec_from_file_location("ppg_cfg", repo_root / "experiments" / "configs" /
                                                "promptpg.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  c.policy.shot_number = 99
  with pytest.raises(ValueError, match="policy.shot_number"):
    promptpg_experiment.run(c, tmp_path, progress=False)
  c = mod.get_config("smoke")
  c.task.source = "bogus"
  with pytest.raises(ValueError, match="task.source"):
    promptpg_experiment.run(c, tmp_path, progress=False)


def test_tabmwp_pools_load(tabmwp_dir, repo_root):
  import importlib.util
  from rlpost.llm.agents import promptpg_experiment
  spec = importlib.util.spec_from_file_location("ppg_cfg2", repo_root / "experiments" / "configs" /
                                                "promptpg.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke_tabmwp")
  c.task.tabmwp_path = str(tabmwp_dir / "problems_dev1k.json")
  pools = promptpg_experiment._records(c)  # pylint: disable=protected-access
  cands, train = pools["draw"](0)
  assert len(pools["eval"]) == c.eval.size and len(cands) == c.policy.num_candidates
  assert not {r.pid for r in pools["eval"]} & {r.pid for r in cands + train}


def test_smoke_binary(run_binary, tmp_path):
  stdout, summary = run_binary("promptpg.py", "experiments/configs/promptpg.py:smoke", tmp_path)
  assert "PromptPG - random" in stdout
  assert {"promptpg_accuracy_mean", "random_accuracy_mean", "promptpg_accuracy_std",
          "random_accuracy_std"} <= set(summary)
  assert len(summary["results"]["promptpg"]["per_seed"]) == 2
