"""SFT-RL hybrids on the LLM: OTR as an SFT step, HPT / DYPO / CoPG routing through the trainer,
jit agreement, degenerate batches, config errors and a smoke run of experiments/hybrids.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.llm import hybrid
from rlpost.llm import rl
from rlpost.llm import sft
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import init_model
from rlpost.llm.model import logits as model_logits
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer
from rlpost.llm.tasks import make_reward_fn

TINY = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
P, R = 64, 32
RL_CFG = rl.RLConfig(batch_size=8, group_size=4, micro_batch_size=8, max_new_tokens=R)


@pytest.fixture(scope="module")
def setup():
  tok = load_tokenizer()
  graphdef, params = nnx.split(init_model(TINY, seed=0))
  pool = generate_dataset(16, split="train", level=1, families=("sum", "difference"))
  return tok, graphdef, params, pool


def _cos(a, b):
  fa = jnp.concatenate([x.ravel() for x in jax.tree.leaves(a)])
  fb = jnp.concatenate([x.ravel() for x in jax.tree.leaves(b)])
  return float(fa @ fb / (jnp.linalg.norm(fa) * jnp.linalg.norm(fb)))


def _greedy_batch(tok, graphdef, params, pool):
  """An SFT batch whose targets are the model's own greedy continuation (argmax = gold)."""
  batch = sft.make_sft_batch(tok, pool[:4], prompt_len=P, response_len=R)
  tokens = batch["tokens"].copy()
  attn = batch["attention_mask"].copy()
  attn[:, P:] = 1
  fwd = jax.jit(lambda p, t, a: model_logits(nnx.merge(graphdef, p), t, a))
  for t in range(P, P + R):
    tokens[:, t] = np.asarray(jnp.argmax(fwd(params, tokens, attn)[:, t - 1], -1))
  loss_mask = np.zeros_like(attn)
  loss_mask[:, P:] = 1
  return {"tokens": jnp.asarray(tokens), "attention_mask": jnp.asarray(attn),
          "loss_mask": jnp.asarray(loss_mask)}


# --- OTR -----------------------------------------------------------------------------------------


def test_otr_greedy_zero_beta_equals_sft_on_the_model(setup):
  """Paper limit (beta = 0, greedy, correct top token): OTR loss == cross-entropy, gradient cos 1."""
  tok, graphdef, params, pool = setup
  batch = _greedy_batch(tok, graphdef, params, pool)
  key = jax.random.key(0)
  otr = jax.jit(jax.value_and_grad(lambda p, b: sft.otr_sft_loss(
      p, graphdef, b, key, num_samples=3, temperature=0.0, wrong_reward=0.0, prompt_len=P)[0]))
  xent = jax.jit(jax.value_and_grad(lambda p, b: sft.sft_loss(p, graphdef, b)))
  (l_otr, g_otr), (l_xent, g_xent) = otr(params, batch), xent(params, batch)
  np.testing.assert_allclose(l_otr, l_xent, rtol=1e-5)
  assert _cos(g_otr, g_xent) > 0.9999
  # Away from the limit the direction changes: gold tokens the model does not rank first
  # contribute nothing under greedy OTR, and tempered sampling reweights the tokens.
  gold = {k: jnp.asarray(v) for k, v in
          sft.make_sft_batch(tok, pool[:4], prompt_len=P, response_len=R).items()}
  assert float(otr(params, gold)[0]) < float(xent(params, gold)[0]) - 1.0
  g_hot = jax.jit(jax.grad(lambda p: sft.otr_sft_loss(p, graphdef, batch, key, num_samples=4,
                                                      temperature=1.0, wrong_reward=-0.5,
                                                      prompt_len=P)[0]))(params)
  assert _cos(g_hot, g_xent) < 0.99


