"""Worker for tests/test_parallel.py: runs the sharded SFT step and saves losses + params.

  --mode=single     one process; needs XLA_FLAGS=--xla_force_host_platform_device_count=8. Runs the
                    step on a 1-device mesh and on a (2, 4) mesh; writes ref.npz and mesh.npz.
  --mode=multihost  one of two localhost processes (jax.distributed.initialize, gloo CPU
                    collectives, 4 CPU devices each) running the (2, 4) mesh over all 8 devices;
                    process 0 writes multihost.npz.
"""
import argparse
import os
import pathlib

import numpy as np

STEPS = 2


def _problem():
  from rlpost.llm.config import ModelConfig  # pylint: disable=g-import-not-at-top
  cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 64, size=(8, 16)).astype(np.int32)
  mask = np.ones((8, 16), np.int32)
  mask[::2, :5] = 0  # left padding in half the rows
  loss_mask = mask.copy()
  loss_mask[:, :8] = 0  # "prompt" positions carry no loss
  return cfg, {"tokens": tokens, "attention_mask": mask, "loss_mask": loss_mask}


def run(mesh):
  """STEPS AdamW steps on `mesh`; returns (losses, flat host params)."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from rlpost import parallel  # pylint: disable=g-import-not-at-top
  from rlpost.llm import model as model_lib  # pylint: disable=g-import-not-at-top

  cfg, batch = _problem()
  model = model_lib.init_model(cfg, seed=0)
  graphdef, params, shardings = parallel.shard_model(model, mesh)
  optimizer = optax.adamw(1e-3, weight_decay=0.1)
  opt_state, opt_shardings = parallel.init_optimizer(optimizer, params, mesh)
  step = parallel.make_sft_train_step(graphdef, optimizer, mesh=mesh,
                                      param_shardings_=shardings, opt_shardings=opt_shardings)
  data = parallel.batch_sharding(mesh)
  batch = parallel.put_global(batch, {k: data for k in batch})
  losses = []
  for _ in range(STEPS):
    params, opt_state, loss = step(params, opt_state, batch)
    losses.append(float(np.asarray(loss.addressable_data(0))))  # replicated scalar
  flat = {parallel.path_name(p): np.asarray(multihost_utils.process_allgather(x, tiled=True))
          for p, x in jax.tree_util.tree_leaves_with_path(params)}
  return np.asarray(losses), flat


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--mode", choices=["single", "multihost"], required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  import jax  # pylint: disable=g-import-not-at-top
  if args.mode == "multihost":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_num_cpu_devices", 4)
    jax.distributed.initialize(coordinator_address=f"localhost:{args.port}", num_processes=2,
                               process_id=args.process_id)
    assert jax.device_count() == 8 and jax.local_device_count() == 4, jax.devices()
  from rlpost import parallel  # pylint: disable=g-import-not-at-top
  if args.mode == "single":
    assert jax.device_count() == 8, (jax.devices(), os.environ.get("XLA_FLAGS"))
    for name, mesh in (("ref", parallel.make_mesh(devices=jax.devices()[:1])),
                       ("mesh", parallel.make_mesh(data=2, fsdp=4))):
      losses, flat = run(mesh)
      np.savez(out / f"{name}.npz", losses=losses, **flat)
  else:
    losses, flat = run(parallel.make_mesh(data=2, fsdp=4))
    if jax.process_index() == 0:
      np.savez(out / "multihost.npz", losses=losses, **flat)
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
