"""Config for experiments/inventory.py (HDPO inventory control, arXiv:2306.11246).

Launch (from the repo root):
  python experiments/inventory.py \
      --config=experiments/configs/inventory.py:setting=lost_sales,lead_time=2,p=9 --workdir=/tmp/inv

The arg is a comma-separated list of key=value pairs for the top-level fields below (setting, lead_time,
p, h, policy, n_stores, n_train_scenarios, seed, n_steps, batch_size, learning_rate), plus the bare token
`smoke` for a CI-sized run (about 10-20 s on a 2-core CPU, mostly compilation). Single-store defaults
take about 60 s of CPU time on a 2-core machine (train_cpu_s in summary.json), plus ~10 s of test
evaluation; multi-store runs (setting=one_warehouse,n_stores=10,policy=gnn) take a few minutes.
Examples: `setting=backlogged,lead_time=4,p=9`, `setting=lost_sales,lead_time=1,p=4,policy=ppo`,
`setting=one_warehouse,n_stores=50,policy=gnn,n_train_scenarios=1024`.
"""
import ml_collections

_INT = ("lead_time", "n_stores", "n_train_scenarios", "seed", "n_steps", "batch_size",
        "problem_seed", "message_steps")
_FLOAT = ("p", "h", "learning_rate")
_STR = ("setting", "policy")


def _parse(arg: str) -> tuple[dict, bool]:
  values, smoke = {}, False
  for tok in filter(None, (t.strip() for t in (arg or "").split(","))):
    if tok == "smoke":
      smoke = True
      continue
    if "=" not in tok:
      raise ValueError(f"config arg token {tok!r} is not key=value or 'smoke'")
    k, v = tok.split("=", 1)
    if k == "smoke":
      smoke = v.lower() in ("1", "true", "yes")
    elif k in _INT:
      values[k] = int(v)
    elif k in _FLOAT:
      values[k] = float(v)
    elif k in _STR:
      values[k] = v
    else:
      raise ValueError(f"unknown config field {k!r}; expected one of {_INT + _FLOAT + _STR}")
  return values, smoke


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  values, smoke = _parse(arg)
  c = ml_collections.ConfigDict()
  c.setting = values.get("setting", "lost_sales")
  c.lead_time = values.get("lead_time", 2)
  c.p = values.get("p", 9.0)
  c.h = values.get("h", 1.0)
  c.policy = values.get("policy", "gnn" if c.setting == "one_warehouse" else
                        "echelon_stock" if c.setting == "serial" else "mlp")
  c.n_stores = values.get("n_stores", 10)
  c.problem_seed = values.get("problem_seed", 0)
  c.seed = values.get("seed", 0)
  c.hidden = (32, 32, 32) if c.setting != "one_warehouse" else (128, 128, 128)
  c.message_steps = values.get("message_steps", 2)
  multi = c.setting == "one_warehouse"
  c.hdpo = ml_collections.ConfigDict(dict(
      n_steps=600 if multi else 1600, batch_size=256 if multi else 512, periods=60,
      ignore_periods=20, learning_rate=1e-3 if multi else 1e-2,
      final_lr_fraction=0.05 if multi else 0.01,
      grad_clip=1.0 if multi else None, eval_every=100, dev_scenarios=1024 if multi else 2048,
      dev_periods=100, dev_ignore=60, test_scenarios=1024 if multi else 4096,
      test_periods=500 if multi else 2000, test_ignore=200 if multi else 1000,
      n_train_scenarios=values.get("n_train_scenarios", 8192 if multi else None)))
  if c.policy in ("base_stock", "capped_base_stock", "echelon_stock"):
    c.hdpo.learning_rate = 0.05
  c.pg = ml_collections.ConfigDict(dict(
      algorithm="reinforce" if c.policy == "reinforce" else "ppo", n_updates=300, num_envs=256,
      rollout_len=64, n_actions=16, learning_rate=3e-4))
  if smoke:
    c.hdpo.update(n_steps=20, batch_size=64, periods=20, ignore_periods=5, eval_every=10,
                  dev_scenarios=64, dev_periods=30, dev_ignore=10, test_scenarios=128,
                  test_periods=200, test_ignore=100)
    if multi:
      c.hdpo.n_train_scenarios = min(c.hdpo.n_train_scenarios or 256, 256)
    c.pg.update(n_updates=10, num_envs=32, rollout_len=16)
  for k in ("n_steps", "batch_size", "learning_rate"):
    if k in values:
      c.hdpo[k] = values[k]
  return c
