"""Small set-ups that tests in several folders share (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import torch
from torch import nn

import fooling.evo.store.location as location_module
import fooling.evo.store.runfolder as runfolder_module
from fooling.evo.config import RunConfig
from fooling.evo.experiments.retrain import RetrainResult, RetrainSettings, retrain

LABELS = ("cat", "dog", "owl", "fox", "yak")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def chromium(page: Path, profile: Path, *, query: str = "", screenshot: Path | None = None,
             window: str = "1000,700") -> str:  # fmt: skip
    """Open ``page`` (``?query``) in headless Chromium with its own ``profile`` folder.

    Returns:
        The page's DOM after its scripts ran, or ``""`` when ``screenshot`` is given (a PNG
        of a ``window``-sized view is written there instead).

    Raises:
        subprocess.CalledProcessError, subprocess.TimeoutExpired: Chromium failed or hung.
    """
    assert CHROMIUM is not None, "skip the test where chromium is not installed"
    action = (
        ["--dump-dom"] if screenshot is None else [f"--screenshot={screenshot}", f"--window-size={window}"]
    )
    url = f"file://{page}" + (f"?{query}" if query else "")
    command = [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *action, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def sparse_file(path: Path, size: int) -> Path:
    """``path`` replaced by a file of ``size`` zero bytes that takes no disk space (a hole)."""
    path.unlink(missing_ok=True)  # a file written in its place, never through a link
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def tiny(seed: int) -> nn.Module:
    """A tiny classifier of 3-channel images (16x16 or larger) into :data:`LABELS`."""
    torch.manual_seed(seed)
    layers = [
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, len(LABELS)),
    ]
    return nn.Sequential(*layers).eval()


class RefusesBrightImages(nn.Module):
    """``tiny(0)`` that raises on batches of mean above 0.25 (loading runs it on blank ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny(0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if bool(images.mean() > 0.25):
            raise RuntimeError("the network gave up")
        return self.net(images)


class ConvNet(nn.Module):
    """``(batch, 3, H, W)`` -> ``(batch, 5)`` logits (one per :data:`LABELS`), for any H, W >= 3."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(24, len(LABELS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)) * 4.0  # sharper than chance, so search has a slope


def seeded(seed: int = 0, kind: type[nn.Module] = ConvNet) -> nn.Module:
    """A ``kind`` network initialised from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return kind().eval()


def torchscript_reference(folder: Path, seed: int = 0) -> tuple[Path, str]:
    """``tiny(seed)`` saved as TorchScript in ``folder`` with ``labels.txt``.

    Returns:
        The file and the ``--model`` reference that reads it (16x16 inputs, :data:`LABELS`).
    """
    path = folder / f"net{seed}.pt"
    torch.jit.save(torch.jit.script(tiny(seed)), str(path))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return path, f"{path.absolute()}?labels={folder.absolute() / 'labels.txt'}&input-size=16,16"


def small_retrain(out: Path, **changes) -> RetrainResult:
    """Two MNIST retraining rounds of 3 generations x 16 children, seed 5, 1 LeNet epoch.

    Args:
        out: the retraining folder.
        **changes: :class:`RunConfig` fields go to every round's run, others to the retraining.
    """
    run_fields = {field.name for field in dataclasses.fields(RunConfig)}
    given = {key: value for key, value in changes.items() if key in run_fields}
    run = RunConfig(**{"generations": 3, "population": 16, "seed": 5, "out": str(out), **given})
    own = {key: value for key, value in changes.items() if key not in run_fields}
    return retrain(RetrainSettings(run=run, **{"rounds": 2, "epochs": 1, **own}))


def install_memory_store(monkeypatch, tmp_path: Path, *probing_modules) -> pafs.FileSystem:
    """Serve ``mock://`` URIs from an in-memory pyarrow filesystem (an object store stand-in).

    ``probing_modules`` (besides the store) imported ``check_location``; it is switched off
    there too, since no child process can reach an in-memory store. Runs in ``tmp_path``.
    """
    store = pafs._MockFileSystem()
    original = location_module._filesystem

    def filesystem(uri: str):
        if uri.startswith("mock://"):
            return store, uri.removeprefix("mock://")
        return original(uri)

    monkeypatch.setattr(location_module, "_filesystem", filesystem)
    monkeypatch.setattr(runfolder_module, "_filesystem", filesystem)
    for module in (location_module, *probing_modules):
        monkeypatch.setattr(module, "check_location", lambda location, what="--out": None)
    monkeypatch.chdir(tmp_path)
    return store
