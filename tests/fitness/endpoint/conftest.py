"""The endpoint tests' fixtures: a real MLServer on 127.0.0.1 and a fault proxy (see oip_fixtures)."""

from oip_fixtures import endpoint_settings, fault_proxy, mlserver  # noqa: F401 (fixtures)
