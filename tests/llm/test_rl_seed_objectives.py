"""Issue-5 objectives inside the LLM RL loop: each preset trains, its extra inputs are right, and
the seeded comparison writes one summary entry per objective with its mechanism metrics."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlpost import core
from rlpost.llm import compare
from rlpost.llm import rl
from rlpost.llm import rl_extras
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import hidden_states
from rlpost.llm.model import init_model
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer
from rlpost.llm.tasks import make_reward_fn

PROMPT_LEN = 64
TINY = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
ISSUE5 = ("dcpo", "dcpo_script", "bnpo", "clip_cov", "kl_cov", "kl_cov_verl", "dist_po", "adora",
          "empg", "aepo", "oblr_po", "capo", "dr_capo")
# Same code path as a default-run preset (only hyperparameters differ): slow-marked.
_TWINS = {"dcpo_script", "kl_cov_verl", "dr_capo"}


@pytest.fixture(scope="module")
def setup():
  tok = load_tokenizer()
  graphdef, params = nnx.split(init_model(TINY, seed=0))
  pool = generate_dataset(24, split="train", level=1, families=("sum", "difference"))
  return tok, graphdef, params, pool


def _trainer(setup, name, *, lr=1e-2, reward_fn=None, **rl_kw):
  tok, graphdef, params, pool = setup
  kw = dict(batch_size=8, group_size=4, micro_batch_size=8, max_new_tokens=12,
            learning_rate=lr, mechanism_metrics=True)
  kw.update(rl_kw)
  cfg = rl.RLConfig(**kw)
  obj = rl.make_objective(name, max_new_tokens=cfg.max_new_tokens)
  opt = train.make_optimizer(learning_rate=lr or 1e-2)
  if obj.config.advantage == "oblr":
    opt = optax.chain(opt, core.oblr_scale())
  tr = rl.RLTrainer(graphdef=graphdef, params=params, tokenizer=tok, objective=obj, rl_config=cfg,
                    optimizer=opt, pool=pool, data_seed=0, prompt_len=PROMPT_LEN,
                    reward_fn=reward_fn or make_reward_fn(), ref_params=params)
  init = {"num_prompts": len(pool)} if obj.config.advantage == "dcpo" else {}
  state = train.init_train_state(params, opt, seed=0, objective_state=obj.init_state(**init))
  return tr, state


def _half_right(texts, recs):  # a reward with spread in every group (first half of each group)
  del recs
  return np.asarray([float(i % 4 < 2) for i in range(len(texts))], np.float32)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _TWINS else n
                                  for n in ISSUE5])
def test_rl_seed_preset_trains_without_nan(setup, name):
  # CAPO's paper thresholds reject every token of this tiny model at lr 1e-2 (Adam's first step
  # is sign-like, so the predicted policy shift 0.5 lr^2 (v.u)^2 is huge): use a small lr there.
  # Dr.CAPO's tau_H (5e-4) is 20x below CAPO's (0.01) and rejects every token at 1e-4 as well.
  lr = {"capo": 1e-4, "dr_capo": 1e-5}.get(name, 1e-2)
  tr, state = _trainer(setup, name, lr=lr, reward_fn=_half_right)
  before = jax.tree.map(np.asarray, state["params"])
  state, met = tr.step(state)
  for k, v in met.items():
    assert np.isfinite(v), (name, k, v)
  moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
      jax.tree.leaves(state["params"]), jax.tree.leaves(before)))
  assert moved > 0, name
  assert 0.0 <= met["nonzero_grad_frac"] <= 1.0
  if name in ("capo", "dr_capo"):
    assert 0.0 <= met["capo_reject_frac"] <= 1.0
  if name == "dist_po":
    assert met["dist_po_temperature"] == pytest.approx(1.2)  # H_prev = 0 <= H0 at step 1
    assert float(state["objective_state"]["entropy"]) > 0  # this batch's estimate is stored
  if name == "oblr_po":
    assert met["oblr_scale"] == 1.0  # one optimizer step: no noise estimate yet, scale 1
    assert met["oblr_weight_cv"] > 0
  if name == "empg":
    assert met["empg_steps_mean"] >= 1.0
  if name.startswith("dcpo"):
    assert int(jnp.sum(state["objective_state"]["visits"])) == 2  # two prompts visited once


def test_rl_seed_supported_objectives_listed():
  for name in ISSUE5:
    assert name in rl.SUPPORTED_OBJECTIVES
  adora = rl.make_objective("adora", max_new_tokens=32)
  assert adora.config.advantage_kwargs["length_threshold"] == 32.0  # "not truncated"


def test_rl_seed_empg_segments_split_at_sentence_ends(setup):
  tok = setup[0]
  ids = tok("Kim | 7. Zoe | 5. 7 - 5 = 2.", add_special_tokens=False)["input_ids"]
  toks = jnp.asarray([ids + [0, 0]], jnp.int32)
  mask = jnp.asarray([[1] * len(ids) + [0, 0]], jnp.float32)
  b = rl_extras.boundary_token_ids(tok)
  seg = np.asarray(rl_extras.sentence_segment_ids(toks, mask, b, max_steps=16))[0]
  words = tok.convert_ids_to_tokens(ids)
  # Three sentences; each '.' closes its own step; padding is -1.
  assert seg.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, -1, -1]
  assert [w for w, s in zip(words, seg) if s == 0] == ["Kim", "▁|", "▁7", "."]
  capped = np.asarray(rl_extras.sentence_segment_ids(toks, mask, b, max_steps=2))[0]
  assert capped.max() == 1 and capped[-3] == 1  # the tail merges into the last step
  jitted = jax.jit(rl_extras.sentence_segment_ids, static_argnames=("boundary_ids", "max_steps"))
  np.testing.assert_array_equal(np.asarray(jitted(toks, mask, b, max_steps=16))[0], seg)
  empty = rl_extras.sentence_segment_ids(toks, jnp.zeros_like(mask), b, max_steps=4)
  assert np.all(np.asarray(empty) == -1)


def test_rl_seed_dist_po_tempered_logp(setup):
  _, graphdef, params, _ = setup
  fn = rl_extras.make_tempered_logprob_fn(graphdef, PROMPT_LEN)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 384, size=(2, PROMPT_LEN + 8)), jnp.int32)
  attn = jnp.ones_like(tokens).at[1, PROMPT_LEN + 5:].set(0)
  base = rl.response_logp_entropy(nnx.merge(graphdef, params), tokens, attn, PROMPT_LEN)[0]
  np.testing.assert_allclose(fn(params, tokens, attn, 1.0), base, atol=1e-5)
  hot = np.asarray(fn(params, tokens, attn, 1.2))
  assert np.all(hot[1, 5:] == 0) and np.all(np.isfinite(hot))
  assert not np.allclose(hot[0], np.asarray(base)[0])


def test_rl_seed_oblr_weights_match_per_sample_autodiff(setup):
  _, graphdef, params, _ = setup
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(4, 384, size=(3, PROMPT_LEN + 6)), jnp.int32)
  attn = jnp.ones_like(tokens)
  mask = jnp.asarray([[1] * 6, [1, 1, 1, 0, 0, 0], [0] * 6], jnp.float32)
  w = jax.jit(lambda p: rl_extras.per_sample_grad_sq_norms(
      graphdef, p, tokens, attn, mask, prompt_len=PROMPT_LEN, chunk=2))(params)

  @jax.jit
  def ref(p, tok, att, m):  # one response at a time, plain autodiff
    def f(q):
      lp = rl.response_logp_entropy(nnx.merge(graphdef, q), tok, att, PROMPT_LEN)[0]
      return jnp.sum(lp * m)
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(jax.grad(f)(p)))

  for i in range(3):
    want = float(ref(params, tokens[i:i + 1], attn[i:i + 1], mask[i:i + 1]))
    assert float(w[i]) == pytest.approx(want, rel=1e-4, abs=1e-8)
  assert float(w[2]) == 0.0 and float(w[0]) > 0 and float(w[1]) > 0  # empty response: 0


def test_rl_seed_capo_metrics_use_the_real_adam_moments(setup):
  _, graphdef, params, _ = setup
  opt = train.make_optimizer(learning_rate=1e-3)
  opt_state = opt.init(params)
  mu, nu, count = rl_extras.lm_head_adam(params, opt_state)
  assert mu.shape == (TINY.vocab_size, TINY.hidden_size) and int(count) == 0
  model = nnx.merge(graphdef, params)
  rng = np.random.default_rng(2)
  tokens = jnp.asarray(rng.integers(4, 384, size=(2, PROMPT_LEN + 5)), jnp.int32)
  attn = jnp.ones_like(tokens)
  hidden = hidden_states(model, tokens, attn)[:, PROMPT_LEN - 1:-1]
  acts = tokens[:, PROMPT_LEN:]
  adv = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  got = rl_extras.capo_metrics(hidden, model.head_weight(), acts, adv, lr=1e-3,
                               adam=(mu, nu, count), chunk=3)
  ref = core.capo_token_metrics(hidden, hidden @ model.head_weight(), acts, adv, lr=1e-3,
                                adam_mu=mu, adam_nu=nu, adam_count=count, b1=0.9, b2=0.99)
  np.testing.assert_allclose(got["m_hessian"], ref["m_hessian"], rtol=1e-4, atol=1e-12)
  np.testing.assert_allclose(got["m_fisher"], ref["m_fisher"], rtol=1e-4, atol=1e-12)
  assert np.all(np.asarray(got["m_fisher"]) >= 0)
  sgd = rl_extras.capo_metrics(hidden, model.head_weight(), acts, jnp.zeros_like(adv), lr=1e-3)
  assert np.all(np.asarray(sgd["m_fisher"]) == 0)  # A = 0: no predicted change


def test_rl_seed_capo_needs_learning_rate(setup):
  with pytest.raises(ValueError, match="learning_rate"):
    _trainer(setup, "capo", lr=None)


def test_rl_seed_run_metrics_and_claims():
  recs = [{"phase": "rl", "step": i + 1, "grad_norm": g, "entropy": e, "accuracy": 0.5,
           "nll_mean": 0.5 + d, "zero_spread_frac": 0.0, "clip_frac": 0.1,
           "nonzero_grad_frac": 0.8} for i, (g, e, d) in enumerate(
               [(1.0, 1.0, 0.1), (3.0, 0.9, 0.2), (1.0, 0.8, 0.3), (3.0, 0.7, -0.4)])]
  m = compare.run_metrics(recs, entropy_target=0.5)
  assert m["grad_norm_var"] == pytest.approx(np.var([1, 3, 1, 3], ddof=1))
  assert m["entropy_last"] == pytest.approx(0.7) and m["entropy_first"] == 1.0
  assert m["entropy_target_abs_dev"] == pytest.approx(0.4)
  base = {"variant": "grpo", "final_accuracy_mean": 0.3, "mechanism": {"grad_norm_var": 2.0}}
  entry = {"final_accuracy_mean": 0.4, "mechanism": m}
  assert compare._claim("bnpo", entry, base)["holds"] is True  # 4/3 < 2
  base["mechanism"]["grad_norm_var"] = 1.0
  assert compare._claim("bnpo", entry, base)["holds"] is False
  assert compare._claim("capo@10xlr", entry, base)["holds"] is True  # accuracy 0.4 > 0.3
  assert compare._claim("grpo", entry, base) == {}
  assert compare._mean_stderr([0.2, 0.4]) == (pytest.approx(0.3), pytest.approx(0.1))
  assert compare._mean_stderr([None, float("nan")]) == (None, None)


def test_rl_seed_compare_smoke_writes_one_entry_per_objective(tmp_path, run_binary, repo_root):
  cfg = repo_root / "experiments" / "configs" / "compare_objectives.py"
  run_binary("compare_objectives.py", f"{cfg}:seed_smoke", tmp_path / "cmp")
  summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
  entries = summary["objectives"]
  assert list(entries) == ["grpo", "dcpo", "grpo@10xlr", "capo@10xlr"]
  starts = {e["start_accuracy"] for e in entries.values()}
  assert len(starts) == 1  # one shared start
  for name, e in entries.items():
    assert e["num_seeds"] == 1 and len(e["final_accuracy_per_seed"]) == 1
    assert e["failed_seeds"] == 0, e["runs"]
    assert e["final_accuracy_stderr"] == 0.0
    mech = e["mechanism"]
    for key in ("nonzero_grad_frac", "clip_frac", "entropy_last", "grad_norm_var",
                "entropy_target_abs_dev", "adv_abs_entropy_corr"):
      assert mech[key] is not None and np.isfinite(mech[key]), (name, key)
  assert entries["capo@10xlr"]["learning_rate"] == pytest.approx(
      10 * entries["grpo"]["learning_rate"])
  assert entries["capo@10xlr"]["mechanism"]["capo_reject_frac"] is not None
  assert {c["metric"] for c in entries["dcpo"]["claim"]["checks"]} == {"nonzero_grad_frac",
                                                                        "clip_frac"}
  assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000
