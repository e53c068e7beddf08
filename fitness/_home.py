"""Where trained weights and downloaded data are cached."""

from __future__ import annotations

import os
from pathlib import Path


def fooling_home() -> Path:
    """``$FOOLING_HOME``, or ``~/.cache/fooling`` when unset."""
    return Path(os.environ.get("FOOLING_HOME") or Path.home() / ".cache" / "fooling")


def offline() -> bool:
    """True when ``FOOLING_OFFLINE`` is set: never try to download anything."""
    return os.environ.get("FOOLING_OFFLINE", "") not in ("", "0")
