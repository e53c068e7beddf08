"""How the evaluator splits a batch into render-and-score calls, on the CPU and off it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fooling.encodings import TensorGenomes
from fooling.evo.archive import BatchBest
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import Evaluator
from fooling.fitness import ModelRunError, get_model_spec

CUDA = torch.device("cuda")  # a name only: calls() never touches the device
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lite0_spec():
    return get_model_spec("imagenet-lite0")


@pytest.mark.parametrize(("crops", "expected"), [(1, [400]), (10, [100] * 4)])
def test_off_the_cpu_a_generation_takes_few_equal_calls(lite0_spec, crops, expected):
    # The paper's 400 children: one call at one crop; four of 1,000 network inputs at ten,
    # which the compiled network runs as chunks of 250 with nothing to pad.
    assert Evaluator.calls(400, lite0_spec, crops, CUDA) == expected


@pytest.mark.parametrize("crops", [1, 10])
@pytest.mark.parametrize("count", [1, 7, 99, 101, 400, 401, 1023, 1025, 5000])
def test_device_calls_cover_the_batch_within_the_pixel_budget(lite0_spec, count, crops):
    calls = Evaluator.calls(count, lite0_spec, crops, CUDA)
    height, width = lite0_spec.input_size
    most = Evaluator.DEVICE_PIXELS // (crops * height * width)
    assert sum(calls) == count and all(size >= 1 for size in calls)
    assert max(calls) <= most and len(calls) == math.ceil(count / most)  # as few calls as fit
    assert max(calls) - min(calls) < len(calls)  # as equal as whole images allow


def test_on_the_cpu_calls_keep_their_chunks_of_pixels(lite0_spec):
    assert Evaluator.cpu_chunk(lite0_spec, 1) == 64 and Evaluator.cpu_chunk(lite0_spec, 10) == 49
    assert Evaluator.calls(400, lite0_spec, 1, CPU) == [128, 128, 128, 16]
    assert Evaluator.calls(400, lite0_spec, 10, CPU) == [98] * 4 + [8]
    assert Evaluator.calls(0, lite0_spec, 1, CPU) == [] == Evaluator.calls(0, lite0_spec, 1, CUDA)


@pytest.mark.parametrize("crops", [1, 10])
@pytest.mark.parametrize("count", [0, 1, 97, 400, 1025])
def test_score_sizes_split_each_call_into_its_scoring_chunks(lite0_spec, count, crops):
    on_cpu = Evaluator.score_sizes(count, lite0_spec, crops, CPU)
    chunk = Evaluator.cpu_chunk(lite0_spec, crops)
    assert sum(on_cpu) == count and all(1 <= size <= chunk for size in on_cpu)
    assert len(on_cpu) == sum(
        math.ceil(call / chunk) for call in Evaluator.calls(count, lite0_spec, crops, CPU)
    )
    assert Evaluator.score_sizes(count, lite0_spec, crops, CUDA) == Evaluator.calls(
        count, lite0_spec, crops, CUDA
    )


def test_evaluate_on_the_cpu_scores_in_chunks_and_keeps_the_rows_order(lenet, monkeypatch):
    config = RunConfig(model="mnist-lenet", encoding="direct", population=45, seed=3)
    evaluator = Evaluator(config, lenet)
    genomes = evaluator.encoding.random(45, np.random.default_rng(0))
    whole = evaluator.scorer.score(evaluator.images(genomes))
    monkeypatch.setattr(Evaluator, "EVALUATE_PIXELS", 10 * 28 * 28)  # chunks of 10, calls of 20
    rendered, scored = [], []
    images, score = evaluator.images, evaluator.scorer.score
    monkeypatch.setattr(evaluator, "images", lambda g: (rendered.append(len(g)), images(g))[1])
    monkeypatch.setattr(evaluator.scorer, "score", lambda i: (scored.append(len(i)), score(i))[1])
    probabilities = evaluator.evaluate(genomes)
    assert rendered == [20, 20, 5] and scored == [10, 10, 10, 10, 5]
    # What the driver counts for an endpoint's padding: the same scoring calls.
    assert Evaluator.score_sizes(45, lenet.spec, 1, CPU) == scored
    np.testing.assert_allclose(probabilities, whole, atol=1e-6)
    assert evaluator.evaluate(genomes.take(slice(0, 0))).shape == (0, 10)


class _Told(Exception):
    pass


@pytest.mark.parametrize(
    ("device", "population", "batch_size", "crops", "told"),
    [("cuda", 400, 0, 1, 400), ("cuda", 400, 0, 10, 100), ("cuda", 400, 150, 1, 150),
     ("cpu", 400, 0, 1, None)],
)  # fmt: skip
def test_off_the_cpu_the_scorer_is_told_the_calls_of_a_whole_batch(
    lite0_spec, monkeypatch, device, population, batch_size, crops, told
):
    def scorer(model, **options):
        raise _Told(options)

    monkeypatch.setattr("fooling.evo.evaluation.Scorer", scorer)
    config = RunConfig(model="imagenet-lite0", encoding="cppn", population=population, batch_size=batch_size,
                       crops=crops, device=device)  # fmt: skip
    with pytest.raises(_Told) as told_options:
        Evaluator(config, SimpleNamespace(spec=lite0_spec))  # the scorer is made first, from the spec
    options = told_options.value.args[0]
    assert options["batch"] == told and options["crops"] == crops
    assert options["device"] == torch.device(device)


@pytest.mark.parametrize(
    "options",
    [{}, {"engine": "torch"}, {"classes": ["3", "7", "1"]}, {"vary_on": "scorer"}],
    ids=["onnxruntime", "torch", "some classes", "genomes on the device"],
)
def test_each_cells_best_row_is_reduced_from_the_scores_evaluate_gives(lenet, options):
    config = RunConfig(model="mnist-lenet", encoding="cppn", population=45, seed=3,
                       **{k: v for k, v in options.items() if k != "vary_on"})  # fmt: skip
    evaluator = Evaluator(config, lenet)
    rng = np.random.default_rng(0)
    genomes = evaluator.encoding.random(45, rng)
    for _ in range(5):
        genomes = evaluator.encoding.mutate(genomes, rng)
    if options.get("vary_on") == "scorer":
        genomes = TensorGenomes.from_host(genomes, "cpu")
    expected = BatchBest.of(evaluator.evaluate(genomes))
    # The reduction where the scorer leaves its probabilities (a GPU's, off the CPU), here on CPU
    # tensors; evaluate_best on the CPU reduces with numpy.
    for best in (evaluator._best_on_device(genomes), evaluator.evaluate_best(genomes)):
        assert best.size == expected.size == 45 and len(best.row) == len(config.classes or range(10))
        np.testing.assert_array_equal(best.row, expected.row)
        np.testing.assert_array_equal(best.probability, expected.probability)
        assert best.row.dtype == np.int64 and best.probability.dtype == np.float32
    empty = evaluator._best_on_device(genomes.take(slice(0, 0)))
    assert empty.size == 0 and empty.probability.shape == best.probability.shape


def test_non_finite_scores_reduced_on_the_device_are_one_error_naming_the_model(lenet, monkeypatch):
    evaluator = Evaluator(RunConfig(model="mnist-lenet", engine="torch"), lenet)
    genomes = evaluator.encoding.random(6, np.random.default_rng(0))
    score = evaluator.scorer.score_tensor

    def two_bad_rows(images):
        probabilities = score(images).clone()
        probabilities[[1, 4], 3] = torch.nan
        return probabilities

    monkeypatch.setattr(evaluator.scorer, "score_tensor", two_bad_rows)
    with pytest.raises(
        ModelRunError, match=r"^model mnist-lenet gave non-finite scores \(NaN or infinity\) for 2 of 6"
    ):
        evaluator._best_on_device(genomes)