@pytest.mark.slow  # eager OTR forward + a train-step compile (~1 min CPU)
def test_otr_step_jit_matches_eager_and_prompt_slicing(setup):
  tok, graphdef, params, pool = setup
  batch = {k: jnp.asarray(v) for k, v in
           sft.make_sft_batch(tok, pool[:4], prompt_len=P, response_len=R).items()}
  kw = dict(num_samples=4, temperature=1.0, wrong_reward=0.1)
  key = jax.random.key(3)
  eager, aux = sft.otr_sft_loss(params, graphdef, batch, key, prompt_len=P, **kw)
  jitted, _ = jax.jit(lambda p, b: sft.otr_sft_loss(p, graphdef, b, key, prompt_len=P, **kw))(
      params, batch)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5)
  assert 0.0 <= float(aux["hit_rate"]) <= 1.0 and np.isfinite(float(eager))
  # An all-masked batch gives 0, not NaN.
  empty = dict(batch, loss_mask=jnp.zeros_like(batch["loss_mask"]))
  assert float(sft.otr_sft_loss(params, graphdef, empty, key, prompt_len=P, **kw)[0]) == 0.0
  # The train step draws from fold_in(rng, step): it learns and stays finite.
  opt = train.make_optimizer(learning_rate=1e-2)
  step = sft.make_sft_step(graphdef, opt, loss="otr", otr_num_samples=4, prompt_len=P)
  state = train.init_train_state(params, opt, seed=0)
  losses = []
  for _ in range(3):
    state, met = step(state, batch)
    losses.append(float(met["loss"]))
  assert np.all(np.isfinite(losses)) and "otr_hit_rate" in met and int(state["step"]) == 3


@pytest.mark.parametrize("kw, field", [
    (dict(loss="ce"), "sft.loss"), (dict(loss="otr", otr_num_samples=0), "sft.otr_num_samples"),
    (dict(loss="otr", otr_temperature=-1.0), "sft.otr_temperature"),
    (dict(loss="otr", otr_wrong_reward=1.0), "sft.otr_wrong_reward")])
def test_otr_config_errors_name_the_field(kw, field):
  loss = kw.pop("loss")
  with pytest.raises(ValueError, match=field):
    sft.check_sft_loss(loss, **kw)


# --- hybrid trainer --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def groups(setup):
  """One real rollout of 2 prompts x 4 completions from the tiny policy (outcomes overridden)."""
  tok, graphdef, params, pool = setup
  trainer = _trainer(setup, "hpt")
  g, _, _ = trainer.rl.rollout(params, 0, jax.random.key(0))
  return g


def _trainer(setup, method, **kw):
  tok, graphdef, params, pool = setup
  return hybrid.HybridTrainer(
      graphdef=graphdef, params=params, tokenizer=tok,
      hybrid_config=hybrid.HybridConfig(method=method, **kw), rl_config=RL_CFG,
      optimizer=train.make_optimizer(learning_rate=1e-3), pool=pool, data_seed=0, prompt_len=P,
      reward_fn=make_reward_fn(), ref_params=params)


def _with(groups, acc):
  acc = np.asarray(acc, np.float32)
  return {**groups, "acc": acc, "rewards": acc.copy()}


_JITTED = {}


def _loss_and_grad(setup, trainer, batch):
  """jit(value_and_grad(hybrid_loss)), compiled once per hybrid config (keeps the suite fast)."""
  _, graphdef, params, _ = setup
  cfg = trainer.cfg
  if cfg not in _JITTED:
    f = lambda p, b: hybrid.hybrid_loss(p, graphdef, b, cfg=cfg, prompt_len=P)
    _JITTED[cfg] = jax.jit(jax.value_and_grad(f, has_aux=True))
  return _JITTED[cfg](params, batch)


def _demo_sft_batch(batch):
  return {"tokens": batch["demo_tokens"], "attention_mask": batch["demo_attention_mask"],
          "loss_mask": jnp.pad(batch["demo_mask"], ((0, 0), (P, 0)))}


