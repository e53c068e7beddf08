"""Trackers on a Ray run: the driver logs, the actors know nothing of them."""

from __future__ import annotations

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fooling.evo.config import RunConfig
from fooling.evo.run import evolve


def test_a_ray_run_reports_every_generation_to_tensorboard(ray_session, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(model="mnist-lenet", population=40, batch_size=20, seed=5, generations=4,
                       checkpoint_every=2, workers=1, scorers=1, out=str(out))  # fmt: skip
    evolve(config, show_progress=False, trackers=["tensorboard"])
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    medians = events.Scalars("fitness/median")
    stats = pd.read_parquet(out / "stats.parquet")
    assert [s.step for s in medians] == stats["gen"].tolist() == [0, 1, 2, 3]
    assert [s.value for s in medians] == stats["median"].astype("float32").tolist()
    assert [event.step for event in events.Images(events.Tags()["images"][0])] == [1, 3]
