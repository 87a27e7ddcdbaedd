"""Configs for experiments/offline.py.

Launch:
  python experiments/offline.py --config=experiments/configs/offline.py:<arg> --workdir=<dir>

`arg` is `smoke`, or `<methods>:<envs>:<datasets>` with `+`-separated lists, e.g.
  td3_bc+prdc:pendulum:medium+medium-replay      (methods: td3, td3_bc, prdc, cdsa, pgd;
  cdsa:point_mass:medium                          envs: pendulum, point_mass;
  pgd:point_mass:medium-replay                    datasets: random, medium, medium-replay, expert)
Empty parts use the defaults (td3_bc+prdc+cdsa, both envs, medium+medium-replay).

Expected runtime on a 2-core CPU (lightly loaded): smoke about 1-2 minutes, mostly XLA
compilation (tiny datasets cached like the full ones; set RLPOST_CACHE to redirect); full runs about 1-3 minutes per method and dataset at
num_steps=10_000 plus, on a cold cache, 5-10 minutes per env to generate the datasets
(cached under $RLPOST_CACHE or ~/.cache/rlpost). Paper runs use 1M steps; this is CPU scale.
"""
import ml_collections


def get_config(arg: str = ""):
  config = ml_collections.ConfigDict()
  config.env_names = ["pendulum", "point_mass"]
  config.dataset_kinds = ["medium", "medium-replay"]
  config.methods = ["td3_bc", "prdc", "cdsa"]
  config.dataset_preset = "default"
  config.cache_dir = ""  # "" = $RLPOST_CACHE or ~/.cache/rlpost; "__workdir__/x" = <workdir>/x
  config.seed = 0
  config.num_steps = 10_000
  config.eval_every = 1_000
  config.eval_episodes = 10
  config.final_eval_episodes = 50
  config.batch_size = 256
  config.hidden_sizes = (256, 256)
  config.alpha = 2.5          # TD3+BC and PRDC
  config.prdc_beta = 2.0      # PRDC README setting for hopper/walker2d
  config.prdc_block_size = 4096

  config.cdsa = ml_collections.ConfigDict()
  config.cdsa.num_steps = 5_000
  config.cdsa.correction_sigma = 0.1
  config.cdsa.step_size = 1.0
  config.cdsa.num_correction_steps = 1

  config.pgd = ml_collections.ConfigDict()
  config.pgd.horizon = 16
  config.pgd.stride = 4
  config.pgd.train_steps = 5_000
  config.pgd.batch_size = 64
  config.pgd.hidden_sizes = (512, 512)
  config.pgd.num_trajectories = 1_000
  config.pgd.sampling_steps = 32
  config.pgd.guidance_coeff = 0.1

  if arg == "smoke":
    config.env_names = ["point_mass"]
    config.dataset_kinds = ["medium"]
    config.methods = ["td3_bc", "prdc", "cdsa", "pgd"]
    config.dataset_preset = "smoke"
    config.num_steps = 40
    config.eval_every = 20
    config.eval_episodes = 2
    config.final_eval_episodes = 4
    config.batch_size = 32
    config.hidden_sizes = (32, 32)
    config.cdsa.num_steps = 20
    config.pgd.horizon = 4
    config.pgd.train_steps = 20
    config.pgd.batch_size = 8
    config.pgd.hidden_sizes = (32,)
    config.pgd.num_trajectories = 8
    config.pgd.sampling_steps = 4
  elif arg:
    parts = (arg.split(":") + ["", "", ""])[:3]
    if len(arg.split(":")) > 3:
      raise ValueError(f"config arg must be 'smoke' or '<methods>:<envs>:<datasets>', got {arg!r}")
    for field, part in zip(("methods", "env_names", "dataset_kinds"), parts):
      if part:
        config[field] = part.split("+")
  return config
