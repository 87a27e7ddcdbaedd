"""Executes notebooks/meta_and_dp.ipynb (smoke settings) with nbclient."""
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_meta_notebook_executes():
  nb = nbformat.read(REPO / "notebooks" / "meta_and_dp.ipynb", as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "D(1, A) = 0 for both: 0.0 0.0" in outputs
  assert "ppo final return (lifetime 4)" in outputs
  assert "dpo final return (lifetime 4)" in outputs
