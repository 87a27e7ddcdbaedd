"""Executes notebooks/offline_and_model_based.ipynb (smoke settings) with nbclient."""
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_offline_notebook_executes(tmp_path_factory, monkeypatch):
  # Reuse the smoke datasets of test_offline_experiment.py when it ran first in this session.
  monkeypatch.setenv("RLPOST_CACHE",
                     str(tmp_path_factory.getbasetemp() / "rlpost_offline_cache"))
  nb = nbformat.read(REPO / "notebooks" / "offline_and_model_based.ipynb", as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "matches cKDTree: True" in outputs
  assert "cdsa" in outputs
  # Model-based part (smoke: COPlanner only, ScaleZero MoE + DPS only).
  assert "mean disagreement" in outputs
  assert "coplanner" in outputs
  assert "scalezero" in outputs
