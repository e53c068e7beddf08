"""The paper's experiments with their searches on Ray actors find what they find in this process."""

from __future__ import annotations

import numpy as np
from small_setups import small_retrain, torchscript_reference

from fooling.evo.experiments.audit import audit


def test_audit_on_ray_finds_what_the_in_process_audit_found(ray_session, tmp_path):
    _, reference = torchscript_reference(tmp_path)
    local = audit(reference, str(tmp_path / "local"), reference="none", show_progress=False)
    on_ray = audit(
        reference, str(tmp_path / "ray"), reference="none", workers=1, scorers=1, show_progress=False
    )
    for method in ("cppn", "direct"):  # the same searches, run by Ray actors
        np.testing.assert_array_equal(on_ray.table[method].to_numpy(), local.table[method].to_numpy())


def test_retrain_on_ray_gives_the_in_process_rows(ray_session, tmp_path):
    """Same seed, same everything (but the time taken), with every round's evolution on Ray actors."""
    rows = small_retrain(tmp_path / "local").rows
    again = small_retrain(tmp_path / "ray", workers=1, scorers=1).rows
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in again]
    assert len(rows) == 3 and rows[2]["outputs"] == 11  # DNN_3 fooled, with its fooling class
