"""Real TabMWP loader (skips when ../shared/data/tabmwp is absent) and prompt format."""
import json

import pytest

from rlpost.llm import tasks
from rlpost.llm.tasks import schema
from rlpost.llm.tasks import tabmwp


@pytest.fixture(scope="module")
def dev1k(tabmwp_dir):
  return tasks.load_tabmwp(tabmwp_dir / "problems_dev1k.json")


def test_loads_all_dev1k_records_with_ids(dev1k, tabmwp_dir):
  raw = json.loads((tabmwp_dir / "problems_dev1k.json").read_text())
  assert len(dev1k) == len(raw) == 1000
  assert [r.pid for r in dev1k] == list(raw)
  first = dev1k[0]
  src = raw[first.pid]
  for field in schema.TABMWP_FIELDS:
    value = getattr(first, field)
    if field == "choices" and value is not None:
      value = list(value)
    if field == "table_for_pd":
      value = {k: list(v) for k, v in value.items()}
    assert value == src[field], field
  # Documented dev1k composition (llm_hybrids_and_agents.md §10).
  assert sum(r.ques_type == "multi_choice" for r in dev1k) == 275


def test_split_and_limit(tabmwp_dir):
  recs = tasks.load_tabmwp(tabmwp_dir / "problems_dev1k.json", split="dev", limit=7)
  assert len(recs) == 7 and all(r.split == "dev" for r in recs)
  ds = tabmwp.load_tabmwp_dataset(tabmwp_dir / "problems_dev1k.json", limit=3)
  assert len(ds) == 3 and "pid" in ds.column_names
  assert tabmwp.record_from_row(ds[0]).pid == recs[0].pid


def test_gold_targets_score_and_prompts_render(dev1k):
  fn = tasks.make_reward_fn(format_weight=1.0)
  rewards = fn([tasks.format_target(r) for r in dev1k], dev1k)
  assert (rewards == 2.0).all()
  mc = next(r for r in dev1k if r.ques_type == "multi_choice")
  prompt = tasks.format_prompt(mc)
  assert "\nOptions: (A) " in prompt and prompt.endswith("\nAnswer:")
  assert mc.table in prompt and mc.question in prompt


def test_prompt_format_synthetic():
  r = tasks.sample_problem(seed=0, split="train", index=3, level=1, families=["sum"])
  prompt = tasks.format_prompt(r)
  assert prompt == (f"Table: {r.table_title}\n{r.table}\nQuestion: {r.question} "
                    f"(Unit: {r.unit})\nAnswer:")
  mc = tasks.sample_problem(seed=0, split="train", index=0, level=1, families=["linearity"])
  assert "\nOptions: (A) linear (B) nonlinear\nAnswer:" in tasks.format_prompt(mc)
  assert tasks.format_prompt(mc).startswith("Table:\nx | y\n")
