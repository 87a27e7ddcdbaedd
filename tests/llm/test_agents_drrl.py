"""DR-RL (arXiv 2512.15973): SVD truncation identities, the perturbation bound, FLOPs, the
rank-policy rollout on a tiny random decoder (full rank == the model), REINFORCE, and the binary."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.llm.agents import dr_rl
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import hidden_states
from rlpost.llm.model import init_model


def _tiny():
  cfg = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
  return init_model(cfg, seed=5)


def _batch():
  toks = jnp.asarray([[0, 0, 1, 5, 6, 7, 8, 9], [1, 4, 5, 6, 7, 8, 9, 10]], jnp.int32)
  mask = jnp.asarray((np.arange(8)[None] >= np.array([[2], [0]])).astype(np.int32))
  return toks, mask


def test_drrl_tail_energy_is_the_exact_truncation_error_and_ner_is_monotone():
  w = jax.random.normal(jax.random.key(0), (12, 8))
  u, s, vt = jnp.linalg.svd(w, full_matrices=False)
  for r, r2 in ((2, 5), (0, 8), (3, 3), (7, 1)):
    diff = dr_rl.truncate(u, s, vt, r) - dr_rl.truncate(u, s, vt, r2)
    np.testing.assert_allclose(dr_rl.perturbation_bound(s, r, r2), jnp.linalg.norm(diff),
                               rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dr_rl.tail_energy(s, 3), jnp.linalg.norm(w - dr_rl.truncate(
      u, s, vt, 3)), rtol=1e-4)
  np.testing.assert_allclose(dr_rl.truncate(u, s, vt, 8), w, atol=1e-5)
  assert float(dr_rl.tail_energy(s, 8)) == 0.0
  ner = np.asarray([dr_rl.energy_ratio(s, r) for r in range(9)])
  assert np.all(np.diff(ner) >= 0) and ner[-1] == pytest.approx(1.0)
  assert float(dr_rl.energy_ratio(jnp.zeros(4), 2)) == 1.0  # degenerate: no NaN


def test_drrl_rank_actions_and_flops():
  assert dr_rl.rank_actions(64) == (16, 24, 32, 40, 48, 56, 64)  # the paper's 7 actions
  assert dr_rl.rank_actions(16, r_min=6, r_step=4) == (6, 10, 14, 16)
  with pytest.raises(ValueError):
    dr_rl.rank_actions(16, r_min=0)
  cfg = _tiny().config
  flops = [float(dr_rl.attention_flops(cfg, 20, r, matrices=dr_rl.MATRICES)) for r in range(1, 9)]
  assert np.all(np.diff(flops) >= 0)
  full = float(dr_rl.attention_flops(cfg, 20, 8, matrices=dr_rl.MATRICES))
  h, d, n = 16, 8, 20
  assert full == 4 * n * n * 2 * d + 2 * n * h * d * (2 + 1 + 1 + 2)  # dense count at full rank


def _rollout(model, action, **kw):
  toks, mask = _batch()
  svds = dr_rl.layer_svds(model, matrices=dr_rl.MATRICES)
  ranks = dr_rl.rank_actions(8, r_min=2, r_step=2)
  policy = dr_rl.init_policy(jax.random.key(1), dr_rl.num_features(model.config, len(ranks)),
                             len(ranks))
  return dr_rl.rollout(model, svds, policy, toks, mask, jax.random.key(0), ranks=ranks,
                       forced_action=None if action is None else jnp.full((2,), action),
                       matrices=dr_rl.MATRICES, **kw)


def test_drrl_full_rank_reconstructs_the_model_exactly():
  model = _tiny()
  toks, mask = _batch()
  out = _rollout(model, 3)  # rank 8 = head_dim
  np.testing.assert_allclose(out["hidden"], hidden_states(model, toks, mask), atol=1e-5)
  np.testing.assert_allclose(out["fidelity"], 1.0, atol=1e-5)
  assert float(jnp.abs(out["tail"]).max()) == 0.0
  np.testing.assert_allclose(out["flops_frac"], 1.0)
  low = _rollout(model, 0)  # rank 2: lower fidelity, positive tail, fewer FLOPs
  assert float(low["fidelity"].max()) < 1.0 and float(low["tail"].min()) > 0.0
  assert float(low["flops_frac"].max()) < 1.0


def test_drrl_rollout_jit_matches_eager_and_is_finite():
  from flax import nnx  # pylint: disable=g-import-not-at-top
  model = _tiny()
  graphdef, params = nnx.split(model)
  eager = _rollout(model, None, epsilon=0.3)
  jitted = jax.jit(lambda p: _rollout(nnx.merge(graphdef, p), None, epsilon=0.3))(params)
  for k in ("actions", "rewards", "fidelity", "hidden"):
    np.testing.assert_allclose(np.asarray(eager[k]), np.asarray(jitted[k]), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(eager[k], np.float32)))
  # the safety mask removes every rank whose tail energy exceeds the threshold
  safe = _rollout(model, None, safety_threshold=0.0, epsilon=1.0)
  assert np.all(np.asarray(safe["ranks"]) == 8)


def test_drrl_cosine_fidelity_degenerate_inputs():
  z = jnp.zeros((3, 4))
  assert float(dr_rl.cosine_fidelity(z, z, jnp.ones(3))) == 1.0
  assert float(dr_rl.cosine_fidelity(z, jnp.ones((3, 4)), jnp.ones(3))) == 0.0
  assert float(dr_rl.cosine_fidelity(jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.zeros(3))) == 0.0


def test_drrl_reinforce_raises_rewarded_action_and_baseline_cancels_constants():
  policy = dr_rl.init_policy(jax.random.key(0), 5, 3, hidden=8)
  feats = jax.random.normal(jax.random.key(1), (4, 2, 5))
  safe = jnp.ones((4, 2, 3), bool)
  actions = jnp.ones((4, 2), jnp.int32)
  grads = jax.grad(dr_rl.reinforce_loss)(policy, feats, safe, actions, jnp.ones((4, 2)))
  stepped = jax.tree.map(lambda p, g: p - 0.1 * g, policy, grads)
  before = jax.nn.log_softmax(dr_rl.policy_logits(policy, feats))[..., 1].mean()
  after = jax.nn.log_softmax(dr_rl.policy_logits(stepped, feats))[..., 1].mean()
  assert after > before
  g0 = jax.grad(dr_rl.reinforce_loss)(policy, feats, safe, actions, jnp.full((4, 2), 3.0),
                                      baseline=True)
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g0)) == 0.0


def test_drrl_bad_config_names_field(tmp_path, repo_root):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from rlpost.llm.agents import dr_rl_experiment  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("dr_rl_cfg",
                                                repo_root / "experiments/configs/dr_rl.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  c.matrices = ("q", "x")
  with pytest.raises(ValueError, match="config.matrices"):
    dr_rl_experiment.run_experiment(c, tmp_path)
  c = mod.get_config("smoke")
  c.epsilon_decay = 1.5
  with pytest.raises(ValueError, match="epsilon_decay"):
    dr_rl_experiment.run_experiment(c, tmp_path)


def test_drrl_smoke_binary(run_binary, tmp_path):
  stdout, summary = run_binary("dr_rl.py", "experiments/configs/dr_rl.py:smoke", tmp_path / "run")
  for key in ("dr_rl_perplexity", "full_rank_perplexity", "dr_rl_attn_flops_frac",
              "dr_rl_model_flops_frac", "fixed_ranks"):
    assert key in summary, key
  full = summary["fixed_ranks"]["16"]
  assert full["attn_flops_frac"] == pytest.approx(1.0)
  assert summary["full_rank_perplexity"] == full["perplexity"]
  assert summary["dr_rl_attn_flops_frac"] <= 1.0 + 1e-6
  assert "DR-RL policy" in stdout