def test_hpt_routes_all_wrong_to_sft_and_solved_to_rl(setup, groups):
  _, graphdef, params, _ = setup
  trainer = _trainer(setup, "hpt")
  wrong = trainer.make_batch(_with(groups, [[0, 0, 0, 0], [0, 0, 0, 0]]), 0)
  (loss, aux), grad = _loss_and_grad(setup, trainer, wrong)
  assert float(aux["sft_fraction"]) == 1.0 and float(aux["rl_loss"]) == 0.0
  sft_l, sft_g = jax.jit(jax.value_and_grad(sft.sft_loss), static_argnums=1)(
      params, graphdef, _demo_sft_batch(wrong))
  np.testing.assert_allclose(loss, sft_l, rtol=1e-5)
  assert _cos(grad, sft_g) > 0.9999
  mixed = trainer.make_batch(_with(groups, [[0, 0, 0, 0], [1, 0, 1, 0]]), 0)
  (_, aux), g_mixed = _loss_and_grad(setup, trainer, mixed)
  assert float(aux["sft_fraction"]) == 0.5
  # The mixed group is routed to RL: flipping its rewards flips its policy-gradient term. (Its RL
  # loss VALUE can be exactly 0: on-policy, group-normalised advantages sum to 0, and with equal
  # response lengths every completion has the same weight.)
  flipped = trainer.make_batch(_with(groups, [[0, 0, 0, 0], [0, 1, 0, 1]]), 0)
  (_, aux_f), g_flipped = _loss_and_grad(setup, trainer, flipped)
  assert float(aux_f["sft_fraction"]) == 0.5
  assert max(float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(g_mixed), jax.tree.leaves(g_flipped))) > 1e-6
  solved = trainer.make_batch(_with(groups, [[0, 1, 0, 0], [1, 0, 1, 0]]), 0)
  (loss, aux), _ = _loss_and_grad(setup, trainer, solved)
  assert float(aux["sft_fraction"]) == 0.0 and float(aux["sft_loss"]) == 0.0
  np.testing.assert_allclose(loss, aux["rl_loss"], rtol=1e-6)


def test_dypo_drops_easy_sfts_hard_and_mixes(setup, groups):
  _, graphdef, params, _ = setup
  trainer = _trainer(setup, "dypo")
  easy = trainer.make_batch(_with(groups, np.ones((2, 4))), 0)
  (loss, aux), grad = _loss_and_grad(setup, trainer, easy)
  assert float(loss) == 0.0 and float(aux["frac_easy"]) == 1.0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad))
  hard = trainer.make_batch(_with(groups, np.zeros((2, 4))), 0)
  (loss, aux), grad = _loss_and_grad(setup, trainer, hard)
  demo = _demo_sft_batch(hard)
  # gamma * sequence NLL of the teacher demo, averaged over questions.
  seq_nll = jax.jit(sft.sft_loss, static_argnums=1)(params, graphdef, demo) * jnp.sum(
      hard["demo_mask"]) / 2
  np.testing.assert_allclose(loss, seq_nll, rtol=1e-5)
  assert float(aux["frac_hard"]) == 1.0
  mixed = trainer.make_batch(_with(groups, [[1, 1, 1, 1], [1, 0, 0, 1]]), 0)
  (loss, aux), _ = _loss_and_grad(setup, trainer, mixed)
  assert float(aux["frac_mixed"]) == 0.5 and float(aux["gal_pairs"]) == 2.0  # (0 + 4) / 2
  # At pi = ref, GAL = log 2 per group and GRPO's on-policy value is 0: L = (1-alpha) log2 / 2.
  np.testing.assert_allclose(loss, 0.5 * np.log(2) / 2, rtol=1e-4)
  # Teachers: drawn per question from the configured styles, reproducibly per step.
  styles = {tuple(trainer.demo_styles(s, 8)) for s in range(6)}
  assert set(sum(styles, ())) == {"rows", "terse"} and trainer.demo_styles(3, 8) == \
      trainer.demo_styles(3, 8)


