"""DMLR (arXiv 2512.12623): ES gradient, sigma schedule, confidence, retrieval, the test-time loop
on a tiny random decoder, the inputs_embeds path of the model, and the experiment binary."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.llm.agents import dmlr
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import causal_mask
from rlpost.llm.model import init_model
from rlpost.llm.model import positions_from_mask


def _tiny():
  cfg = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
  return init_model(cfg, seed=3)


def _batch():
  toks = np.array([[0, 0, 1, 5, 6, 7, 8, 9], [1, 4, 5, 6, 7, 8, 9, 10]], np.int32)
  mask = (np.arange(8)[None] >= np.array([[2], [0]])).astype(np.int32)
  table = np.zeros_like(mask, bool)
  table[:, 3:6] = True
  return (jnp.asarray(toks), jnp.asarray(mask), jnp.asarray(table),
          jnp.asarray([11, 12, 13], jnp.int32))


@pytest.mark.parametrize("baseline", [False, True])
def test_dmlr_es_gradient_matches_quadratic_gradient(baseline):
  a = jnp.array([1.0, 2.0, 0.5])
  c = jnp.array([0.3, -0.2, 0.1])
  reward = lambda x: -jnp.sum(a * (x - c) ** 2, axis=-1) + 1.0
  theta = jnp.array([0.5, 0.4, -0.6])
  est = jax.jit(lambda k: dmlr.gaussian_es_gradient(reward, theta, k, sigma=0.3,
                                                    num_samples=400_000, baseline=baseline)[0])
  true = jax.grad(reward)(theta)  # the Gaussian-smoothed quadratic has the same gradient
  np.testing.assert_allclose(est(jax.random.key(0)), true, atol=0.06)


def test_dmlr_sigma_schedule_shrinks():
  s = np.asarray(dmlr.sigma_at(jnp.arange(20)))
  np.testing.assert_allclose(s, 20.0 * 0.95 ** np.arange(20), rtol=1e-6)
  assert np.all(np.diff(s) < 0)


def test_dmlr_confidence_peaked_beats_uniform_and_ignores_permutation():
  uniform = jnp.zeros((50,))
  peaked = jnp.zeros((50,)).at[7].set(8.0)
  assert dmlr.topk_confidence(peaked) > dmlr.topk_confidence(uniform)
  np.testing.assert_allclose(dmlr.topk_confidence(uniform), np.log(50.0), rtol=1e-6)
  perm = jax.random.permutation(jax.random.key(1), 50)
  z = jax.random.normal(jax.random.key(2), (50,))
  np.testing.assert_allclose(dmlr.topk_confidence(z), dmlr.topk_confidence(z[perm]), rtol=1e-6)


def test_dmlr_retrieval_picks_most_similar_table_tokens():
  context = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [1.0, 0.05], [-1.0, 0.0]])
  mask = jnp.array([True, True, True, False, True])  # row 3 is the closest but not a table token
  queries = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  idx, valid = dmlr.retrieve_context(queries, context, mask, num_retrieved=2)
  assert idx.tolist() == [[0, 2], [1, 2]] and bool(valid.all())
  # jit agrees; degenerate inputs (zero query, no table tokens) give finite, flagged picks
  idx_j, _ = jax.jit(dmlr.retrieve_context, static_argnames="num_retrieved")(
      queries, context, mask, num_retrieved=2)
  assert idx_j.tolist() == idx.tolist()
  _, valid0 = dmlr.retrieve_context(jnp.zeros((1, 2)), context, jnp.zeros((5,), bool),
                                    num_retrieved=2)
  assert not bool(valid0.any())


def test_dmlr_inputs_embeds_path_equals_token_path():
  model = _tiny()
  toks, mask, _, _ = _batch()
  graphdef, params = nnx.split(model)

  @jax.jit
  def both(params):
    m = nnx.merge(graphdef, params)
    pos, cm = positions_from_mask(mask), causal_mask(mask)
    emb = jnp.take(m.embed_tokens[...], toks, axis=0)
    return m(toks, pos, cm)[0], m(None, pos, cm, inputs_embeds=emb)[0]

  ref, got = both(params)
  np.testing.assert_array_equal(np.asarray(ref), np.asarray(got))


@pytest.mark.slow  # compiles the Sampler's prefill/decode too (~3 compiles)
def test_dmlr_greedy_decode_of_plain_prompt_matches_sampler():
  from rlpost.llm.sampler import Sampler  # pylint: disable=g-import-not-at-top
  model = _tiny()
  toks, mask, _, suffix = _batch()
  embeds, full_mask = dmlr.assemble_inputs(model.embed_tokens[...], toks, mask, suffix, None,
                                           None, None, None)
  out_toks, out_mask, conf = dmlr.greedy_decode(model, embeds, full_mask, max_new_tokens=6,
                                                stop_id=2)
  prompt = jnp.concatenate([toks, jnp.broadcast_to(suffix, (2, 3))], axis=1)
  ref = Sampler(model).generate(prompt, full_mask, max_new_tokens=6, temperature=0.0,
                                stop_ids=(2,), seed=0)
  np.testing.assert_array_equal(np.asarray(out_toks), np.asarray(ref.response_tokens)[:, :6])
  np.testing.assert_array_equal(np.asarray(out_mask), np.asarray(ref.response_mask)[:, :6])
  assert np.all(np.isfinite(np.asarray(conf)))


def test_dmlr_optimize_jit_agrees_tracks_best_and_survives_degenerate_input():
  model = _tiny()
  toks, mask, table, suffix = _batch()
  kw = dict(num_think_tokens=2, sigma=0.5, learning_rate=0.01, num_steps=3,
            injection_start_step=1, injection_interval=1, insert_stride=1, num_retrieved=2)
  eager = dmlr.dmlr_optimize(model, toks, mask, table, suffix, jax.random.key(0), **kw)
  opt, _ = dmlr.make_runner(model, layout_kwargs=kw, max_new_tokens=4, stop_id=2, pad_id=0)
  _, params = nnx.split(model)
  jitted = opt(params, toks, mask, table, suffix, jax.random.key(0))
  np.testing.assert_allclose(eager.best_reward, jitted.best_reward, rtol=1e-5)
  np.testing.assert_allclose(eager.rewards, jitted.rewards, rtol=1e-5)
  # best reward = max(initial, every step's reward); retrieval only points at table tokens
  expect = np.maximum(np.asarray(eager.initial_reward), np.asarray(eager.rewards).max(0))
  np.testing.assert_allclose(eager.best_reward, expect, rtol=1e-6)
  on = np.asarray(eager.best_retrieved_on)
  idx = np.asarray(eager.best_retrieved_idx)
  assert np.all(np.asarray(table)[np.arange(2)[:, None, None], idx][on])
  # no table tokens at all: zero init, retrieval disabled, everything finite
  degenerate = dmlr.dmlr_optimize(model, toks, mask, jnp.zeros_like(table), suffix,
                                  jax.random.key(0), **kw)
  assert np.all(np.isfinite(np.asarray(degenerate.rewards)))
  assert not bool(np.asarray(degenerate.best_retrieved_on).any())


def test_dmlr_encode_batch_splits_prompt_and_marks_table(repo_root):
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  tok = tasks.load_tokenizer()
  recs = tasks.generate_dataset(3, split="test", level=1, families=("sum", "difference"),
                                style="rows", unique=True)
  batch = dmlr.encode_batch(tok, recs, prefix_len=64)
  for i, r in enumerate(recs):
    keep = batch.prefix_mask[i].astype(bool)
    ids = batch.prefix_tokens[i][keep].tolist()
    full = [tok.bos_token_id] + tok(tasks.format_prompt(r), add_special_tokens=False)["input_ids"]
    assert ids + batch.suffix_tokens.tolist() == full
    table_text = tok.decode(batch.prefix_tokens[i][batch.table_mask[i]].tolist())
    assert table_text.replace(" ", "") == r.table.replace(" ", "")
  with pytest.raises(ValueError, match="prefix_len"):
    dmlr.encode_batch(tok, recs, prefix_len=8)


def test_dmlr_bad_config_names_field(tmp_path, repo_root):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from rlpost.llm.agents import dmlr_experiment  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("dmlr_cfg",
                                                repo_root / "experiments/configs/dmlr.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  c.dmlr.sigma = -1.0
  with pytest.raises(ValueError, match="dmlr.sigma"):
    dmlr_experiment.run_experiment(c, tmp_path)
  c = mod.get_config("smoke")
  c.num_problems = 5
  with pytest.raises(ValueError, match="num_problems"):
    dmlr_experiment.run_experiment(c, tmp_path)


def test_dmlr_smoke_binary(run_binary, tmp_path):
  stdout, summary = run_binary("dmlr.py", "experiments/configs/dmlr.py:smoke", tmp_path / "run")
  for key in ("plain_accuracy", "dmlr_accuracy", "init_accuracy", "baseline_accuracy",
              "initial_reward", "dmlr_reward", "dmlr_answer_confidence"):
    assert key in summary, key
  assert summary["dmlr_reward"] >= summary["initial_reward"]
  assert "DMLR best T" in stdout
