"""rlpost.offline: offline RL on rlpost's own D4RL-style datasets.

Modules (import them directly; nothing heavy is imported here):
  datasets    `OfflineDataset`, `load_dataset` (random / medium / medium-replay / expert, cached)
  envs        env adapter (gymnax Pendulum-v1, rlpost point mass), rollouts, CVaR, D4RL score
  online      online TD3 with a replay buffer (trains the behaviour policies)
  td3         TD3 and TD3+BC losses, jitted update, scan-based offline training chunk
  prdc        PRDC nearest-neighbour dataset constraint (exact blocked top-1 search)
  cdsa        denoising score model of dataset actions and decision-time correction
  diffusion   policy-guided EDM trajectory diffusion and synthetic transitions
  experiment  the runner behind experiments/offline.py
  hnpg        hybrid NPG (maintained separately)
"""
