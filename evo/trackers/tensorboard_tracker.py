"""``--track tensorboard[:DIR]``: TensorBoard event files (``pip install 'fooling[tensorboard]'``).

Scalars per generation (step = generation), the elites picture and a few class thumbnails
per checkpoint, the run's configuration and model as text. A resumed run writes a new event
file into the same folder with ``purge_step`` at its first generation: TensorBoard drops
what an earlier, killed process wrote from that generation on, so the curves continue with
no step twice and none rewound.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Mapping

import numpy as np
from PIL import Image

from fooling.encodings import UserError
from fooling.evo.report.escape import markdown_text
from fooling.evo.store.location import is_uri

from .base import MissingExtraError, TrackedRun, Tracker
from .registry import TRACKERS

try:  # optional extra: fooling[tensorboard] (torch's writer needs only the tensorboard package)
    from torch.utils.tensorboard import SummaryWriter
except ImportError:
    SummaryWriter = None

__all__ = ["EVENT_FILE_PREFIX", "TensorBoardTracker"]

# Names of TensorBoard's event files.
EVENT_FILE_PREFIX = "events.out.tfevents"


def _local(out: str) -> str:
    return out[len("file://") :] if out.startswith("file://") else out


def _refuse_file(path: str) -> None:
    """Raise when ``path`` or the nearest of its folders that exists is not a folder."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"--track tensorboard: {probe} is a file, not a folder (give another DIR)")


class TensorBoardTracker(Tracker):
    """TensorBoard event files: in ``OUT/tensorboard``, or ``DIR/NAME`` for ``--track tensorboard:DIR``.

    Args:
        arg: ``DIR``, a local folder shared by runs (each run writes into ``DIR/NAME``,
            ``NAME`` being its run folder's name); ``None``: ``OUT/tensorboard``.

    Raises:
        MissingExtraError: TensorBoard is not installed.
        UserError: a ``DIR`` that is a URI.
    """

    name = "tensorboard"
    summary = TRACKERS["tensorboard"].summary
    argument = "DIR"

    def __init__(self, arg: str | None = None) -> None:
        if SummaryWriter is None:
            raise MissingExtraError(
                "--track tensorboard needs TensorBoard: pip install 'fooling[tensorboard]'"
            )
        if arg is not None and "://" in arg:
            raise UserError(
                f"--track tensorboard:{arg}: give a local folder (TensorBoard's event files go there)"
            )
        super().__init__(arg)
        self._writer = None

    def log_dir(self, out: str) -> str:
        """The folder the event files of run folder ``out`` go to.

        Raises:
            UserError: no ``DIR`` given and ``out`` is a storage URI.
        """
        if self.arg is not None:
            return os.path.join(os.path.expanduser(self.arg), out.rstrip("/").split("/")[-1])
        if is_uri(out):
            raise UserError(
                f"--track tensorboard: the run folder {out} is not local; "
                "give a local folder: --track tensorboard:DIR"
            )
        return os.path.join(_local(out), "tensorboard")

    def check(self, out: str) -> None:
        """Refuse a ``DIR`` (or event folder) that is a file, or a linked ``OUT/tensorboard``.

        Raises:
            UserError: as said (one line).
        """
        folder = self.log_dir(out)
        _refuse_file(folder)
        # Nothing is written through a link inside a run folder (one shared by someone else).
        if self.arg is None and os.path.islink(folder):
            raise UserError(
                f"--track tensorboard: {folder} is a symbolic link; not followed inside a run folder"
            )

    def start(self, run: TrackedRun, resumed: bool) -> int:
        """Open a writer on the run's folder; over earlier event files, purge from this run's first step.

        Returns:
            ``run.first_generation - 1`` when the folder already holds event files (they
            hold the generations before), else -1 (every generation is sent).
        """
        self.close()
        self.check(run.out)
        folder = self.log_dir(run.out)
        held = os.path.isdir(folder) and any(
            name.startswith(EVENT_FILE_PREFIX) for name in os.listdir(folder)
        )
        self._writer = SummaryWriter(folder, purge_step=run.first_generation if held else None, flush_secs=30)
        step = run.first_generation
        # TensorBoard renders text as Markdown, and a config or model reference may come from a
        # shared run folder: every value shows as itself (escaped; no backtick can close the fence).
        config = dataclasses.asdict(run.config)
        settings = "\n".join(f"| {key} | {markdown_text(str(value))} |" for key, value in config.items())
        self._writer.add_text("run/config", "| setting | value |\n|---|---|\n" + settings, step)
        model = {key: value for key, value in run.model.items() if key != "labels"}
        model["classes"] = len(run.model.get("labels", ()))
        record = json.dumps(model, indent=1).replace("`", "\\u0060")  # the same JSON, no backtick
        self._writer.add_text("run/model", "```\n" + record + "\n```", step)
        return run.first_generation - 1 if held else -1

    def log_generation(self, step: int, metrics: Mapping[str, float]) -> None:
        """One scalar per metric at ``step``."""
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def flush(self) -> None:
        """Write the buffered events to the event file."""
        self._writer.flush()

    def log_checkpoint(self, step: int, images: Mapping[str, bytes]) -> None:
        """Each picture at ``step``: ``elites`` and ``classes/class-...``."""
        for name, png in images.items():
            picture = np.asarray(Image.open(io.BytesIO(png), formats=["PNG"]).convert("RGB"))
            tag = name if name == "elites" else f"classes/{name}"
            self._writer.add_image(tag, picture, step, dataformats="HWC")
        self._writer.flush()

    def finish(self, artifacts: Mapping[str, bytes], status: str) -> None:
        """Close the event file (the report's files are not TensorBoard's business)."""
        self.close()

    def close(self) -> None:
        """Flush and close the writer, if open."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
