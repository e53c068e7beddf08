"""Storage, the only user of pyarrow: locations (local, ``s3://``, ``gs://``), run folders,
checkpoints and per-generation stats."""
