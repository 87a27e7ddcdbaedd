"""Prompt samplers (VADE, V0, curriculum, uniform) and the D3S registry selector: defining
properties, jit vs no-jit, degenerate inputs, orbax round trip, and the RLTrainer wiring."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost import core
from rlpost import objectives
from rlpost.llm import checkpoint
from rlpost.llm import prompt_samplers as ps
from rlpost.llm import rl
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import init_model
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer
from rlpost.llm.tasks import make_reward_fn

KW = dict(data_seed=0, group_size=4)


@pytest.fixture(scope="module")
def two_level_pool():
  fam = ("sum", "difference")
  return (generate_dataset(12, split="train", level=1, families=fam) +
          generate_dataset(12, split="train", level=2, families=fam))


def _acc(rows):
  return np.asarray(rows, np.float32)


def test_vade_sampler_prefers_mixed_outcome_prompts():
  pool = list(range(12))
  s = ps.VadeSampler(thompson=False, rho_glob=1.0, rho_loc=1.0)
  state = s.init_state(pool)
  ids = np.arange(12)
  acc = np.zeros((12, 4), np.float32)
  acc[:4, :2] = 1.0  # prompts 0-3: 2 of 4 correct
  acc[4:8] = 1.0  # prompts 4-7: always correct; 8-11: never
  state = s.update(state, prompt_ids=ids, acc=acc, pool=pool)
  np.testing.assert_allclose(np.asarray(state["alpha"][:5]), [3, 3, 3, 3, 5])  # Beta(1 + s, ...)
  plan = s.plan(state, key=jax.random.key(0), data_pos=7, num_prompts=4, pool=pool, **KW)
  assert sorted(plan.prompt_ids.tolist()) == [0, 1, 2, 3]
  assert plan.data_pos == 11
  # Thompson draws are deterministic given the key and still favour the mixed prompts.
  t = ps.VadeSampler()
  st = t.update(t.init_state(pool), prompt_ids=ids, acc=acc, pool=pool)
  a = t.plan(st, key=jax.random.key(3), data_pos=0, num_prompts=4, pool=pool, **KW)
  b = t.plan(st, key=jax.random.key(3), data_pos=0, num_prompts=4, pool=pool, **KW)
  np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)
  assert np.mean(a.prompt_ids < 4) >= 0.5


def test_vade_global_decay_moves_unvisited_prompts_to_the_prior():
  pool = list(range(3))
  s = ps.VadeSampler(rho_glob=0.5, rho_loc=1.0)
  st = s.update(s.init_state(pool), prompt_ids=np.asarray([0]), acc=_acc([[1, 1, 1, 1]]),
                pool=pool)
  a0 = float(st["alpha"][0])
  st = s.update(st, prompt_ids=np.asarray([1]), acc=_acc([[0, 0, 0, 0]]), pool=pool)
  assert 1.0 < float(st["alpha"][0]) < a0  # decayed toward alpha0 = 1, never below
  assert float(st["beta"][2]) == 1.0 and np.all(np.isfinite(np.asarray(st["alpha"])))


def test_v0_quantised_rows_and_budget_bounds():
  rng = np.random.default_rng(0)
  p = jnp.asarray(rng.uniform(0, 1, 16), jnp.float32)
  b = np.asarray(ps._allocate(p, total_budget=48, b_min=2, b_max=128))  # pylint: disable=protected-access
  assert b.sum() == 48 and b.min() >= 2 and b.max() <= 128
  np.testing.assert_array_equal(b, np.asarray(core.v0_allocate_budget(p, 48)))  # jit == no-jit
  capped = np.asarray(ps._allocate(p, total_budget=48, b_min=2, b_max=3))  # pylint: disable=protected-access
  assert capped.max() <= 3 and capped.sum() == 48
  rows = ps.quantise_rows(b, group_size=4, num_rows=12)
  assert rows.sum() == 12 and rows.min() >= 0
  assert np.all(np.abs(rows * 4 - b) < 4 + 1e-9)  # within one row of the exact budget
  with pytest.raises(ValueError, match="candidate_factor"):
    ps.V0Sampler(candidate_factor=4).plan(None, key=None, data_pos=0, num_prompts=4,
                                          pool=[None] * 40, **KW)


def test_v0_value_model_learns_from_history_and_plans_p_rows(two_level_pool):
  pool = two_level_pool
  s = ps.V0Sampler(fit_steps=200, lr=1.0, variable_groups=False)  # whole rows of G
  state = s.init_state(pool)
  plan = s.plan(state, key=None, data_pos=0, num_prompts=4, pool=pool, **KW)
  assert plan.prompt_ids.shape == (4,) and plan.data_pos == 8
  cand = train.stream_indices(0, len(pool), 0, 8)
  assert set(plan.prompt_ids.tolist()) <= set(cand.tolist())
  # Level-1 prompts always solved, level-2 never: the model must rank level 1 higher.
  ids = np.arange(len(pool))
  acc = np.repeat((np.asarray([r.difficulty for r in pool]) == 1)[:, None], 4, 1)
  state = s.update(state, prompt_ids=ids, acc=acc.astype(np.float32), pool=pool)
  p = np.asarray(ps.predict_success(state, jnp.asarray(s.features(pool))))
  assert np.all(np.isfinite(p))
  assert p[:12].min() > p[12:].max() and p[:12].mean() > 0.5 > p[12:].mean()
  # All-failure history (degenerate): finite, low predictions, still a full plan.
  st0 = s.update(s.init_state(pool), prompt_ids=ids, acc=np.zeros((len(pool), 4), np.float32),
                 pool=pool)
  assert np.all(np.isfinite(np.asarray(st0["w"]))) and float(st0["b"]) < 0
  assert s.plan(st0, key=None, data_pos=0, num_prompts=4, pool=pool, **KW).prompt_ids.shape == (4,)


def test_v0_fit_jit_matches_no_jit():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(size=32), jnp.float32)
  w = jnp.ones(32)
  p0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
  a = ps.fit_value_model(p0, x, y, w, steps=10, lr=0.5, l2=1e-3)
  with jax.disable_jit():
    b = ps.fit_value_model(p0, x, y, w, steps=10, lr=0.5, l2=1e-3)
  np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5, atol=1e-6)


def test_curriculum_moves_up_when_success_is_high(two_level_pool):
  pool = two_level_pool
  s = ps.CurriculumSampler(promote_at=0.7, min_visits=8)
  state = s.init_state(pool)
  assert np.all(np.isfinite(np.asarray(core.curriculum_level_probs(core.CurriculumState(
      state["success_rate"], state["visits"], state["unlocked"])))))
  plan = s.plan(state, key=jax.random.key(0), data_pos=0, num_prompts=4, pool=pool, **KW)
  assert all(pool[i].difficulty == 1 for i in plan.prompt_ids)  # level 2 is locked
  low = s.update(plan.state, prompt_ids=plan.prompt_ids, acc=np.zeros((4, 4), np.float32),
                 pool=pool)
  assert int(low["unlocked"]) == 0  # failures never promote
  high = s.update(plan.state, prompt_ids=plan.prompt_ids, acc=np.ones((4, 4), np.float32),
                  pool=pool)
  assert int(high["unlocked"]) == 1
  levels = []
  for k in range(4):
    nxt = s.plan(high, key=jax.random.key(k), data_pos=4, num_prompts=4, pool=pool, **KW)
    levels += [pool[i].difficulty for i in nxt.prompt_ids]
    high = nxt.state
  assert 2 in levels and 1 in levels  # focus on the new level, replay of the old one
  assert np.asarray(high["level_pos"]).sum() == 20  # 4 rows from the first plan + 4 x 4


@pytest.mark.parametrize("name", ["uniform", "vade", "v0", "curriculum"])
def test_sampler_state_round_trips_through_orbax(two_level_pool, tmp_path, name):
  pool = two_level_pool
  s = ps.make_prompt_sampler(name)
  state = s.init_state(pool)
  plan = s.plan(state, key=jax.random.key(1), data_pos=0, num_prompts=4, pool=pool, **KW)
  width = plan.width or 4
  acc = np.random.default_rng(0).integers(0, 2, (len(plan.prompt_ids), width)).astype(np.float32)
  kw = {} if plan.counts is None else {"valid": np.arange(width)[None] < plan.counts[:, None]}
  state = s.update(plan.state if plan.state is not None else state, prompt_ids=plan.prompt_ids,
                   acc=acc, pool=pool, **kw)
  ck = checkpoint.Checkpointer(tmp_path / "ck")
  ck.save(1, state)
  restored = ck.restore(s.init_state(pool))
  ck.close()
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  a = s.plan(state, key=jax.random.key(2), data_pos=8, num_prompts=4, pool=pool, **KW)
  b = s.plan(restored, key=jax.random.key(2), data_pos=8, num_prompts=4, pool=pool, **KW)
  np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)
  np.testing.assert_array_equal(np.asarray(a.counts), np.asarray(b.counts))


def test_make_prompt_sampler_errors_name_the_key():
  with pytest.raises(ValueError, match="'nope'"):
    ps.make_prompt_sampler("nope")
  with pytest.raises(ValueError, match="rho"):
    ps.make_prompt_sampler("vade", rho=0.5)
  with pytest.raises(ValueError, match="rho_glob"):
    ps.make_prompt_sampler("vade", rho_glob=0.0)


# ------------------------------------------------------------------------------ D3S selector


def _d3s(group_size, sample_keep, token_keep_frac):
  c = objectives.make_config("d3s")
  return objectives.Objective(dataclasses.replace(c, selector_kwargs={"d3s": {
      "group_size": group_size, "sample_keep": sample_keep, "token_keep_frac": token_keep_frac,
      "cross_group": False}}))


def _d3s_batch():
  rng = np.random.default_rng(0)
  adv = jnp.asarray(np.repeat(rng.normal(size=(8, 1)), 6, 1), jnp.float32)
  mask = jnp.asarray((np.arange(6)[None] < rng.integers(1, 7, (8, 1))).astype(np.float32))
  ent = jnp.asarray(rng.uniform(0.1, 2.0, (8, 6)), jnp.float32)
  return {"advantages": adv * mask, "mask": mask, "entropy": ent}


def test_d3s_selector_full_schedule_is_the_base_mask_and_selection_raises_var():
  batch = _d3s_batch()
  full = _d3s(4, 4, 1.0).token_mask(batch)
  np.testing.assert_array_equal(np.asarray(full), np.asarray(batch["mask"]).astype(bool))
  obj = _d3s(4, 2, 0.5)
  m = np.asarray(obj.token_mask(batch))
  with jax.disable_jit():
    m_nojit = np.asarray(obj.token_mask(batch))
  np.testing.assert_array_equal(m, np.asarray(jax.jit(obj.token_mask)(batch)))
  np.testing.assert_array_equal(m, m_nojit)
  chosen = m.any(1).reshape(2, 4)
  assert np.all(chosen.sum(1) <= 2)
  seq = np.asarray(batch["advantages"])[:, 0].reshape(2, 4)
  for g in range(2):  # the kept rollouts have at least the variance of any other pair
    sel = seq[g][chosen[g]]
    if len(sel) == 2:
      best = max(np.var([seq[g][i], seq[g][j]]) for i in range(4) for j in range(i + 1, 4))
      assert np.var(sel) >= best - 1e-6
  n_valid = int(np.asarray(obj.token_mask({**batch, "entropy": batch["entropy"]})).sum())
  assert 0 < n_valid < int(np.asarray(batch["mask"]).sum())


def test_d3s_selector_degenerate_inputs():
  batch = _d3s_batch()
  zero = {**batch, "advantages": jnp.zeros_like(batch["advantages"])}
  m = np.asarray(_d3s(4, 2, 0.5).token_mask(zero))
  assert m.sum() >= 1 and np.all(m <= np.asarray(batch["mask"]).astype(bool))
  empty = {**batch, "mask": jnp.zeros_like(batch["mask"])}
  assert not np.asarray(_d3s(4, 2, 0.5).token_mask(empty)).any()
  with pytest.raises(ValueError, match="group_size"):
    _d3s(3, 2, 0.5).token_mask(batch)


# ------------------------------------------------------------------------------ loop wiring

TINY = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)


@pytest.fixture(scope="module")
def tiny_trainer(two_level_pool):
  tok = load_tokenizer()
  graphdef, params = nnx.split(init_model(TINY, seed=0))
  cfg = rl.RLConfig(batch_size=8, group_size=4, micro_batch_size=8, max_new_tokens=8)
  obj = rl.make_objective("grpo", max_new_tokens=8)
  tr = rl.RLTrainer(graphdef=graphdef, params=params, tokenizer=tok, objective=obj, rl_config=cfg,
                    optimizer=train.make_optimizer(learning_rate=1e-3), pool=two_level_pool,
                    data_seed=3, prompt_len=64, reward_fn=make_reward_fn(), ref_params=params)
  return tr, params


def test_loop_uniform_sampler_reproduces_the_default_rollout(tiny_trainer):
  tr, params = tiny_trainer
  tr.prompt_sampler = tr.prompt_sampler_state = None
  ref, pos_ref, _ = tr.rollout(params, 5, jax.random.key(7))
  tr.prompt_sampler = ps.UniformSampler()
  tr.prompt_sampler_state = tr.prompt_sampler.init_state(tr.pool)
  out, pos, stats = tr.rollout(params, 5, jax.random.key(7))
  assert pos == pos_ref == 7
  for k in ref:
    np.testing.assert_array_equal(np.asarray(ref[k]), np.asarray(out[k]), err_msg=k)
  assert stats["informative_groups"] >= 0 and int(tr.prompt_sampler_state["steps"]) == 1


@pytest.mark.parametrize("name", ["vade", "v0", "curriculum"])
def test_loop_rollout_with_sampler_updates_state(tiny_trainer, name):
  tr, params = tiny_trainer
  tr.prompt_sampler = ps.make_prompt_sampler(name)
  tr.prompt_sampler_state = before = tr.prompt_sampler.init_state(tr.pool)
  groups, pos, stats = tr.rollout(params, 0, jax.random.key(0))
  if name == "v0":  # one variable-size group per candidate on a padded grid (4 x min(128, 8))
    assert groups["acc"].shape == (4, 8) and groups["valid"].sum() == 8
  else:
    assert groups["acc"].shape == (2, 4)
  assert pos > 0
  assert all(np.isfinite(v) for v in stats.values())
  changed = any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                zip(jax.tree.leaves(before), jax.tree.leaves(tr.prompt_sampler_state)))
  assert changed
  tr.prompt_sampler = tr.prompt_sampler_state = None


def test_loop_rejects_sampler_with_dynamic_sampling(tiny_trainer, two_level_pool):
  tr, params = tiny_trainer
  with pytest.raises(ValueError, match="dynamic_sampling"):
    rl.RLTrainer(graphdef=tr.graphdef, params=params, tokenizer=tr.tokenizer,
                 objective=rl.make_objective("dapo", max_new_tokens=8), rl_config=tr.cfg,
                 optimizer=train.make_optimizer(learning_rate=1e-3), pool=two_level_pool,
                 data_seed=0, prompt_len=64, reward_fn=make_reward_fn(),
                 prompt_sampler=ps.VadeSampler())
