"""What the GPU path promises, checked where a CUDA device exists (skipped elsewhere).

``scripts/gpu_suite.sh`` runs this module first; CI machines have no GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fooling.encodings.cppn_triton as cppn_triton
from fooling.encodings import CPPNEncoding, CPPNGenomes, DirectEncoding, TensorGenomes
from fooling.encodings.graphs import graphed_mutation
from fooling.evo.archive import BatchBest
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import Evaluator
from fooling.evo.rendering import render_uint8
from fooling.evo.run import evolve, resume_config
from fooling.fitness import Scorer, load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

LITE0_RUN = dict(model="imagenet-lite0", encoding="cppn", population=16, image_size=64, seed=2,
                 classes=["jellyfish", "goldfish", "king penguin", "espresso"], device="cuda")  # fmt: skip


@pytest.fixture(scope="module")
def lite0():
    return load_model("imagenet-lite0")


@pytest.mark.parametrize("crops", [1, 10])
def test_lite0_on_cuda_at_amp_agrees_with_the_cpu(lite0, crops):
    cpu = Scorer(lite0, device="cpu", engine="torch", crops=crops)
    images = torch.rand(12, 3, *cpu.image_size, generator=torch.Generator().manual_seed(0))
    expected = cpu.score(images)
    gpu = Scorer(lite0, device="cuda", engine="auto", crops=crops)
    assert gpu.engine == "torch" and gpu.amp
    np.testing.assert_allclose(gpu.score(images.cuda()), expected, atol=5e-3)
    np.testing.assert_array_equal(gpu.score(images), gpu.score(images))  # fixed device: bit-identical


@pytest.mark.parametrize("paper", [False, True])
def test_cppn_renders_the_same_images_on_cuda(paper):
    options = dict(coordinates="pixel", color_space="hls-opencv") if paper else {}
    encoding = CPPNEncoding(outputs=3, height=48, width=48, **options)
    rng = np.random.default_rng(1)
    genomes = encoding.random(24, rng)
    for _ in range(20):
        genomes = encoding.mutate(genomes, rng)
    on_cpu = encoding.render(genomes, "cpu")
    on_gpu = encoding.render(genomes, "cuda")
    assert on_gpu.device.type == "cuda"
    assert torch.equal(encoding.render(genomes, "cuda"), on_gpu)  # fixed device: bit-identical
    # GPU and CPU round sin and exp differently; quantised HLS turns that into one byte
    # now and then, and the raw pixel coordinates (up to 47 here) magnify it.
    tolerance, share = (1.5 / 255, 1e-2) if paper else (1e-4, 1e-3)
    assert (on_gpu.cpu() - on_cpu).abs().gt(tolerance).float().mean() < share


def test_search_on_cuda_is_deterministic_and_resumes_bit_identically(tmp_path):
    straight = evolve(RunConfig(**LITE0_RUN, generations=4, out=str(tmp_path / "a")), show_progress=False)
    again = evolve(RunConfig(**LITE0_RUN, generations=4, out=str(tmp_path / "b")), show_progress=False)
    assert straight.archive.equals(again.archive)
    evolve(RunConfig(**LITE0_RUN, generations=2, out=str(tmp_path / "c")), show_progress=False)
    resumed = evolve(resume_config(str(tmp_path / "c"), generations=4), resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive)
    assert ((straight.archive.fitness > 0) & (straight.archive.fitness <= 1)).all()


def test_a_search_on_cuda_runs_its_batches_as_equal_compiled_chunks(tmp_path, compiled_shapes):
    config = RunConfig(**{**LITE0_RUN, "population": 300}, generations=2, out=str(tmp_path / "e"))
    evolve(config, show_progress=False)
    # 300 rows per generation, in two chunks (chunks of 256 computed 512)
    assert [shape[0] for shape in compiled_shapes] == [150] * 4


@pytest.mark.parametrize("crops", [1, 10])
def test_each_cells_best_row_reduced_on_cuda_is_the_hosts(lite0, crops):
    config = RunConfig(**{**LITE0_RUN, "crops": crops, "image_size": 0})
    evaluator = Evaluator(config, lite0)
    rng = np.random.default_rng(4)
    genomes = evaluator.encoding.random(40, rng)
    for _ in range(10):
        genomes = evaluator.encoding.mutate(genomes, rng)
    on_device = TensorGenomes.from_host(genomes, "cuda")
    expected = BatchBest.of(evaluator.evaluate(on_device))
    best = evaluator.evaluate_best(on_device)
    np.testing.assert_array_equal(best.row, expected.row)
    np.testing.assert_array_equal(best.probability, expected.probability)


def test_thumbnails_rendered_on_cuda_are_the_cpus_within_a_level():
    encoding = CPPNEncoding(outputs=3, height=32, width=32, coordinates="pixel", color_space="hls-opencv")
    rng = np.random.default_rng(5)
    genomes = encoding.random(16, rng)
    for _ in range(20):
        genomes = encoding.mutate(genomes, rng)
    on_gpu = render_uint8(encoding, genomes, batch_size=5, device="cuda")
    on_cpu = render_uint8(encoding, genomes, batch_size=5)
    assert on_gpu.dtype == np.uint8 and on_gpu.shape == on_cpu.shape == (16, 32, 32, 3)
    difference = np.abs(on_gpu.astype(np.int16) - on_cpu.astype(np.int16))
    assert (difference > 1).mean() < 1e-2  # sin and exp round differently, bytes now and then


def test_paper_preset_with_ten_crops_runs_on_cuda(tmp_path):
    config = RunConfig.from_preset("paper", model="imagenet-lite0", device="cuda", population=8,
                                   generations=2, classes=["tench", "espresso"],
                                   out=str(tmp_path / "p"))  # fmt: skip
    assert config.crops == 10 and config.image_size == 256
    search = evolve(config, show_progress=False)
    assert search.archive.occupied.all() and (search.archive.fitness > 0).all()


@pytest.mark.parametrize("kind", ["direct", "cppn"])
def test_tensor_variation_on_cuda_is_deterministic_and_valid(kind):
    if kind == "direct":
        encoding = DirectEncoding(channels=3, height=32, width=32, halve_mutation_every=10)
    else:
        encoding = CPPNEncoding(outputs=3, height=8, width=8, max_nodes=16, max_edges=40)

    def without_waiting(operation, *args):
        # The operators never wait for the device (no host round trip): any such call raises.
        torch.cuda.set_sync_debug_mode("error")
        try:
            return operation(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def run(seed: int):
        random = torch.Generator(device="cuda").manual_seed(seed)
        genomes = encoding.random_tensor(64, random, "cuda")
        for generation in range(30):
            genomes = without_waiting(encoding.mutate_tensor, genomes, random, generation)
            encoding.validate(genomes.to_host())
        if kind == "direct":
            other = genomes.take(torch.arange(63, -1, -1, device="cuda"))
            genomes = without_waiting(encoding.mate_tensor, genomes, other, random)[0]
        return genomes

    first = run(0)
    assert first.device.type == "cuda"
    assert first.equals(run(0))  # Philox on a fixed device: bit-identical


def test_cppn_mutation_and_compile_step_replayed_from_cuda_graphs_are_the_eager_ones():
    encoding = CPPNEncoding(outputs=3, height=32, width=32)
    graphed = graphed_mutation(encoding)
    genomes = encoding.random_tensor(400, torch.Generator(device="cuda").manual_seed(0), "cuda")
    for seed in range(1, 9):  # new seeds, one recording: the generator's state is read at each replay
        mine = torch.Generator(device="cuda").manual_seed(seed)
        theirs = torch.Generator(device="cuda").manual_seed(seed)
        children = TensorGenomes(CPPNGenomes, graphed(genomes.fields, mine))
        expected = encoding.mutate_tensor(genomes, theirs)
        assert children.equals(expected)
        assert torch.equal(mine.get_state(), theirs.get_state())
        got, program = (
            cppn_triton.compile_graphed(encoding, children),
            cppn_triton.compile_on_device(encoding, children),
        )
        for name in ("count", "activation", "start", "source", "weight"):
            assert torch.equal(getattr(got, name), getattr(program, name)), name
        genomes = children
    # Recorded, not fallen back to the plain calls (a failed recording is kept as None).
    assert len(graphed._recorded) == 1 and graphed._recorded.popitem()[1] is not None
    assert all(recording is not None for recording in cppn_triton._GRAPHED_COMPILE[3]._recorded.values())
