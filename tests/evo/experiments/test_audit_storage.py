"""``fooling audit --out`` takes the storage URIs every other command takes: ``file://`` and
object stores (an in-memory pyarrow filesystem stands in for one: nothing leaves the process)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from small_setups import install_memory_store

import fooling.evo.experiments.audit as audit_module
from fooling.evo.cli import main
from fooling.evo.experiments.audit import Budget
from fooling.evo.store.location import read_bytes

ARGUMENTS = ["audit", "--model", "mnist-lenet", "--reference", "none", "--no-progress"]
RESULTS = ("audit.parquet", "summary.json", "report.md", "report.html")


@pytest.fixture(autouse=True)
def tiny_budget(monkeypatch):
    monkeypatch.setitem(audit_module.BUDGETS, "small", Budget(generations=2, population=10, ascent_steps=2,
                                                             ascent_classes=2))  # fmt: skip


@pytest.fixture
def memory_store(monkeypatch, tmp_path) -> pafs.FileSystem:
    """``mock://`` URIs served by an in-memory pyarrow filesystem (an object store stand-in)."""
    return install_memory_store(monkeypatch, tmp_path, audit_module)


def test_audit_writes_to_a_file_uri(fooling_home, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main([*ARGUMENTS, "--out", f"file://{out}"]) == 0
    assert {name for name in RESULTS} <= {path.name for path in out.iterdir()}
    assert (out / "cppn" / "checkpoints" / "LATEST").exists() and (out / "direct" / "stats.parquet").exists()
    table = pd.read_parquet(out / "audit.parquet")
    assert len(table) == 10 and table["cppn"].notna().all() and table["class_name"].tolist()[:2] == ["0", "1"]
    assert f"report in file://{out}/report.html" in capsys.readouterr().out


def test_audit_writes_to_an_object_store_and_nothing_locally(memory_store, fooling_home, tmp_path, capsys):
    assert main([*ARGUMENTS, "--out", "mock://bucket/audit"]) == 0
    selector = pafs.FileSelector("bucket/audit", recursive=True)
    names = {info.path.removeprefix("bucket/audit/") for info in memory_store.get_file_info(selector)}
    assert set(RESULTS) <= names and "cppn/checkpoints/LATEST" in names and "direct/stats.parquet" in names
    assert b"<!DOCTYPE html>" in read_bytes("mock://bucket/audit/report.html")
    assert sorted(path.name for path in Path(tmp_path).iterdir()) == [], "nothing written locally"
    assert main([*ARGUMENTS, "--out", "mock://bucket/audit"]) == 2  # not empty now: refused in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an audit; continue it with fooling audit --resume" in err[0]
