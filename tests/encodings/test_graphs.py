"""GraphedFunction: recordings per input signature, replays equal to the function, fallback.

CUDA graphs need a GPU (``tests/fitness/test_cuda.py`` replays real ones against eager calls).
Here a CPU stand-in (``replaying_capture``, tests/conftest.py) records by running the function
and replays by running it again into the recorded outputs: what a CUDA graph's replay
computes. So these tests hold the wrapper's own work (which recording, copying the inputs in
and the outputs out, passing the generator's state in and out) on any machine.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

import fooling.encodings.cppn_triton as cppn_triton
from fooling.encodings import CPPNEncoding, TensorGenomes
from fooling.encodings.graphs import GraphedFunction, graphed_mutation


@pytest.fixture
def encoding() -> CPPNEncoding:
    return CPPNEncoding(outputs=3, height=16, width=16)


def parents(encoding: CPPNEncoding, count: int, seed: int = 0) -> TensorGenomes:
    rng = np.random.default_rng(seed)
    genomes = encoding.random(count, rng)
    for _ in range(8):
        genomes = encoding.mutate(genomes, rng)
    return TensorGenomes.from_host(genomes, "cpu")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_each_replay_gives_the_functions_children_and_moves_the_generator_as_the_function_does(
    encoding, replaying_capture
):
    capture = replaying_capture()
    graphed = graphed_mutation(encoding, capture=capture)
    batch = parents(encoding, 12)
    kept = []
    for seed in (1, 2, 3):
        mine, theirs = generator(seed), generator(seed)
        got = graphed(batch.fields, mine)
        expected = encoding.mutate_tensor(batch, theirs)
        assert TensorGenomes(batch.kind, got).equals(expected)
        assert torch.equal(mine.get_state(), theirs.get_state())  # the next draw is the eager one
        kept.append((got, expected))
        batch = expected
    assert capture.recorded == 1  # one signature, one recording
    for got, expected in kept:  # returned copies, not the recording's outputs, which replays overwrite
        assert TensorGenomes(expected.kind, got).equals(expected)


def test_a_recording_per_signature_and_the_oldest_dropped_beyond_the_limit(encoding, replaying_capture):
    capture = replaying_capture()
    graphed = graphed_mutation(encoding, capture=capture, recordings=2)
    for count in (4, 6, 4, 6, 5, 4):
        batch = parents(encoding, count)
        got = graphed(batch.fields, generator(count))
        assert TensorGenomes(batch.kind, got).equals(encoding.mutate_tensor(batch, generator(count)))
    # 4 and 6 recorded; 5 pushed out 4 (the older of the two), which then came back.
    assert capture.recorded == 4


def test_a_failed_recording_warns_once_and_the_function_runs_itself(encoding, caplog, replaying_capture):
    capture = replaying_capture(fail=True)
    graphed = graphed_mutation(encoding, capture=capture)
    batch = parents(encoding, 5)
    with caplog.at_level(logging.WARNING, logger="fooling.encodings.graphs"):
        for seed in (7, 8):
            got = graphed(batch.fields, generator(seed))
            assert TensorGenomes(batch.kind, got).equals(encoding.mutate_tensor(batch, generator(seed)))
    assert capture.recorded == 1
    assert [record.getMessage() for record in caplog.records] == [
        "the cppn mutation: recording it as a CUDA graph failed (operation not permitted when stream "
        "is capturing); it runs without one"
    ]


def test_off_cuda_without_a_capture_the_function_runs_itself(encoding):
    calls = []

    def function(fields, generator):
        calls.append(fields)
        return {"double": fields["x"] * 2}

    graphed = GraphedFunction(function, "doubling")
    x = torch.arange(3.0)
    assert torch.equal(graphed({"x": x}, None)["double"], x * 2)
    assert calls[0]["x"] is x  # called on the caller's tensors: no recording, no copies


def test_the_compile_step_replayed_gives_the_program_it_computes(encoding, replayed_graphs):
    for seed in (0, 1):
        batch = parents(encoding, 9, seed)
        got = cppn_triton.compile_graphed(encoding, batch)
        expected = cppn_triton.compile_on_device(encoding, batch)
        for name in ("count", "activation", "start", "source", "weight"):
            assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert replayed_graphs.recorded == 1


def test_a_pickled_copy_records_its_own(encoding, replayed_graphs):
    # The stand-in is patched in for every GraphedFunction (a capture object would pickle too).
    graphed = graphed_mutation(encoding)
    batch = parents(encoding, 4)
    graphed(batch.fields, generator(0))
    copy = pickle.loads(pickle.dumps(graphed))  # as Ray ships a toolbox: recordings stay behind
    assert len(graphed._recorded) == 1 and len(copy._recorded) == 0
    got = copy(batch.fields, generator(1))
    assert TensorGenomes(batch.kind, got).equals(encoding.mutate_tensor(batch, generator(1)))
    assert len(copy._recorded) == 1 and replayed_graphs.recorded == 2
