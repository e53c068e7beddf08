"""Storage, the only user of pyarrow.

Locations (local, ``s3://``, ``gs://``), run folders, checkpoints and per-generation stats.
"""
