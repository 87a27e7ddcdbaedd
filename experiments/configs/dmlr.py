"""Configs for experiments/dmlr.py (DMLR test-time latent optimisation, arXiv 2512.12623).

Args (`--config=experiments/configs/dmlr.py:<arg>`):
  default  the shipped SFT policy (rlpost/assets/sft) on 128 held-out level-1 sum/difference
           problems; 2 think tokens (the paper README's example), 20 ES steps, table-token
           retrieval from step 5 every 5 steps.
             python experiments/dmlr.py --config=experiments/configs/dmlr.py --workdir=/tmp/dmlr
           Expected runtime on a 2-core CPU: a few minutes. Measured: 236 s wall on the shared
           2-core CPU at load ~30; accuracy plain 30.5 +- 4.1 %, think tokens T_0 8.6 +- 2.5 %,
           DMLR 8.6 +- 2.5 %; confidence reward R 4.37 -> 5.01 (n = 128). Confidence rises,
           accuracy does not (inserting latent tokens hurts this small SFT model).
  smoke    CI-sized: 4 problems, 3 ES steps, 8 new tokens: well under a minute.

sigma / learning_rate: the paper's sigma_0 = 20 and lr = 0.005 are for Qwen2.5-VL-7B. The shipped
model's token embeddings have RMS ~0.1 per coordinate, so sigma_0 = 0.5 (5x the embedding RMS) is
used here; the ES step lr * R / sigma per coordinate is then ~0.05, half the embedding RMS.
"""
import pathlib

import ml_collections

SHIPPED_SFT = pathlib.Path(__file__).resolve().parents[2] / "rlpost" / "assets" / "sft"


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.checkpoint = str(SHIPPED_SFT)
  c.num_problems = 128
  c.batch_size = 64
  c.prefix_len = 64
  c.max_new_tokens = 32
  c.dmlr = ml_collections.ConfigDict(dict(
      num_think_tokens=2, sigma=0.5, sigma_decay=0.95, learning_rate=0.005, num_steps=20,
      top_k=10, num_samples=1, baseline=False, injection_start_step=5, injection_interval=5,
      insert_stride=1, num_retrieved=2))
  if arg == "smoke":
    c.num_problems = 4
    c.batch_size = 4
    c.max_new_tokens = 8
    c.dmlr.update(num_steps=3, injection_start_step=1, injection_interval=1)
  return c
