"""Ray, used only here: the Ray backend, its mutator and scorer actors, and connecting."""

from fooling.evo.distributed.backend import RayBackend, connect, init_local_ray, shutdown_ray

__all__ = ["RayBackend", "connect", "init_local_ray", "shutdown_ray"]
