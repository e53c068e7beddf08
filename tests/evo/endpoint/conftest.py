"""The endpoint search tests' fixtures: those of tests/fitness/endpoint (a real MLServer, a fault proxy)."""

import sys
from pathlib import Path

# The fixtures live beside the fitness tests of the client; this folder has no package to import them from.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fitness" / "endpoint"))

from oip_fixtures import endpoint_settings, fault_proxy, mlserver  # noqa: E402, F401 (fixtures)
