"""The Triton CPPN renderer against the CPU renderer, run in Triton's interpreter on the CPU.

On CPU tensors :func:`render_on_device` runs the kernel in Triton's interpreter (numpy), so
these tests check the kernel's logic (topological order, summation order, activations, colour
conversions, tiles and partial pixel blocks) without a GPU. Two kinds of comparison:

* with the CPU renderer's ``sin`` and ``exp`` replaced by numpy's (the interpreter's), the
  images are bit-identical: every sum, product and conversion is the same IEEE operation in the
  same order, at unit and at pixel coordinates;
* with the CPU renderer as it is (torch's own ``sin``/``exp``), the two differ only through
  those functions' last bits, propagated through the network: each genome's difference stays
  within a bound computed from its weights and magnitudes (:func:`_difference_bound`), and for
  genomes without hidden nodes within 1e-5.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("triton")  # CI's venv has it (torch's wheel pulls it in); a CPU-only torch may not

from fooling.encodings import CPPNEncoding, CPPNGenomes, TensorGenomes, cppn, cppn_triton  # noqa: E402
from fooling.encodings.cppn_triton import available, render_on_device  # noqa: E402

# 24 x 32 = 768 pixels: two blocks of 512, the second partial.
HEIGHT, WIDTH = 24, 32
MUTATION_ROUNDS = 30


def _genomes(encoding: CPPNEncoding, seed: int, fresh: int = 4, mutated: int = 8) -> CPPNGenomes:
    """``fresh`` random genomes (no hidden node) and ``mutated`` after 30 rounds of mutation."""
    rng = np.random.default_rng(seed)
    children = encoding.random(mutated, rng)
    for _ in range(MUTATION_ROUNDS):
        children = encoding.mutate(children, rng)
    hidden = children.node_used[:, 4 + encoding.outputs :].sum(axis=1)
    assert hidden.max() >= 3, "the mutated genomes should have hidden nodes to test"
    return CPPNGenomes.concatenate([encoding.random(fresh, rng), children])


def _in_place(function):
    def apply(values: torch.Tensor) -> torch.Tensor:
        return values.copy_(torch.from_numpy(function(values.numpy())))

    return apply


# The CPU renderer's activations with numpy's sin and exp, as the interpreter computes them
# (same operations, same order as cppn._ACTIVATIONS_IN_PLACE).
def _numpy_bipolar_sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # e^-x overflows to inf for x < -88: the sigmoid is 0, as torch's
        return 2.0 * (1.0 / (1.0 + np.exp(-x))) - 1.0


_NUMPY_ACTIVATIONS = (
    _in_place(np.sin),
    _in_place(_numpy_bipolar_sigmoid),
    _in_place(lambda x: np.exp(-(x * x))),
    cppn._ACTIVATIONS_IN_PLACE[3],  # clamp and divide: torch's are IEEE operations already
)

CONFIGURATIONS = [
    (1, "hsv", "unit"),
    (1, "hsv", "pixel"),
    (3, "rgb", "unit"),
    (3, "hsv", "unit"),
    (3, "hls", "unit"),
    (3, "hls-opencv", "unit"),
    (3, "hsv", "pixel"),
    (3, "hls", "pixel"),
    (3, "hls-opencv", "pixel"),
]


@pytest.mark.parametrize(("outputs", "color_space", "coordinates"), CONFIGURATIONS)
def test_bit_identical_to_the_cpu_renderer_with_the_same_sin_and_exp(
    monkeypatch, outputs, color_space, coordinates
):
    encoding = CPPNEncoding(outputs=outputs, height=HEIGHT, width=WIDTH, color_space=color_space,
                            coordinates=coordinates)  # fmt: skip
    genomes = _genomes(encoding, seed=outputs * 10 + len(color_space) + len(coordinates))
    monkeypatch.setattr(cppn, "_ACTIVATIONS_IN_PLACE", _NUMPY_ACTIVATIONS)
    expected = encoding.render(genomes)
    images = render_on_device(encoding, TensorGenomes.from_host(genomes, "cpu"))
    assert images.shape == (len(genomes), outputs, HEIGHT, WIDTH) and images.dtype == torch.float32
    assert torch.equal(images, expected)


def test_duplicate_connections_add_up_as_on_the_cpu(monkeypatch):
    # add_connection never makes duplicates, but a checkpoint may hold them: the CPU sums their
    # weights (np.add.at, slot order) into one weight per pair; so does the compile step.
    encoding = CPPNEncoding(outputs=3, height=HEIGHT, width=WIDTH)
    genomes = _genomes(encoding, seed=7)
    rng = np.random.default_rng(8)
    for row in range(len(genomes)):
        used = np.flatnonzero(genomes.edge_used[row])
        free = np.flatnonzero(~genomes.edge_used[row])
        for slot in free[:3]:  # three extra copies, of one or two connections
            copied = rng.choice(used[:2])
            genomes.edge_source[row, slot] = genomes.edge_source[row, copied]
            genomes.edge_target[row, slot] = genomes.edge_target[row, copied]
            genomes.edge_weight[row, slot] = rng.uniform(-10, 10)
            genomes.edge_used[row, slot] = True
    monkeypatch.setattr(cppn, "_ACTIVATIONS_IN_PLACE", _NUMPY_ACTIVATIONS)
    expected = encoding.render(genomes)
    images = render_on_device(encoding, TensorGenomes.from_host(genomes, "cpu"))
    assert torch.equal(images, expected)


# Differences between the Triton renderer and the CPU renderer as it is. Both compute every sum
# with the same operations in the same order (the test above), so they differ only where an
# activation's implementation does: torch's (SLEEF) and numpy's sin and exp are within 1 ulp of
# the exact value, CUDA's libdevice sinf and expf within 2 (CUDA's documented maxima), so on
# the same argument two of them differ by at most 3 ulp of 1; the sigmoid's 1 / (1 + e) and
# 2 s - 1 on top stay within IMPLEMENTATION = 6 ulp of 1 (7.2e-7).
IMPLEMENTATION = 6 * 2.0**-23
# Largest slope of each activation: sin 1, 2 sigmoid - 1: 1/2, exp(-x^2): sqrt(2/e), clip/3: 1/3.
SLOPES = (1.0, 0.5, math.sqrt(2.0 / math.e), 1.0 / 3.0)


def _ulp(magnitude: float) -> float:
    """Spacing of float32 numbers at ``magnitude`` (an upper bound for values up to it)."""
    return 2.0 ** (math.floor(math.log2(max(magnitude, 2.0**-126))) - 23)


def _difference_bound(encoding: CPPNEncoding, genomes: CPPNGenomes) -> np.ndarray:
    """Per genome, a bound on |kernel - CPU renderer| over its pixels and channels.

    Forward error propagation in the evaluation order: a node's value differs by ``E``, its
    weighted sum by ``D = sum |w| E_source`` plus, once an operand differs, a rounding that may
    go the other way in each of its ``2n`` multiplications and additions (``ulp`` of the sum's
    magnitude bound ``S = sum |w| |source|``). That last term is what pixel coordinates cost:
    with x up to width - 1 and weights up to 10, ``S`` reaches thousands, where float32's spacing
    is 2.4e-4 to 4.9e-4, and sin passes such a difference on undamped. Then ``E = slope D +
    IMPLEMENTATION``. The colour conversion multiplies the hue's difference by 6 (hsv: ``6 h``;
    hls: ``12 h`` times 1/2), plus the rounding of its own operations at their magnitudes.
    """
    order, weights, activations = encoding.compile(genomes)
    _, height, width = encoding.shape
    if encoding.coordinates == "pixel":
        inputs = [width - 1.0, height - 1.0, math.sqrt(2.0), 1.0]
    else:
        inputs = [1.0, 1.0, math.sqrt(2.0), 1.0]
    bounds = np.zeros(len(genomes))
    for row in range(len(genomes)):
        length = order.shape[1]
        magnitude = np.array(inputs + [1.0] * (length - 4))
        error = np.zeros(length)
        for position in range(4, length):
            absolute = np.abs(weights[row, position, :position].astype(np.float64))
            sources = absolute > 0
            differing = (error[:position][sources] > 0).any()
            total = absolute @ magnitude[:position]
            rounding = 2 * sources.sum() * _ulp(total) if differing else 0.0
            difference = absolute @ error[:position] + rounding
            error[position] = SLOPES[activations[row, position]] * difference + IMPLEMENTATION
        outputs = error[length - encoding.outputs :]
        if encoding.outputs == 1 or encoding.color_space == "rgb":
            bounds[row] = outputs.max()
        elif encoding.color_space == "hsv":  # h, s, v
            bounds[row] = 6 * outputs[0] + outputs[1] + outputs[2] + 2 * _ulp(12.0) + 4 * _ulp(1.0)
        else:  # hls: h, l, s
            bounds[row] = 6 * outputs[0] + 2 * outputs[1] + outputs[2] + _ulp(24.0) + 4 * _ulp(1.0)
    return bounds


@pytest.mark.parametrize(
    ("outputs", "color_space", "coordinates"),
    [(1, "hsv", "unit"), (3, "rgb", "unit"), (3, "hsv", "unit"), (3, "hls", "unit"), (3, "hsv", "pixel"),
     (1, "hsv", "pixel")],
)  # fmt: skip
def test_close_to_the_cpu_renderer_as_it_is(outputs, color_space, coordinates):
    # hls-opencv is left out: it quantises to bytes, so an ulp may flip a byte (the exact test covers it).
    encoding = CPPNEncoding(outputs=outputs, height=HEIGHT, width=WIDTH, color_space=color_space,
                            coordinates=coordinates)  # fmt: skip
    fresh = 4
    genomes = _genomes(encoding, seed=3 + outputs, fresh=fresh)
    expected = encoding.render(genomes)
    images = render_on_device(encoding, TensorGenomes.from_host(genomes, "cpu"))
    difference = (images - expected).abs().flatten(1).amax(dim=1).numpy()
    bound = _difference_bound(encoding, genomes)
    assert (difference <= bound).all(), (difference, bound)
    # Without hidden nodes: one activation per output on identical sums, then the conversion.
    assert (bound[:fresh] <= 1e-5).all() and (difference[:fresh] <= 1e-5).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the compiled kernel)")
@pytest.mark.parametrize(("color_space", "coordinates"), [("hsv", "unit"), ("hls", "unit"), ("hsv", "pixel")])
def test_cuda_close_to_the_cpu_renderer_and_deterministic(color_space, coordinates):
    encoding = CPPNEncoding(outputs=3, height=HEIGHT, width=WIDTH, color_space=color_space,
                            coordinates=coordinates)  # fmt: skip
    fresh = 4
    genomes = _genomes(encoding, seed=21, fresh=fresh)
    on_device = TensorGenomes.from_host(genomes, "cuda")
    images = render_on_device(encoding, on_device)
    assert images.device.type == "cuda"
    assert torch.equal(images, render_on_device(encoding, on_device))
    difference = (images.cpu() - encoding.render(genomes)).abs().flatten(1).amax(dim=1).numpy()
    bound = _difference_bound(encoding, genomes)
    assert (difference <= bound).all(), (difference, bound)
    assert (difference[:fresh] <= 1e-5).all()


def test_renders_are_bit_identical_from_call_to_call():
    encoding = CPPNEncoding(outputs=3, height=16, width=16, color_space="hsv")
    genomes = TensorGenomes.from_host(_genomes(encoding, seed=11), "cpu")
    first = render_on_device(encoding, genomes)
    second = render_on_device(encoding, genomes)
    assert torch.equal(first, second)
    assert torch.all((first >= 0) & (first <= 1))


def test_the_program_is_the_cpu_compile_without_padding():
    encoding = CPPNEncoding(outputs=3, height=8, width=8)
    genomes = _genomes(encoding, seed=5)
    program = cppn_triton.compile_on_device(encoding, TensorGenomes.from_host(genomes, "cpu"))
    order, weights, activations = encoding.compile(genomes)
    for row in range(len(genomes)):
        kept = np.flatnonzero(order[row] >= 0)  # positions of the CPU's order that are not padding
        count = int(program.count[row])
        assert count == kept.size
        assert np.array_equal(program.activation[row, :count].numpy(), activations[row, kept])
        dense = np.zeros((count, count), np.float32)
        start = program.start[row].numpy()
        for position in range(count):
            edges = slice(start[position], start[position + 1])
            sources = program.source[row, edges].numpy()
            assert np.all(np.diff(sources) > 0)  # summed by increasing source position
            dense[position, sources] = program.weight[row, edges].numpy()
        assert np.array_equal(dense, weights[row][np.ix_(kept, kept)])


def test_empty_batch():
    encoding = CPPNEncoding(outputs=1, height=8, width=8)
    genomes = TensorGenomes.from_host(encoding.random(0, np.random.default_rng(0)), "cpu")
    assert render_on_device(encoding, genomes).shape == (0, 1, 8, 8)


def test_available_where_it_can_run(monkeypatch):
    assert available("cpu")  # the interpreter
    assert available("cuda") == torch.cuda.is_available()
    assert not available("meta")
    monkeypatch.setattr(cppn_triton, "triton", None)  # as when triton is not installed
    assert not available("cpu") and not available("cuda")
    encoding = CPPNEncoding(outputs=1, height=8, width=8)
    genomes = TensorGenomes.from_host(encoding.random(2, np.random.default_rng(0)), "cpu")
    with pytest.raises(RuntimeError, match="triton installed: False"):
        render_on_device(encoding, genomes)


def test_the_module_imports_without_triton():
    # A None entry in sys.modules makes `import triton` raise ImportError, as on an install without it.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "from fooling.encodings import cppn_triton, render_on_device\n"
        "assert cppn_triton.triton is None and not cppn_triton.available('cpu')\n"
        "print('imported')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TRITON_INTERPRET": "0"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
