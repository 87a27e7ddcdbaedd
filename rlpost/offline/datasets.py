"""D4RL-style offline datasets generated from rlpost's own JAX environments, with caching.

Recipe (Fu et al., "D4RL: Datasets for Deep Data-Driven Reinforcement Learning", 2020,
arXiv 2004.07219, Sec. 5), with TD3 in place of SAC:
  - `expert`:        the best online-TD3 snapshot (trained here, `rlpost.offline.online`), run
                     with Gaussian action noise `behaviour_noise * max_action`;
  - `medium`:        the snapshot whose evaluation score is closest to `medium_score`
                     (default 40, i.e. within the D4RL "1/3 to 1/2 of expert" band), same noise;
  - `medium-replay`: the online replay buffer up to the medium snapshot;
  - `random`:        uniform random actions.
Reference returns for the D4RL normalised score, `100 (R - R_random) / (R_expert - R_random)`,
are the mean returns of the uniform policy and of the (noise-free) expert over
`reference_episodes` episodes.

Files: `<cache_dir>/<env>-<config hash>/<kind>.npz` with `observations, actions, rewards,
next_observations, terminals, timeouts` (`terminals` are true terminations only; time-limit ends
are `timeouts`, so the critic bootstraps through them) plus `random_return`, `expert_return`.
Generated on first request, never committed; the default cache is `$RLPOST_CACHE` or
`~/.cache/rlpost`.
"""
import dataclasses
import hashlib
import json
import os
import warnings
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rlpost.offline import envs
from rlpost.offline import online as online_lib
from rlpost.offline import td3

Array = jax.Array
DATASET_KINDS = ("random", "medium", "medium-replay", "expert")
ARRAY_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals",
                "timeouts")
_FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class OfflineDataset:
  """One offline dataset: transitions `[N, ...]` (numpy) plus its score references."""
  env_name: str
  kind: str
  observations: np.ndarray
  actions: np.ndarray
  rewards: np.ndarray
  next_observations: np.ndarray
  terminals: np.ndarray
  timeouts: np.ndarray
  random_return: float
  expert_return: float

  @property
  def size(self) -> int:
    return int(self.observations.shape[0])

  def normalization(self, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """State mean and std (+eps) as in TD3+BC."""
    return self.observations.mean(0), self.observations.std(0) + eps

  def as_arrays(self, normalize: bool = True) -> dict[str, Array]:
    """Device arrays for training, states (and next states) normalised when asked."""
    mean, std = self.normalization() if normalize else (0.0, 1.0)
    return {
        "observations": jnp.asarray((self.observations - mean) / std, jnp.float32),
        "actions": jnp.asarray(self.actions, jnp.float32),
        "rewards": jnp.asarray(self.rewards, jnp.float32),
        "next_observations": jnp.asarray((self.next_observations - mean) / std, jnp.float32),
        "terminals": jnp.asarray(self.terminals, jnp.float32),
    }

  def normalized_score(self, returns) -> np.ndarray:
    return np.asarray(envs.normalized_score(np.asarray(returns), random_return=self.random_return,
                                            expert_return=self.expert_return))

  def episode_returns(self) -> np.ndarray:
    """Returns of the complete episodes (those ending in a terminal or timeout)."""
    ends = np.flatnonzero(self.terminals | self.timeouts)
    sums = np.cumsum(self.rewards)
    starts = np.concatenate([[-1], ends[:-1]])
    return sums[ends] - np.where(starts >= 0, sums[np.maximum(starts, 0)], 0.0)


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """How the four datasets of one env are produced (all fields enter the cache key)."""
  online: online_lib.OnlineConfig = online_lib.OnlineConfig()
  num_transitions: int = 20_000
  behaviour_noise: float = 0.1
  medium_score: float = 40.0
  reference_episodes: int = 100
  seed: int = 0

  def __post_init__(self):
    if self.num_transitions < 1:
      raise ValueError(f"num_transitions must be >= 1, got {self.num_transitions}")
    if not 0.0 < self.medium_score < 100.0:
      raise ValueError(f"medium_score must be in (0, 100), got {self.medium_score}")
    if self.reference_episodes < 1:
      raise ValueError(f"reference_episodes must be >= 1, got {self.reference_episodes}")

  def cache_key(self, env_name: str) -> str:
    text = json.dumps({"env": env_name, "v": _FORMAT_VERSION, **dataclasses.asdict(self)},
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def default_dataset_config(env_name: str, preset: str = "default") -> DatasetConfig:
  """Per-env dataset recipes. "default": about 5 (point_mass) to 10 (pendulum) CPU-minutes on a
  lightly loaded 2-core machine; "smoke": CI-sized, seconds of compute, weak "expert"."""
  envs.make_env(env_name)
  if preset == "smoke":
    return DatasetConfig(online=online_lib.OnlineConfig(total_steps=600, learning_starts=200,
                                                    eval_every=200, eval_episodes=2,
                                                    hidden_sizes=(32, 32)),
                         num_transitions=1_000, reference_episodes=8)
  if preset != "default":
    raise ValueError(f"dataset preset must be 'default' or 'smoke', got {preset!r}")
  if env_name == "pendulum":
    return DatasetConfig(online=online_lib.OnlineConfig(total_steps=15_000, eval_every=1_000,
                                                    hidden_sizes=(64, 64)))
  return DatasetConfig(online=online_lib.OnlineConfig(total_steps=8_000, eval_every=500,
                                                  hidden_sizes=(64, 64)))


def default_cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("RLPOST_CACHE", pathlib.Path.home() / ".cache" / "rlpost"))


def collect_transitions(spec: envs.EnvSpec, policy_fn: envs.PolicyFn, key: Array,
                        num_episodes: int) -> tuple[Array, ...]:
  """Runs `num_episodes` full episodes of `policy_fn` (pure, jit-able).

  Returns `ARRAY_FIELDS`-ordered arrays shaped `[num_episodes, horizon, ...]`; `next_observations`
  is the true next observation (`info["final_observation"]`), not the auto-reset one.
  """
  env, params = spec.env, spec.params

  def one_episode(ep_key):
    reset_key, run_key = jax.random.split(ep_key)
    obs, state = env.reset(reset_key, params)

    def step(carry, step_key):
      obs, state = carry
      act_key, env_key = jax.random.split(step_key)
      action = policy_fn(obs, act_key)
      next_obs, state, reward, terminated, truncated, info = env.step(env_key, state, action,
                                                                      params)
      row = (obs, action, reward, info["final_observation"], terminated, truncated)
      return (next_obs, state), row

    return jax.lax.scan(step, (obs, state), jax.random.split(run_key, spec.horizon))[1]

  return jax.vmap(one_episode)(jax.random.split(key, num_episodes))


def _flatten(rows) -> dict[str, np.ndarray]:
  rows = jax.device_get(rows)
  return {name: np.asarray(x).reshape((-1,) + np.shape(x)[2:])
          for name, x in zip(ARRAY_FIELDS, rows)}


def generate_datasets(env_name: str, config: DatasetConfig = DatasetConfig(),
                      progress: bool = False, log_fn: Callable[[dict], None] | None = None
                      ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """Trains the behaviour policies and builds the four datasets of `env_name`.

  Returns `(arrays by kind, metadata)`; metadata holds the reference returns and the chosen
  snapshots' steps and scores.
  """
  spec = envs.make_env(env_name)
  key = jax.random.key(config.seed)
  k_ref, k_online, k_eval, k_collect = jax.random.split(key, 4)
  num_episodes = -(-config.num_transitions // spec.horizon)

  random_policy = envs.uniform_random_policy(spec)
  random_return = float(jnp.mean(envs.rollout_returns(spec, random_policy, k_ref,
                                                      config.reference_episodes)))
  result = online_lib.train_online_td3(spec, k_online, config.online, progress=progress,
                                   log_fn=log_fn)
  agent, snaps = result.agent, result.snapshots
  ones, zeros = np.ones(spec.observation_size), np.zeros(spec.observation_size)

  @jax.jit
  def reference_returns(actor_params, key):
    policy = td3.make_policy_fn(agent, actor_params, zeros, ones)
    return envs.rollout_returns(spec, policy, key, config.reference_episodes)

  def reference_return(actor_params):
    return float(jnp.mean(reference_returns(actor_params, k_eval)))

  expert_index = int(np.argmax([s["eval_return"] for s in snaps]))
  expert = snaps[expert_index]
  expert_return = reference_return(expert["actor_params"])
  expert_above_random = expert_return > random_return + 1e-6
  if not expert_above_random:
    # Only expected for the CI-sized "smoke" recipe; scores are meaningless then.
    warnings.warn(f"{env_name}: expert return {expert_return:.1f} is not above random "
                  f"{random_return:.1f}; raise online.total_steps")
    expert_return = random_return + 1.0
  # Re-score every candidate with the reference episodes: the 10-episode online evaluations
  # are too noisy to place "medium" in the D4RL band.
  candidates = [reference_return(s["actor_params"]) for s in snaps[:expert_index + 1]]
  scores = [100 * (r - random_return) / (expert_return - random_return) for r in candidates]
  medium_index = int(np.argmin(np.abs(np.asarray(scores) - config.medium_score)))
  medium = snaps[medium_index]

  @jax.jit
  def collect_behaviour(actor_params, key):
    policy = td3.make_policy_fn(agent, actor_params, zeros, ones,
                                noise_std=config.behaviour_noise)
    return collect_transitions(spec, policy, key, num_episodes)

  keys = jax.random.split(k_collect, 3)
  random_rows = jax.jit(lambda k: collect_transitions(spec, random_policy, k, num_episodes))
  arrays = {
      "random": _flatten(random_rows(keys[0])),
      "medium": _flatten(collect_behaviour(medium["actor_params"], keys[1])),
      "expert": _flatten(collect_behaviour(expert["actor_params"], keys[2])),
      "medium-replay": {k: v[:medium["env_steps"]] for k, v in result.buffer.items()},
  }
  metadata = {
      "env_name": env_name, "random_return": random_return, "expert_return": expert_return,
      "expert_env_steps": expert["env_steps"], "medium_env_steps": medium["env_steps"],
      "medium_score": scores[medium_index], "medium_return": candidates[medium_index],
      "expert_above_random": expert_above_random,
      "online_curve": [(s["env_steps"], s["eval_return"]) for s in snaps],
      "config": dataclasses.asdict(config),
  }
  return arrays, metadata


def dataset_dir(env_name: str, config: DatasetConfig, cache_dir=None) -> pathlib.Path:
  root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  return root / "offline_datasets" / f"{env_name}-{config.cache_key(env_name)}"


def load_dataset(env_name: str, kind: str, *, config: DatasetConfig = DatasetConfig(),
                 cache_dir=None, progress: bool = False,
                 log_fn: Callable[[dict], None] | None = None) -> OfflineDataset:
  """Loads `kind` of `env_name` from the cache, generating all four kinds on a miss."""
  envs.make_env(env_name)  # validates the name
  if kind not in DATASET_KINDS:
    raise ValueError(f"dataset kind must be one of {DATASET_KINDS}, got {kind!r}")
  directory = dataset_dir(env_name, config, cache_dir)
  if not (directory / "metadata.json").exists():
    arrays, metadata = generate_datasets(env_name, config, progress=progress, log_fn=log_fn)
    directory.mkdir(parents=True, exist_ok=True)
    for name, fields in arrays.items():
      np.savez(directory / f"{name}.npz", random_return=metadata["random_return"],
               expert_return=metadata["expert_return"], **fields)
    # metadata.json last: its presence marks a complete cache entry.
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=1, default=str))
  with np.load(directory / f"{kind}.npz") as f:
    fields = {name: f[name] for name in ARRAY_FIELDS}
    return OfflineDataset(env_name=env_name, kind=kind, random_return=float(f["random_return"]),
                          expert_return=float(f["expert_return"]), **fields)


def load_metadata(env_name: str, *, config: DatasetConfig = DatasetConfig(),
                  cache_dir=None) -> dict:
  return json.loads((dataset_dir(env_name, config, cache_dir) / "metadata.json").read_text())
