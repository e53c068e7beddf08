"""Storage, the only user of pyarrow.

Locations (local, ``s3://``, ``gs://``: :mod:`~fooling.evo.store.location`), run folders
(:mod:`~fooling.evo.store.runfolder`), checkpoints (:mod:`~fooling.evo.store.checkpoint`, with
:mod:`~fooling.evo.store.genomes`, :mod:`~fooling.evo.store.validation`,
:mod:`~fooling.evo.store.parquet_footer` and :mod:`~fooling.evo.store.thumbnails`) and the
per-generation stats and result tables (:mod:`~fooling.evo.store.tables`).
"""
