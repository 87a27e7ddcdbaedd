"""Retroformer objective, multi-attempt task and retrospective LM (rlpost.llm.agents)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlpost.llm import tasks
from rlpost.llm.agents import retroformer as rf
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import init_model


def test_rating_is_the_improvement_and_negative_when_worse():
  r = rf.reflection_rating(jnp.array([0.0, 1.0, 0.0, 1.0]), jnp.array([1.0, 0.0, 0.0, 1.0]))
  np.testing.assert_array_equal(np.asarray(r), [1.0, -1.0, 0.0, 0.0])


def test_kl_term_is_zero_at_the_reference_and_positive_elsewhere():
  ref = rf.reflection_log_probs(jnp.array([[0.1, -0.3, 1.0, 0.0]]))
  loss, aux = rf.retroformer_loss_per_example(ref, ref, jnp.array([2]), jnp.zeros(1), kl_coef=1.0)
  np.testing.assert_allclose(np.asarray(aux["kl"]), 0.0, atol=1e-7)
  np.testing.assert_allclose(np.asarray(loss), 0.0, atol=1e-7)
  other = rf.reflection_log_probs(jnp.array([[2.0, -0.3, 1.0, 0.0]]))
  _, aux = rf.retroformer_loss_per_example(other, ref, jnp.array([2]), jnp.zeros(1))
  p, q = np.exp(np.asarray(other[0])), np.exp(np.asarray(ref[0]))
  np.testing.assert_allclose(float(aux["kl"][0]), np.sum(p * np.log(p / q)), rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_constant_ratings_give_zero_pg_gradient_and_beta0_is_reinforce(jit):
  logits = jax.random.normal(jax.random.key(0), (3, 4))
  actions = jnp.array([0, 1, 3, 3, 2, 0])

  def loss(z, ratings, kl_coef):
    logp = jnp.repeat(rf.reflection_log_probs(z), 2, axis=0)
    adv = rf.group_advantages(ratings, 2)
    return jnp.mean(rf.retroformer_loss_per_example(logp, jax.lax.stop_gradient(logp), actions,
                                                    adv, kl_coef=kl_coef)[0])

  grad = jax.grad(loss)
  grad = jax.jit(grad, static_argnums=2) if jit else grad
  g = grad(logits, jnp.ones(6), 0.0)  # constant reward: zero leave-one-out advantage
  np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-7)
  ratings = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
  g = grad(logits, ratings, 0.0)
  adv = rf.group_advantages(ratings, 2)
  ref = jax.grad(lambda z: -jnp.mean(adv * jnp.take_along_axis(
      jnp.repeat(jax.nn.log_softmax(z), 2, axis=0), actions[:, None], axis=1)[:, 0]))(logits)
  np.testing.assert_allclose(np.asarray(g), np.asarray(ref), atol=1e-6)


def test_degenerate_inputs_are_finite():
  # A single reflection, a peaked policy, all-equal ratings, a group of two identical draws.
  one = rf.reflection_log_probs(jnp.zeros((2, 1)))
  loss, _ = rf.retroformer_loss_per_example(one, one, jnp.zeros(2, jnp.int32), jnp.zeros(2))
  assert np.all(np.isfinite(loss))
  peaked = rf.reflection_log_probs(jnp.array([[300.0, -300.0, 0.0, 0.0]]))
  g = jax.grad(lambda z: rf.retroformer_loss_per_example(
      rf.reflection_log_probs(z), peaked, jnp.array([1]), jnp.ones(1))[0].sum())(
          jnp.array([[300.0, -300.0, 0.0, 0.0]]))
  assert np.all(np.isfinite(g))
  assert np.all(np.asarray(rf.group_advantages(jnp.zeros(4), 2)) == 0.0)


def test_task_rule_and_targets():
  probs = [rf.sample_problem(seed=0, split="test", index=i) for i in range(30)]
  assert all(p.record.split == "test" for p in probs)
  for p in probs:
    assert tasks.accuracy_reward(rf.actor_target(p, p.op), p.record) == 1.0
    # The same topic always has the same hidden operation.
    noun = p.record.question.split()[3]
    assert rf.hidden_op(noun) == p.op
  wrong = [p for p in probs if rf.apply_op(p.op, p.rows[0][1], p.rows[1][1]) !=
           rf.apply_op("add", p.rows[0][1], p.rows[1][1])]
  assert all(tasks.accuracy_reward(rf.actor_target(p, "add"), p.record) == 0.0 for p in wrong)
  text = rf.actor_prompt(probs[0], previous="7", reflection=rf.HINTS["add"])
  assert "Previous answer: 7\nReflection: Add the two numbers.\nAnswer:" in text
  assert len(set(rf.hidden_op(t[0]) for t in tasks.synthetic.THEMES)) == len(rf.OPS)


def test_retro_lm_policy_jit_matches_eager_and_step_is_finite():
  tok = tasks.load_tokenizer()
  cfg = ModelConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                    tie_word_embeddings=True)
  graphdef, params = nnx.split(init_model(cfg, seed=0))
  hints = [rf.HINTS[o] for o in rf.OPS]
  probs = [rf.sample_problem(seed=0, split="train", index=i) for i in range(2)]
  prompts = [rf.reflection_prompt(p, rf.actor_target(p, "add"), 0.0) for p in probs]
  batch = {k: jnp.asarray(v) for k, v in rf.encode_reflection_batch(
      tok, prompts, hints, prompt_len=104).items()}
  opt = optax.adam(1e-2)
  logp_fn, step = rf.make_reflection_fns(graphdef, opt, num_hints=4, group_size=2, kl_coef=0.1)
  lp = logp_fn(params, batch)
  with jax.disable_jit():
    lp_eager = rf.reflection_logp_all(graphdef, params, batch, 4)
  np.testing.assert_allclose(np.asarray(lp), np.asarray(lp_eager), atol=1e-5)
  np.testing.assert_allclose(np.exp(np.asarray(lp)).sum(-1), 1.0, rtol=1e-5)
  actions = jnp.array([0, 1, 2, 3])  # prompt 0: reflection 0 rated 1, reflection 1 rated 0
  new, _, met = step(params, opt.init(params), batch, lp, actions, jnp.array([1.0, 0.0, 0.0, 0.0]))
  assert all(np.isfinite(float(v)) for v in met.values())
  # Rated-up reflection 0 of prompt 0 becomes more likely.
  assert float(logp_fn(new, batch)[0, 0]) > float(lp[0, 0])


def test_bad_config_fields_are_named(repo_root, tmp_path):
  import importlib.util
  from rlpost.llm.agents import retroformer_experiment
  spec = importlib.util.spec_from_file_location("rf_cfg", repo_root / "experiments" / "configs" /
                                                "retroformer.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  c.retro.group_size = 1
  with pytest.raises(ValueError, match="retro.group_size"):
    retroformer_experiment.run(c, tmp_path, progress=False)
  c = mod.get_config("smoke")
  c.actor.hint_prob = 1.5
  with pytest.raises(ValueError, match="actor.hint_prob"):
    retroformer_experiment.run(c, tmp_path, progress=False)


def test_smoke_binary(run_binary, tmp_path):
  stdout, summary = run_binary("retroformer.py", "experiments/configs/retroformer.py:smoke",
                               tmp_path)
  assert "Retroformer - no-reflection retry" in stdout
  assert {"retroformer_two_attempt_success", "no_reflection_two_attempt_success"} <= set(summary)
  assert set(summary["results"]) >= {"no_reflection", "retroformer", "oracle_hint"}
