"""D3S selector following its training-progress schedule (arXiv 2509.22115): objectives.py d3s
selector with schedule=True, and RLTrainer supplying progress = step / rl.total_steps."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost import core
from rlpost import objectives
from rlpost.llm import rl
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import init_model
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer

G = 4
ENDS = {"n_init": 1, "n_final": 4, "k_init": 0.25, "k_final": 1.0}


def _obj(**sel):
  # make_config does not route selector hyperparameters, so replace them on the preset's config.
  c = objectives.make_config("d3s")
  c = dataclasses.replace(c, selector_kwargs={"d3s": {**c.selector_kwargs["d3s"], "group_size": G,
                                                      **sel}})
  return objectives.Objective(c)


def _batch(seed=0, b=8, t=6):
  rng = np.random.default_rng(seed)
  adv = jnp.asarray(np.repeat(rng.normal(size=(b, 1)), t, 1), jnp.float32)
  mask = jnp.asarray((np.arange(t)[None] < rng.integers(2, t + 1, (b, 1))).astype(np.float32))
  ent = jnp.asarray(rng.uniform(0.1, 2.0, (b, t)), jnp.float32)
  return {"advantages": adv * mask, "mask": mask, "entropy": ent}


@pytest.mark.parametrize("progress", [0.0, 1.0])
def test_scheduled_keep_follows_d3s_schedule_at_the_endpoints(progress):
  batch = _batch()
  sched = _obj(schedule=True, **ENDS)
  m = np.asarray(sched.token_mask({**batch, "progress": jnp.float32(progress)}))
  n, k = core.d3s_schedule(jnp.float32(progress), **ENDS)
  n, k = int(n), float(k)
  assert (n, k) == ((1, 0.25) if progress == 0.0 else (4, 1.0))
  # Same mask as the fixed-point selector at the schedule's values.
  fixed = _obj(sample_keep=n, token_keep_frac=k)
  np.testing.assert_array_equal(m, np.asarray(fixed.token_mask(batch)))
  # n rollouts kept per group (sample level), then ceil(K * their valid tokens) tokens.
  samples = np.asarray(_obj(sample_keep=n, token_keep_frac=1.0).token_mask(batch))
  assert np.all(samples.any(1).reshape(-1, G).sum(1) == n)
  assert np.all(m <= samples)
  assert m.sum() == math.ceil(k * samples.sum())
  valid = np.asarray(batch["mask"]).astype(bool)
  if progress == 1.0:  # N_final = G, K_final = 1: the full mask
    np.testing.assert_array_equal(m, valid)


def test_scheduled_selector_jit_matches_eager_and_does_not_retrace():
  batch = _batch(seed=1)
  obj = _obj(schedule=True, **ENDS)
  traces = []

  def fn(b):
    traces.append(1)
    return obj.token_mask(b)

  jitted = jax.jit(fn)
  fracs = []
  for p in (0.0, 0.3, 0.7, 1.0):
    bp = {**batch, "progress": jnp.float32(p)}
    got = np.asarray(jitted(bp))
    np.testing.assert_array_equal(got, np.asarray(obj.token_mask(bp)))  # eager, op by op
    fracs.append(got.sum() / float(np.asarray(batch["mask"]).sum()))
  assert len(traces) == 1  # progress is traced: one compile serves every step
  assert fracs == sorted(fracs) and fracs[0] < fracs[-1] == 1.0


def test_default_d3s_is_unchanged_and_ignores_progress():
  batch = _batch(seed=2)
  base = objectives.make_config("d3s")
  assert base.selector_kwargs["d3s"]["schedule"] is False
  assert not objectives.needs_progress(base)
  assert objectives.needs_progress(_obj(schedule=True, **ENDS).config)
  legacy = objectives.Objective(dataclasses.replace(base, selector_kwargs={"d3s": {
      "group_size": G, "sample_keep": 2, "token_keep_frac": 0.5, "cross_group": False}}))
  want = np.asarray(legacy.token_mask(batch))
  np.testing.assert_array_equal(np.asarray(_obj(sample_keep=2).token_mask(batch)), want)
  np.testing.assert_array_equal(
      np.asarray(_obj(sample_keep=2).token_mask({**batch, "progress": jnp.float32(1.0)})), want)


def test_missing_or_bad_progress_and_endpoints_raise():
  batch = _batch()
  obj = _obj(schedule=True, **ENDS)
  with pytest.raises(ValueError, match="progress"):
    obj.token_mask(batch)
  with pytest.raises(ValueError, match="scalar"):
    obj.token_mask({**batch, "progress": jnp.zeros((2,))})
  with pytest.raises(ValueError, match="n_init"):
    _obj(schedule=True, n_final=4, k_init=0.5, k_final=1.0).token_mask(
        {**batch, "progress": 0.0})
  with pytest.raises(ValueError, match="k_final"):
    _obj(schedule=True, **{**ENDS, "k_final": 0.0}).token_mask({**batch, "progress": 0.0})
  with pytest.raises(ValueError, match="n_final"):
    _obj(schedule=True, **{**ENDS, "n_final": G + 1}).token_mask({**batch, "progress": 0.0})
  # Out-of-range progress is clipped to [0, 1]; no NaN on an all-invalid batch.
  np.testing.assert_array_equal(
      np.asarray(obj.token_mask({**batch, "progress": 5.0})),
      np.asarray(obj.token_mask({**batch, "progress": 1.0})))
  empty = {**batch, "mask": jnp.zeros_like(batch["mask"]), "progress": 0.5}
  assert not np.asarray(obj.token_mask(empty)).any()


def test_rl_config_total_steps_is_validated_and_required_by_scheduled_d3s():
  with pytest.raises(ValueError, match="total_steps"):
    rl.RLConfig(batch_size=8, group_size=4, micro_batch_size=8, total_steps=0)
  cfg = rl.RLConfig(batch_size=8, group_size=4, micro_batch_size=8)
  with pytest.raises(ValueError, match="rl.total_steps"):
    rl.make_update_step(None, None, _obj(schedule=True, **ENDS), cfg, prompt_len=64)


TINY = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)


@pytest.mark.slow  # ~25 s on a loaded 2-core CPU (sampler + update compiles)
def test_rl_loop_feeds_progress_to_scheduled_d3s():
  tok = load_tokenizer()
  graphdef, params = nnx.split(init_model(TINY, seed=0))
  pool = generate_dataset(16, split="train", level=1, families=("sum", "difference"))
  half = lambda texts, recs: np.asarray([float(i % 4 < 2) for i in range(len(texts))], np.float32)
  cfg = rl.RLConfig(batch_size=8, group_size=G, micro_batch_size=8, max_new_tokens=8,
                    total_steps=2, mechanism_metrics=True)
  opt = train.make_optimizer(learning_rate=1e-2)
  obj = _obj(schedule=True, **ENDS)
  tr = rl.RLTrainer(graphdef=graphdef, params=params, tokenizer=tok, objective=obj,
                    rl_config=cfg, optimizer=opt, pool=pool, data_seed=0, prompt_len=64,
                    reward_fn=half)
  state = train.init_train_state(params, opt, seed=0, objective_state=obj.init_state())
  fracs = []
  for _ in range(2):  # progress 0 then 0.5: the kept-token fraction grows
    state, met = tr.step(state)
    assert all(np.isfinite(v) for v in met.values())
    fracs.append(met["nonzero_grad_frac"])
  assert 0.0 < fracs[0] < fracs[1] <= 1.0


def test_make_config_routes_selector_keys_to_their_selector():
  cfg = objectives.make_config("d3s", schedule=True, n_init=6, n_final=2, k_init=0.9, k_final=0.3)
  assert cfg.selector_kwargs["d3s"]["schedule"] is True
  assert cfg.selector_kwargs["d3s"]["n_init"] == 6
  assert objectives.needs_progress(cfg)
  assert not objectives.needs_progress(objectives.make_config("d3s"))
  with pytest.raises(ValueError, match="schedul"):
    objectives.make_config("d3s", schedul=True)
  with pytest.raises(ValueError, match="no option 'schedule'"):
    objectives.make_config("grpo", schedule=True)