def test_copg_is_zero_at_the_reference_for_equal_rewards(setup, groups):
  trainer = _trainer(setup, "copg")
  same = trainer.make_batch(_with(groups, [[1, 1, 1, 1], [0, 0, 0, 0]]), 0)
  (loss, _), grad_same = _loss_and_grad(setup, trainer, same)
  assert abs(float(loss)) < 1e-8
  mixed = trainer.make_batch(_with(groups, [[1, 0, 0, 0], [0, 0, 0, 0]]), 0)
  (loss, _), grad = _loss_and_grad(setup, trainer, mixed)
  np.testing.assert_allclose(loss, 3.0 / 3 / 2, rtol=1e-4)  # 3 unit pairs / (k-1) / P
  # Equal rewards: only float noise of log pi - log ref (two jitted programs) is left.
  assert np.isfinite(optax_norm(grad)) and optax_norm(grad_same) < 1e-3 * optax_norm(grad)


def optax_norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree))))


@pytest.mark.parametrize("method", ["hpt", "dypo", "copg"])
def test_hybrid_loss_jit_matches_eager_and_degenerate_batches_are_finite(setup, groups, method):
  _, graphdef, params, _ = setup
  trainer = _trainer(setup, method)
  batch = trainer.make_batch(_with(groups, [[1, 0, 0, 1], [0, 0, 0, 0]]), 0)
  eager, _ = hybrid.hybrid_loss(params, graphdef, batch, cfg=trainer.cfg, prompt_len=P)
  (jitted, _), _ = _loss_and_grad(setup, trainer, batch)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-7)
  for acc in (np.zeros((2, 4)), np.ones((2, 4))):  # all-wrong and all-correct batches
    (loss, aux), grad = _loss_and_grad(setup, trainer, trainer.make_batch(_with(groups, acc), 0))
    assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in aux.values())
    assert np.isfinite(optax_norm(grad))


def test_hybrid_train_step_on_degenerate_batches(setup, groups):
  """The donated jitted update (DYPO, the most branched loss) on all-wrong then all-correct."""
  _, _, params, _ = setup
  trainer = _trainer(setup, "dypo")
  state = train.init_train_state(params, train.make_optimizer(learning_rate=1e-3), seed=0)
  for acc in (np.zeros((2, 4)), np.ones((2, 4))):  # all-wrong and all-correct batches
    state, met = trainer.train_on_groups(state, _with(groups, acc), 8)
    assert all(np.isfinite(v) for v in met.values()), met
  assert int(state["step"]) == 2 and int(state["data_pos"]) == 8
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state["params"]))


def test_hybrid_config_errors_name_the_field(setup):
  with pytest.raises(ValueError, match="hybrid.method"):
    hybrid.HybridConfig(method="ppo")
  with pytest.raises(ValueError, match="hybrid.alpha"):
    hybrid.HybridConfig(method="dypo", alpha=1.5)
  with pytest.raises(ValueError, match="hybrid.switch_gate"):
    hybrid.HybridConfig(switch_gate=-1)
  with pytest.raises(ValueError, match="style 'shouty'"):
    _trainer(setup, "dypo", teachers=("rows", "shouty"))


def test_hybrids_config_errors_name_the_field(repo_root):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("hyb_cfg",
                                                repo_root / "experiments/configs/hybrids.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  with pytest.raises(ValueError, match="config arg"):
    mod.get_config("ppo")
  for field, value in (("method", "ppo"), ("steps", 0), ("eval.split", "train")):
    c = mod.get_config("hpt,smoke")
    sec, _, name = field.rpartition(".")
    (c[sec] if sec else c)[name] = value
    with pytest.raises(ValueError, match=f"config.{field}"):
      hybrid.build_hybrids(c)


def test_hybrids_binary_smoke(run_binary, tmp_path):
  """OTR-SFT with its SFT baseline: the cheapest full path through the binary."""
  out, summary = run_binary("hybrids.py", "experiments/configs/hybrids.py:otr_sft,smoke",
                            tmp_path / "hyb")
  assert summary["method"] == "otr_sft" and summary["baseline"] == "sft"
  for k in ("start_accuracy", "final_accuracy", "final_accuracy_stderr", "baseline_accuracy"):
    assert 0.0 <= summary[k] <= 1.0
  assert "baseline sft" in out
