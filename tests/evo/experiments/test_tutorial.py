"""The tutorial notebook runs from top to bottom (nbclient), with inline matplotlib figures."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extras (nbclient, ipykernel) are not installed")
nbclient = pytest.importorskip("nbclient", reason="the test extras (nbclient, ipykernel) are not installed")
pytest.importorskip("ipykernel", reason="the test extras (nbclient, ipykernel) are not installed")

NOTEBOOK = Path(__file__).resolve().parents[3] / "docs" / "tutorials" / "audit_your_classifier.ipynb"


def test_audit_tutorial_runs_and_draws_inline(tmp_path, monkeypatch):
    monkeypatch.setenv("FOOLING_HOME", os.environ.get("FOOLING_HOME") or str(tmp_path / "home"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) == 1  # the bar chart, drawn by the inline backend
    tables = [output for output in outputs if "text/html" in output.get("data", {})]
    assert len(tables) >= 2  # the audit table and the checkpoint, shown by pandas
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "test accuracy" in printed and "report:" in printed
    table = pd.read_parquet(tmp_path / "audit-tutorial" / "report" / "audit.parquet")
    assert len(table) == 10 and table["class_name"].iloc[0] == "zero"
    assert (tmp_path / "audit-tutorial" / "report" / "report.html").exists()
