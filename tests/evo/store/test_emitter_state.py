"""The emitter's state in a checkpoint: written into the run metadata, read back, checked to be an object."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from fooling.encodings import DirectEncoding
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import (
    METADATA_CHECKSUM_KEY,
    METADATA_KEY,
    Checkpoint,
    CheckpointError,
    read_checkpoint_file,
    read_latest_checkpoint,
    write_checkpoint,
)

STATE = {
    "anchor": 3,
    "stall": 0,
    "sigma": 0.1 + 0.2,  # not a short decimal: JSON must give back the same float
    "converged": False,
    "name": "cma",
    "cma": {"mean": [0.5, -1.25e-7, 3.0], "C": [[1.0, 0.0], [0.0, 2.0]], "nothing": None},
}


def small_checkpoint(emitter_state: dict | None = None) -> Checkpoint:
    rng = np.random.default_rng(0)
    encoding = DirectEncoding(channels=1, height=8, width=8)
    archive = ClassArchive([f"class {i}" for i in range(4)])
    archive.genomes = encoding.random(4, rng)
    archive.fitness[:] = rng.random(4, dtype=np.float32)
    archive.occupied[:] = True
    archive.individual_id[:] = np.arange(4)
    archive.parent_id[:] = -1
    archive.birth_generation[:] = 0
    config = RunConfig(model="mnist-lenet", encoding="direct", population=4)
    extra = {} if emitter_state is None else {"emitter_state": emitter_state}
    return Checkpoint(config, 2, 10, config.model, "0123456789abcdef", archive, **extra)


def stored_metadata(uri: str) -> dict:
    return json.loads(pq.read_schema(uri).metadata[METADATA_KEY])


def rewrite_metadata(uri: str, change) -> None:
    """Edit the run metadata of checkpoint ``uri`` and seal it with its checksum again."""
    table = pq.read_table(uri)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    change(metadata)
    text = json.dumps(metadata).encode()
    sealed = {METADATA_KEY: text, METADATA_CHECKSUM_KEY: hashlib.sha256(text).hexdigest().encode()}
    pq.write_table(table.replace_schema_metadata(sealed), uri, write_page_checksum=True)


def test_the_emitter_state_round_trips_through_a_checkpoint(tmp_path):
    uri = write_checkpoint(str(tmp_path), small_checkpoint(STATE))
    assert stored_metadata(uri)["emitter_state"] == STATE
    read = read_checkpoint_file(uri, GENOME_CLASSES)
    assert read.emitter_state == STATE
    assert read.emitter_state["sigma"] == 0.1 + 0.2  # bit for bit
    assert read_latest_checkpoint(str(tmp_path), GENOME_CLASSES).emitter_state == STATE


def test_a_stateless_emitter_writes_no_key_and_reads_back_empty(tmp_path):
    """Byte for byte the metadata of checkpoints written before emitters kept state."""
    assert small_checkpoint().emitter_state == {}
    uri = write_checkpoint(str(tmp_path), small_checkpoint())
    assert "emitter_state" not in stored_metadata(uri)
    assert read_checkpoint_file(uri, GENOME_CLASSES).emitter_state == {}


def test_an_older_checkpoint_without_the_key_reads_as_empty(tmp_path):
    uri = write_checkpoint(str(tmp_path), small_checkpoint(STATE))
    rewrite_metadata(uri, lambda metadata: metadata.pop("emitter_state"))
    assert read_checkpoint_file(uri, GENOME_CLASSES).emitter_state == {}


@pytest.mark.parametrize("damaged", [[1, 2], "state", 3, None, True])
def test_an_emitter_state_that_is_not_an_object_is_a_damaged_checkpoint(tmp_path, damaged):
    uri = write_checkpoint(str(tmp_path), small_checkpoint(STATE))
    rewrite_metadata(uri, lambda metadata: metadata.update(emitter_state=damaged))
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint_file(uri, GENOME_CLASSES)
    message = str(caught.value)
    assert message == f"{uri} is a damaged checkpoint: its emitter_state is not a JSON object"
    assert "\n" not in message


def test_a_damaged_emitter_state_falls_back_to_the_previous_checkpoint(tmp_path):
    older = small_checkpoint({"anchor": 1})
    write_checkpoint(str(tmp_path), older)
    newer = small_checkpoint(STATE)
    newer.generation = 5
    uri = write_checkpoint(str(tmp_path), newer)
    rewrite_metadata(uri, lambda metadata: metadata.update(emitter_state=["not", "an", "object"]))
    read = read_latest_checkpoint(str(tmp_path), GENOME_CLASSES)
    assert (read.generation, read.emitter_state) == (2, {"anchor": 1})
