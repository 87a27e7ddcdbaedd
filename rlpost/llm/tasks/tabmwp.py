"""Loader for the real TabMWP files (problems_*.json of the PromptPG repository).

TabMWP: Lu et al., "Dynamic Prompt Learning via Policy Gradient for Semi-structured
Mathematical Reasoning", ICLR 2023, arXiv 2209.14610. Each file is one JSON object keyed by
problem id; the records are put in a `datasets.Dataset` (local file only, nothing downloaded)
and then validated into `TabMWPRecord`s.

Deviation: `table_for_pd` has different column names in every record, which Arrow would widen
into one struct with null-filled columns; it is therefore stored in the Dataset as a JSON string
(column `table_for_pd_json`) and decoded, key order preserved, on validation.
"""
from __future__ import annotations

import json
import os
import pathlib

from rlpost.llm.tasks import schema


def _read_problems(path: pathlib.Path) -> dict:
  if not path.is_file():
    raise FileNotFoundError(f"TabMWP file not found: {str(path)!r}")
  try:
    with open(path, encoding="utf-8") as f:
      problems = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"TabMWP file {str(path)!r} is not valid JSON: {e}") from e
  if not isinstance(problems, dict):
    raise ValueError(f"TabMWP file {str(path)!r} must hold a JSON object keyed by problem id, "
                     f"got {type(problems).__name__}")
  return problems


def load_tabmwp_dataset(path_json: str | os.PathLike, *, split: str | None = None,
                        limit: int | None = None) -> "datasets.Dataset":
  """Validated problems as a `datasets.Dataset`: a `pid` column, TabMWP's fields, and
  `table_for_pd_json` in place of `table_for_pd` (see module docstring).

  Every record is validated before Arrow sees it, so a malformed row raises
  `schema.RecordError` naming its problem id and field rather than an Arrow type error.
  """
  if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
    raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
  path = pathlib.Path(path_json)
  problems = _read_problems(path)
  rows = []
  for pid, raw in problems.items():
    record = schema.validate_record(raw, pid=pid)
    row = {field: getattr(record, field) for field in schema.TABMWP_FIELDS}
    row["choices"] = None if record.choices is None else list(record.choices)
    row["table_for_pd_json"] = json.dumps({k: list(v) for k, v in record.table_for_pd.items()})
    del row["table_for_pd"]
    rows.append({"pid": record.pid, **row})
  if not rows:
    raise ValueError(f"TabMWP file {str(path)!r} holds no problems")
  import datasets  # pylint: disable=g-import-not-at-top  # slow import; only the loader needs it

  ds = datasets.Dataset.from_list(rows)
  if split is not None:
    splits = sorted(set(ds["split"]))
    if split not in splits:
      raise ValueError(f"split {split!r} not found in {str(path)!r}; it has splits {splits}")
    ds = ds.select([i for i, s in enumerate(ds["split"]) if s == split])
  if limit is not None:
    ds = ds.select(range(min(limit, len(ds))))
  return ds


def record_from_row(row: dict) -> schema.TabMWPRecord:
  """Inverse of the Dataset row layout used by `load_tabmwp_dataset`."""
  raw = {k: v for k, v in row.items() if k != "table_for_pd_json"}
  raw["table_for_pd"] = json.loads(row["table_for_pd_json"])
  return schema.validate_record(raw, pid=row["pid"])


def load_tabmwp(path_json: str | os.PathLike, *, split: str | None = None,
                limit: int | None = None) -> list[schema.TabMWPRecord]:
  """Validated records (each carrying its problem id as `pid`) from a problems_*.json file.

  Args:
    path_json: a problems_*.json file (a JSON object keyed by problem id).
    split: keep only records whose `split` field equals this ("train", "dev", "test", ...).
    limit: keep at most this many records (file order).

  Raises:
    FileNotFoundError / ValueError for an unreadable file, an unknown split or a bad limit;
    schema.RecordError naming the problem id and field for a malformed record.
  """
  ds = load_tabmwp_dataset(path_json, split=split, limit=limit)
  return [record_from_row(row) for row in ds]
