"""SFT: response-masked bucketed batches, the donated jitted step, the data stream across epochs,
and an exact checkpoint resume at an epoch boundary."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.llm import checkpoint
from rlpost.llm import sft
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import init_model
from rlpost.llm.tasks import encode_example
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer

TINY = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
P, R = 64, 32


@pytest.fixture(scope="module")
def setup():
  tok = load_tokenizer()
  graphdef, params = nnx.split(init_model(TINY, seed=0))
  pool = generate_dataset(16, split="train", level=1, families=("sum", "difference"))
  return tok, graphdef, params, pool


def test_sft_batch_layout_masks_only_the_response(setup):
  tok, _, _, pool = setup
  batch = sft.make_sft_batch(tok, pool[:3], prompt_len=P, response_len=R)
  for i, r in enumerate(pool[:3]):
    p_ids, t_ids = encode_example(tok, r)
    row = batch["tokens"][i]
    assert row[P - len(p_ids):P].tolist() == p_ids and row[P:P + len(t_ids)].tolist() == t_ids
    assert batch["loss_mask"][i].sum() == len(t_ids) and batch["loss_mask"][i, :P].sum() == 0
    assert batch["attention_mask"][i].sum() == len(p_ids) + len(t_ids)
  with pytest.raises(ValueError, match=f"record {pool[0].pid!r}.*response_len=4"):
    sft.make_sft_batch(tok, pool[:1], prompt_len=P, response_len=4)


def test_sft_loss_jit_matches_eager_and_empty_mask_is_finite(setup):
  tok, graphdef, params, pool = setup
  batch = {k: jnp.asarray(v) for k, v in
           sft.make_sft_batch(tok, pool[:4], prompt_len=P, response_len=R).items()}
  eager = sft.sft_loss(params, graphdef, batch)
  jitted = jax.jit(sft.sft_loss, static_argnums=1)(params, graphdef, batch)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5)
  assert abs(float(eager) - np.log(384)) < 0.5  # near-uniform at init
  empty = dict(batch, loss_mask=jnp.zeros_like(batch["loss_mask"]))
  assert float(sft.sft_loss(params, graphdef, empty)) == 0.0


def test_sft_step_learns_donates_and_compiles_once(setup):
  tok, graphdef, params, pool = setup
  opt = train.make_optimizer(learning_rate=1e-2)
  step = sft.make_sft_step(graphdef, opt)
  state = train.init_train_state(params, opt, seed=0)
  batch = sft.make_sft_batch(tok, pool[:8], prompt_len=P, response_len=R)
  losses = []
  for _ in range(6):
    old = state
    state, met = step(state, batch)
    losses.append(float(met["loss"]))
  assert old["params"]["embed_tokens"].value.is_deleted()
  assert losses[-1] < losses[0] - 0.5
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state["step"]) == 6 and int(state["data_pos"]) == 48


def test_sft_stream_reshuffles_per_epoch_and_continues_across_the_boundary():
  n = 10
  stream = train.stream_indices(3, n, 0, 3 * n)
  for e in range(3):
    assert sorted(stream[e * n:(e + 1) * n].tolist()) == list(range(n))
  assert stream[:n].tolist() != stream[n:2 * n].tolist()
  np.testing.assert_array_equal(train.stream_indices(3, n, n - 2, 4), stream[n - 2:n + 2])
  with pytest.raises(ValueError, match="empty"):
    train.stream_indices(0, 0, 0, 1)


def test_sft_resume_at_epoch_boundary_is_exact(setup, tmp_path):
  """Pool of 16, batch 8: the checkpoint after step 2 sits exactly at the end of epoch 0. The
  resumed run must train steps 3-4 (epoch 1) and match an uninterrupted 4-step run bit for bit."""
  tok, graphdef, params, pool = setup
  opt = train.make_optimizer(learning_rate=1e-2)
  step = sft.make_sft_step(graphdef, opt)

  def run(state, n):
    for _ in range(n):
      idx = train.stream_indices(0, len(pool), int(state["data_pos"]), 8)
      state, _ = step(state, sft.make_sft_batch(tok, [pool[i] for i in idx], prompt_len=P,
                                                response_len=R))
    return state

  full = run(train.init_train_state(params, opt, seed=0), 4)
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
  half = run(train.init_train_state(params, opt, seed=0), 2)
  assert int(half["data_pos"]) == len(pool)  # exactly one epoch
  ckpt.save(2, half)
  like = train.init_train_state(params, opt, seed=0)
  resumed = run(ckpt.restore(like), 2)
  ckpt.close()
  assert int(resumed["step"]) == 4 and int(resumed["data_pos"]) == 2 * len(pool)
  for x, y in zip(jax.tree.leaves(full["params"]), jax.tree.leaves(resumed["params"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
