"""The Ray fixture: every test that needs a Ray cluster lives in this folder."""

from __future__ import annotations

import pytest
import ray

from fooling.evo.distributed.backend import init_local_ray, shutdown_ray


@pytest.fixture(scope="session")
def ray_session(fooling_home):
    """One local Ray instance for the whole session (``ray.init`` costs seconds).

    Two CPUs as on the development machine and two fake GPUs, so scorer actors are
    placed on GPUs (``num_gpus=1`` each) while torch, finding no CUDA, scores on CPU.
    Started as the CLI starts one: listening on 127.0.0.1 only, its session folder
    private. Only tests that ask for this fixture start Ray.
    """
    init_local_ray(num_cpus=2, num_gpus=2, logging_level="WARNING", log_to_driver=False)
    yield ray
    shutdown_ray()
