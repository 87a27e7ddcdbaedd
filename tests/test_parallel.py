"""rlpost.parallel: sharding rules, 8-device mesh equivalence, and a real 2-process multi-host run."""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from rlpost import parallel
from rlpost.llm import model as model_lib
from rlpost.llm.config import ModelConfig

WORKER = pathlib.Path(__file__).with_name("parallel_worker.py")
REPO = WORKER.parents[1]


def _env(**extra):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", **extra)
  return env


@pytest.fixture(scope="module")
def single_process_runs(tmp_path_factory):
  out = tmp_path_factory.mktemp("parallel")
  subprocess.run([sys.executable, str(WORKER), "--mode=single", f"--out={out}"], check=True,
                 cwd=REPO, timeout=600,
                 env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  return out


def _assert_same(ref, got, atol=1e-5):
  assert set(ref.files) == set(got.files)
  for k in ref.files:
    np.testing.assert_allclose(got[k], ref[k], atol=atol, rtol=0, err_msg=k)


def test_mesh_of_8_equals_1_device(single_process_runs):
  ref = np.load(single_process_runs / "ref.npz")
  got = np.load(single_process_runs / "mesh.npz")
  assert ref["losses"][1] < ref["losses"][0]  # the step really trains
  _assert_same(ref, got)


def test_two_process_multihost_equals_single_process(single_process_runs, tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen([sys.executable, str(WORKER), "--mode=multihost", f"--out={tmp_path}",
                             f"--process_id={i}", f"--port={port}"], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  for p in procs:
    try:
      log, _ = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, log.decode()[-3000:]
  _assert_same(np.load(single_process_runs / "ref.npz"), np.load(tmp_path / "multihost.npz"))


def test_spec_rules_replicate_undivisible_dims():
  mesh = parallel.make_mesh(devices=jax.devices()[:1])
  assert parallel.spec_for("layers/0/mlp/up_proj/kernel/value", (32, 64), mesh) == P("fsdp")
  assert parallel.spec_for("0/mu/embed_tokens/value", (64, 32), mesh) == P("fsdp")
  assert parallel.spec_for("lm_head/kernel/value", (32, 64), mesh) == P(None, "fsdp")
  assert parallel.spec_for("norm/weight/value", (32,), mesh) == P()
  assert parallel.spec_for("0/count", (), mesh) == P()

  class FakeMesh:  # only .shape is read
    shape = {"data": 1, "fsdp": 3}
  assert parallel.spec_for("layers/0/mlp/up_proj/kernel/value", (32, 64), FakeMesh()) == P()
  with pytest.raises(ValueError, match="data=2"):
    parallel.make_mesh(data=2, fsdp=2, devices=jax.devices()[:1])


def test_train_step_does_not_recompile_and_trains():
  cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2)
  mesh = parallel.make_mesh(devices=jax.devices()[:1])
  graphdef, params, shardings = parallel.shard_model(model_lib.init_model(cfg), mesh)
  optimizer = optax.adamw(3e-3)
  opt_state, opt_shardings = parallel.init_optimizer(optimizer, params, mesh)
  step = parallel.make_sft_train_step(graphdef, optimizer, mesh=mesh, param_shardings_=shardings,
                                      opt_shardings=opt_shardings)
  rng = np.random.default_rng(0)
  losses = []
  for i in range(4):
    tokens = jnp.asarray(rng.integers(0, 8, size=(4, 12)), jnp.int32)  # new data, same bucket
    mask = jnp.ones((4, 12), jnp.int32).at[i % 4, :i].set(0)
    batch = {"tokens": tokens, "attention_mask": mask, "loss_mask": mask}
    params, opt_state, loss = step(params, opt_state, batch)
    losses.append(float(loss))
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  # The unsharded step (no mesh) computes the same update.
  plain = parallel.make_sft_train_step(graphdef, optimizer)
  p_ref, _, loss_ref = plain(*jax.tree.map(jnp.copy, (params, opt_state)), batch)
  p_mesh, _, loss_mesh = step(params, opt_state, batch)
  assert abs(float(loss_ref) - float(loss_mesh)) < 1e-6
  for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_mesh)):
    np.testing.assert_allclose(a, b, atol=1e-6)
