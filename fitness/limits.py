"""Limits on user input, checked before any work starts (each failure is one ``UserError`` line)."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

import torch

from fooling.encodings.errors import UserError

# Photos larger than this are refused before decoding (a 12000x12000 RGB photo would
# need over 5 GB as float): 50 megapixels covers any camera photo.
MAX_IMAGE_PIXELS = 50_000_000
# Side of evolved images: 1024 px is 4x an ImageNet input; a population of 200 direct
# genomes at 1024 px already takes 2.5 GB.
MAX_IMAGE_SIZE = 1024
# Seeds feed numpy's SeedSequence and torch.manual_seed alike.
MAX_SEED = 2**32 - 1
# A class name names a cell in every table, page and checkpoint a run writes; the longest
# ImageNet name is 30 characters.
MAX_CLASS_NAME_LENGTH = 1000
# Model files (and an ONNX model's external data files) are read whole into memory: larger ones
# are refused by their size before any read. 8 GiB holds the largest image classifiers in float32
# (ViT-g: about 4 GB); an ONNX model is at most 2 GiB in one piece anyway.
MAX_MODEL_BYTES = 8 * 2**30


def check_device(device: str | None) -> None:
    """Refuse a device torch cannot use here, before anything is written.

    Args:
        device: ``None`` (automatic), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"gpu"``, ``"mps"``.

    Raises:
        UserError: an unknown device, or a GPU that this machine does not have.
    """
    if device is None:
        return
    name = normalise_device(device)
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device}: not a device (use cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is available here (use --device cpu)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"--device {device}: MPS is not available here (use --device cpu)")
    elif parsed.type != "cpu":
        raise UserError(f"--device {device}: not supported (use cpu, cuda or cuda:N)")


def normalise_device(device: str | None) -> str | None:
    """``device`` as torch spells it: lower case, no spaces, ``"gpu"`` as ``"cuda"``."""
    if device is None:
        return None
    name = device.strip().lower()
    return "cuda" if name == "gpu" else name


def check_image_size(size: int, flag: str = "--image-size") -> None:
    """Raise :class:`UserError` unless ``0 <= size <= MAX_IMAGE_SIZE`` (0: the model's size)."""
    if not 0 <= int(size) <= MAX_IMAGE_SIZE:
        raise UserError(f"{flag} must be in [0, {MAX_IMAGE_SIZE}] (0: the model's input size), not {size}")


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Raise :class:`UserError` unless ``0 <= seed <= MAX_SEED``."""
    if not 0 <= int(seed) <= MAX_SEED:
        raise UserError(f"{flag} must be in [0, {MAX_SEED}], not {seed}")


def open_regular_file(path: str | os.PathLike, what: str) -> BinaryIO:
    """``path`` opened for reading in binary, refused unless it is a regular file.

    A FIFO would block the open (or the first read) forever, and a device such as
    ``/dev/zero`` never ends: the file is opened without blocking and checked with ``fstat``
    on the open descriptor (so it cannot be swapped in between), then read as usual.

    Args:
        path: the file (links are followed, as the user's own paths are).
        what: how messages name it (e.g. ``"--labels notes.txt"`` or the photo's path).

    Returns:
        A binary file object; the caller closes it.

    Raises:
        UserError: not a regular file (one line naming ``what``).
        OSError: it cannot be opened (missing, no permission, a socket).
    """
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(handle).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device"
            raise UserError(f"{what} is {kind}, not a regular file")
        os.set_blocking(handle, True)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def timeout_seconds(variable: str, default: float) -> float:
    """Seconds from environment variable ``variable`` (unset or blank: ``default``), read when used.

    Raises:
        UserError: the variable is not a finite positive number (one line naming it).
    """
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):  # also refuses NaN
        raise UserError(f"{variable}={text!r}: expected a positive number of seconds")
    return value
