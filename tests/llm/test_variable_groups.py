"""Variable group sizes per prompt (V0 budgets): padded [K, G_max] rollouts with a valid mask.

Covers the registry's `compute_advantages(group_mask=...)`, V0's variable plan, and one RLTrainer
step on a padded rollout (advantages per real group, batch compaction, metrics over real
completions only).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost import core
from rlpost import objectives
from rlpost.llm import prompt_samplers as ps
from rlpost.llm import rl
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import init_model
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer
from rlpost.llm.tasks import make_reward_fn

TINY = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)


@pytest.fixture(scope="module")
def pool():
  fam = ("sum", "difference")
  return (generate_dataset(12, split="train", level=1, families=fam) +
          generate_dataset(12, split="train", level=2, families=fam))


def _grid(counts, width, seed=0):
  rng = np.random.default_rng(seed)
  r = rng.integers(0, 2, size=(len(counts), width)).astype(np.float32)
  v = np.arange(width)[None] < np.asarray(counts)[:, None]
  return jnp.asarray(r), jnp.asarray(v)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "gspo"])
def test_registry_group_mask_matches_core_and_zeroes_padding(name):
  obj = objectives.objective(name)
  r, v = _grid([5, 2, 3], width=6)
  mask = jnp.repeat(v.reshape(-1, 1), 4, axis=1).astype(jnp.float32)  # padded rows: no tokens
  adv, _ = obj.compute_advantages(r, mask, group_mask=v)
  kw = obj.config.advantage_kwargs
  fn = core.rloo_advantages if obj.config.advantage == "rloo" else (
      lambda a, valid: core.grpo_advantages(a, valid=valid, **kw))
  expected = core.broadcast_to_tokens(fn(r, valid=v), mask)
  np.testing.assert_allclose(adv, expected, rtol=1e-6)
  assert np.all(np.asarray(adv)[~np.asarray(v).reshape(-1)] == 0.0)
  assert np.all(np.isfinite(np.asarray(adv)))


def test_registry_group_mask_errors_name_the_problem():
  r, v = _grid([3, 2], width=4)
  mask = jnp.ones((8, 3), jnp.float32)
  with pytest.raises(ValueError, match="does not support variable group sizes"):
    objectives.objective("reinforce_pp").compute_advantages(r, mask, group_mask=v)
  with pytest.raises(ValueError, match="a group of 1 valid completions < min_group_size=2"):
    objectives.objective("grpo").compute_advantages(r, mask, group_mask=_grid([3, 1], 4)[1])
  with pytest.raises(ValueError, match="group_mask shape"):
    objectives.objective("grpo").compute_advantages(r, mask, group_mask=v[:, :3])


def test_v0_variable_plan_gives_one_group_per_candidate(pool):
  s = ps.V0Sampler(candidate_factor=2)
  state = s.init_state(pool)
  # A value model that is sure about level-1 prompts and unsure about level-2 ones.
  feats = s.features(pool)
  state = {**state, "w": jnp.zeros_like(state["w"]).at[0].set(-23.0), "b": jnp.asarray(9.2)}
  p = np.asarray(ps.predict_success(state, jnp.asarray(feats)))
  assert p[:12].min() > 0.95 and 0.3 < p[12:].max() < 0.7
  plan = s.plan(state, key=None, data_pos=0, num_prompts=4, group_size=8, data_seed=0, pool=pool)
  cand = train.stream_indices(0, len(pool), 0, 8)
  np.testing.assert_array_equal(plan.prompt_ids, cand)
  assert plan.counts.sum() == 32 and plan.counts.min() >= 2 and plan.width == 32
  lvl2 = np.asarray([pool[i].difficulty == 2 for i in cand])
  assert lvl2.any() and (~lvl2).any()
  # Uncertain (level-2) prompts get larger groups than near-certain ones.
  assert plan.counts[lvl2].min() > plan.counts[~lvl2].max()
  assert plan.stats["v0_group_size_max"] > plan.stats["v0_group_size_min"]
  # update weights each row by its real completions only.
  acc = np.zeros((8, 32), np.float32)
  valid = np.arange(32)[None] < plan.counts[:, None]
  acc[0, :plan.counts[0]] = 1.0
  acc[1, plan.counts[1]:] = 1.0  # padding of row 1 (real outcomes all 0): must not count
  st = s.update(state, prompt_ids=plan.prompt_ids, acc=acc, pool=pool, valid=valid)
  np.testing.assert_allclose(np.asarray(st["hist_w"][:8]), plan.counts)
  assert float(st["hist_y"][0]) == 1.0 and float(st["hist_y"][1]) == 0.0
  with pytest.raises(ValueError, match="cannot fill the batch"):
    ps.V0Sampler(candidate_factor=1, b_max=4).plan(
        state, key=None, data_pos=0, num_prompts=4, group_size=8, data_seed=0, pool=pool)


@dataclasses.dataclass(frozen=True)
class FixedCounts:
  """A sampler with a fixed variable plan (prompt 0 x 5, prompt 13 x 3)."""
  name: str = "fixed_counts"

  def init_state(self, pool):
    del pool
    return {"seen": jnp.zeros((), jnp.float32)}

  def plan(self, state, *, key, data_pos, num_prompts, group_size, data_seed, pool):
    return ps.RolloutPlan(np.asarray([0, 13]), data_pos + 2, {}, counts=np.asarray([5, 3]),
                          width=6)

  def update(self, state, *, prompt_ids, acc, pool, valid=None):
    assert valid is not None and valid.shape == acc.shape == (2, 6)
    return {"seen": state["seen"] + float(valid.sum())}


def _trainer(pool, name="grpo"):
  tok = load_tokenizer()
  graphdef, params = nnx.split(init_model(TINY, seed=0))
  cfg = rl.RLConfig(batch_size=8, group_size=4, micro_batch_size=4, max_new_tokens=8)
  tr = rl.RLTrainer(graphdef=graphdef, params=params, tokenizer=tok,
                    objective=rl.make_objective(name, max_new_tokens=8), rl_config=cfg,
                    optimizer=train.make_optimizer(learning_rate=1e-3), pool=pool, data_seed=3,
                    prompt_len=64, reward_fn=make_reward_fn(), ref_params=params,
                    prompt_sampler=FixedCounts())
  state = train.init_train_state(params, train.make_optimizer(learning_rate=1e-3), seed=0,
                                 objective_state=tr.objective.init_state())
  return tr, state


def test_loop_step_on_variable_groups(pool):
  tr, state = _trainer(pool)
  seen = {}
  inner_rollout, inner_update = tr.rollout, tr.update

  def rollout(*a):
    out = inner_rollout(*a)
    seen["groups"] = out[0]
    return out

  def update(st, batch, *a):
    seen["batch"] = jax.device_get(batch)
    return inner_update(st, batch, *a)

  tr.rollout, tr.update = rollout, update
  state, met = tr.step(state)
  g, b = seen["groups"], seen["batch"]
  assert g["tokens"].shape[:2] == (2, 6)
  np.testing.assert_array_equal(g["valid"].sum(1), [5, 3])
  assert not g["mask"][~g["valid"]].any()  # padded slots hold no response tokens
  assert b["tokens"].shape[0] == 8 and b["advantages"].shape[0] == 8
  # Each real completion's advantage is GRPO over ITS group only.
  r = g["rewards"]
  expected = np.concatenate([np.asarray(core.grpo_advantages(jnp.asarray(r[0, :5])[None]))[0],
                             np.asarray(core.grpo_advantages(jnp.asarray(r[1, :3])[None]))[0]])
  np.testing.assert_allclose(b["advantages"], expected[:, None] * b["mask"], rtol=1e-5,
                             atol=1e-6)
  real_acc = np.concatenate([g["acc"][0, :5], g["acc"][1, :3]])
  assert met["accuracy"] == pytest.approx(float(real_acc.mean()))
  assert all(np.isfinite(v) for v in met.values())
  assert float(tr.prompt_sampler_state["seen"]) == 8.0
  assert int(state["step"]) == 1


def test_loop_refuses_d3s_on_variable_groups(pool):
  tr, state = _trainer(pool, name="d3s")
  with pytest.raises(ValueError, match="d3s selector .* variable group sizes"):
    tr.step(state)
