"""examples/tutorial.ipynb: committed without outputs, and it runs from top to bottom in a real
Jupyter kernel (nbclient), so the API it teaches keeps working.

nbclient and ipykernel come from requirements-docs.txt (`make docs`, which `make test` runs).
Without them the run skips with one line; in CI (CI=true) a skip is a failure."""
import importlib.util
import json
import os
from pathlib import Path

import pandas as pd
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "tutorial.ipynb"


def test_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert code, "the tutorial has no code cells"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, "".join(cell["source"])[:80]


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        msg = f"`{module}` is not installed (pip install -r requirements-docs.txt; make docs installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI: {msg}")
        pytest.skip(msg)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.long
def test_notebook_runs(tmp_path, monkeypatch):
    _need("nbclient")
    _need("ipykernel")
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this environment: its own Ray (not one a test or a user named), and a
    # seal key for the sweep's Tune state under tmp_path instead of the user's config directory.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("MPLBACKEND", raising=False)   # the kernel's own inline backend draws the figures
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # execute() raises CellExecutionError, naming the cell, when any cell fails.
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    [sweep_dir] = (tmp_path / "runs").glob("tutorial-*")   # the sweep's default directory
    results = pd.read_csv(sweep_dir / "results.csv")
    assert sorted(zip(results["algorithm"], results["alpha"])) == [
        ("dsgdm_n", 0.1), ("dsgdm_n", 10.0), ("qg_dsgdm_n", 0.1), ("qg_dsgdm_n", 10.0)]
    assert set(results["status"]) == {"completed"}
    assert results["final_test_accuracy"].between(0, 1).all()
    # The last code cell shows the table: one row per algorithm, one column per alpha.
    table = [cell for cell in nb.cells if cell.cell_type == "code"][-1]
    shown = table.outputs[0]["data"]["text/plain"]
    assert "alpha = 0.1" in shown and "alpha = 10" in shown and "qg_dsgdm_n" in shown
    # The curves cell drew its figure.
    assert any("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)
