"""A checkpoint of a large archive is written row group by row group, never as a second copy."""

from __future__ import annotations

import json
import subprocess
import sys

# Writes a checkpoint of 160 direct-encoded ImageNet genomes (96 MB) in row groups of 4 MB, with
# thumbnails rendered on the way, and prints the peaks of what numpy (tracemalloc) and pyarrow
# (its memory pool) allocated while writing, then reads the file back and checks it holds the archive.
_WRITE = """
import json, sys, tracemalloc
import numpy as np
import pyarrow as pa
from fooling.encodings import DirectGenomes
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store import checkpoint as store
from fooling.evo.store.checkpoint import Checkpoint, read_checkpoint_file, write_checkpoint

# Row groups of 4 MB: the archive is 24 of them.
store.ROW_GROUP_GENOME_BYTES = 4 * 1024 * 1024

cells, shape = 160, (3, 224, 224)
rng = np.random.default_rng(0)
archive = ClassArchive([f"class {i}" for i in range(cells)])
genomes = DirectGenomes(rng.random((cells, *shape), dtype=np.float32))
probabilities = np.eye(cells, dtype=np.float32) * 0.5 + 0.25 / cells
archive.add_batch(genomes, probabilities, individual_id=np.arange(cells), generation=0)
config = RunConfig(model="imagenet-lite0", encoding="direct", out=sys.argv[1], population=cells)
checkpoint = Checkpoint(config=config, archive=archive, generation=0, next_id=cells,
                        model="imagenet-lite0", weights_hash="0" * 16)
render = lambda batch: (batch.pixels.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
pool = pa.default_memory_pool()
before = pool.max_memory()
tracemalloc.start()
uri = write_checkpoint(sys.argv[1], checkpoint, render=render)
numpy_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
arrow_peak = pool.max_memory() - before
read = read_checkpoint_file(uri, GENOME_CLASSES)
same = read.archive.genomes.take(np.arange(cells)).equals(archive.genomes)
print(json.dumps({"numpy": numpy_peak, "arrow": arrow_peak,
                  "archive": archive.genomes.pixels.nbytes, "same": bool(same)}))
"""


def test_writing_a_checkpoint_does_not_copy_the_archive(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _WRITE, str(tmp_path / "run")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["same"]
    # One row group (4 MB of genomes) converted at a time, a few copies of it alive at once: a
    # copy of the whole archive (96 MB) for the selected rows and another for the byte planes,
    # as before, would exceed these.
    assert figures["numpy"] < figures["archive"] / 2, figures
    assert figures["arrow"] < figures["archive"] / 2, figures
