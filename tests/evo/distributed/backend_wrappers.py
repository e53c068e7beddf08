"""Backend wrappers for the Ray tests: one SIGKILLs actors mid-run, one keeps what came back."""

from __future__ import annotations

import os
import signal

import fooling.evo.distributed.backend as distributed


class ActorKiller:
    """Wraps a RayBackend: SIGKILLs one actor's process right after a generation's first result.

    Args:
        inner: the backend.
        kills: generation -> the kind of actor to kill then (``mutator`` or ``scorer``).
        index: which actor of that kind.
    """

    def __init__(self, inner: distributed.RayBackend, kills: dict[int, str], index: int = 0) -> None:
        self.inner = inner
        self.kills = kills
        self.index = index
        self.killed: list[int] = []

    def run(self, tasks, parents):
        for position, item in enumerate(self.inner.run(tasks, parents)):
            kind = self.kills.get(tasks[0].generation)
            if position == 0 and kind:
                pid = [s.pid for s in self.inner.stats if s.kind == kind][self.index]
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
            yield item

    def summary(self) -> str:
        return self.inner.summary()

    def close(self) -> None:
        self.inner.close()


class Recording:
    """Wraps a backend: keeps each ``(children, scores)`` it yields in ``returned``."""

    def __init__(self, inner, returned: list) -> None:
        self.inner = inner
        self.returned = returned
        self.rng_scheme = inner.rng_scheme

    def run(self, tasks, parents):
        for item in self.inner.run(tasks, parents):
            self.returned.append(item)
            yield item

    def close(self) -> None:
        self.inner.close()
