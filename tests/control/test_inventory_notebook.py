"""Executes notebooks/classical_control.ipynb (smoke settings) with nbclient."""
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_classical_control_notebook_executes():
  nb = nbformat.read(REPO / "notebooks" / "classical_control.ipynb", as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "optimum (value iteration): 4.04" in outputs
  assert "HDPO base_stock test cost" in outputs and "HDPO mlp test cost" in outputs
  assert "nan" not in outputs.lower()
