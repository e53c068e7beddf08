"""Tolerances derived from the magnitudes of a computation, so tests pass on any CPU.

Two float32 computations of the same value (another instruction set, another order of
summation, a vectorised kernel against its scalar tail) agree only up to rounding, and how
much rounding depends on the magnitudes involved: a CPPN fed raw pixel coordinates (up to
255) with weights up to 10 sums terms in the thousands, where one float32 rounding step is
already 1e-4. These helpers turn magnitudes into bounds, with the standard error analysis
of floating-point sums (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3):
a sum of ``n`` products computed in any order, with or without fused multiply-adds, is off
by at most ``gamma(n) * sum(|w_j| |v_j|)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fooling.encodings import CPPNEncoding, CPPNGenomes
from fooling.encodings.cppn import coordinate_inputs
from fooling.encodings.cppn_genomes import ACTIVATION_NAMES, NUM_INPUTS

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23: the spacing of float32 numbers at 1
UNIT_ROUNDOFF = EPS32 / 2  # the largest relative error of one float32 rounding
# Absolute error of one float32 activation (sine, sigmoid, exp, clip) of a value in [-1, 1]:
# vectorised libraries (SLEEF) promise 1 ulp, the scalar libm half an ulp; the sigmoid's
# 2 s - 1 and the Gaussian's x * x add two roundings. 4 ulp of 1, with room to spare.
ACTIVATION_ERROR = 4 * EPS32
# Colour conversions (HSV, HLS) are a dozen float32 operations on values up to 20 (hue x 12
# plus an offset of 8): 64 unit roundoffs bound their own rounding.
CONVERSION_ERROR = 64 * UNIT_ROUNDOFF
# How far a conversion moves when its inputs move: HSV's value v (1 - s w(6 h)) changes by at
# most 6 per unit of hue, 1 of saturation and 1 of value; HLS's l - chroma(l, s) a(12 h) / 2 by
# 6, 2 and 1. 9 per unit of the largest channel error covers both.
CONVERSION_LIPSCHITZ = 9.0


def gamma(n: np.ndarray | int) -> np.ndarray:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of an ``n``-term float32 sum."""
    n = np.asarray(n, np.float64)
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def _activate64(name: str, total: np.ndarray) -> np.ndarray:
    if name == "sine":
        return np.sin(total)
    if name == "bipolar_sigmoid":
        return 2.0 / (1.0 + np.exp(-total)) - 1.0
    if name == "gaussian":
        return np.exp(-total * total)
    if name == "linear":
        return np.clip(total, -3.0, 3.0) / 3.0
    raise AssertionError(f"no float64 form of activation {name!r}")


def _slope64(name: str, total: np.ndarray, error: np.ndarray) -> np.ndarray:
    """The largest ``|f'|`` of activation ``name`` within ``error`` of ``total``."""
    if name == "sine":
        return np.ones_like(total)
    if name == "bipolar_sigmoid":  # 2 s (1 - s), largest nearest 0
        nearest = np.maximum(np.abs(total) - error, 0.0)
        sigmoid = 1.0 / (1.0 + np.exp(-nearest))
        return 2.0 * sigmoid * (1.0 - sigmoid)
    if name == "gaussian":  # 2 |x| e^(-x^2), largest at |x| = 1 / sqrt(2)
        low, high = np.maximum(np.abs(total) - error, 0.0), np.abs(total) + error
        ends = np.maximum(2 * low * np.exp(-low * low), 2 * high * np.exp(-high * high))
        peak = 2 * np.sqrt(0.5) * np.exp(-0.5)
        return np.where((low <= np.sqrt(0.5)) & (np.sqrt(0.5) <= high), peak, ends)
    if name == "linear":
        return np.full_like(total, 1.0 / 3.0)
    raise AssertionError(f"no float64 form of activation {name!r}")


def cppn_reference(encoding: CPPNEncoding, genomes: CPPNGenomes) -> tuple[np.ndarray, np.ndarray]:
    """The CPPNs' outputs in float64, and a bound on any float32 renderer's error on each.

    The float64 evaluation is independent of the renderers (plain matrix products over the
    compiled evaluation order). The bound is propagated node by node: a node's error is what
    its inputs' errors and the rounding of its own sum make of it, times the activation's
    largest slope within that error of the sum (a saturated sigmoid passes almost nothing
    on), plus :data:`ACTIVATION_ERROR`. The sum's rounding is ``gamma(n) * sum(|w| |v|)``
    with ``n`` its connections and two more for duplicate connections added up into one
    weight. A bound of 0
    means exact: a node without connections, a clipped linear node beyond its clip. The
    input planes are the float32 ones both renderers use.

    Returns:
        ``(outputs, bound)``, each ``(batch, outputs, height, width)`` float64: ``|o|``
        clipped to [0, 1] (before any colour conversion), and the bound on its error.
    """
    _, height, width = encoding.shape
    _, weights, activations = encoding.compile(genomes)
    absolute = dataclasses.replace(genomes, edge_weight=np.abs(genomes.edge_weight))
    _, magnitudes, _ = encoding.compile(absolute)  # sum of |w| over duplicate connections
    weights, magnitudes = weights.astype(np.float64), magnitudes.astype(np.float64)
    planes = coordinate_inputs(height, width, coordinates=encoding.coordinates).double().numpy()
    batch, length = activations.shape
    values = np.zeros((batch, length, planes.shape[1]))
    errors = np.zeros_like(values)
    values[:, :NUM_INPUTS] = planes
    for k in range(NUM_INPUTS, length):
        total = np.einsum("bj,bjp->bp", weights[:, k, :k], values[:, :k])
        scale = np.einsum("bj,bjp->bp", magnitudes[:, k, :k], np.abs(values[:, :k]))
        sources = (magnitudes[:, k, :k] != 0).sum(axis=1)
        carried = np.einsum("bj,bjp->bp", magnitudes[:, k, :k], errors[:, :k])
        total_error = carried + gamma(sources + 2)[:, None] * scale
        for index, name in enumerate(ACTIVATION_NAMES):
            rows = activations[:, k] == index
            values[rows, k] = _activate64(name, total[rows])
            slope = _slope64(name, total[rows], total_error[rows])
            errors[rows, k] = slope * total_error[rows] + ACTIVATION_ERROR
        # Exact in float32 too: a node without connections (a sum of nothing, 0, whose
        # activation is 0 or 1), and the clipped linear beyond its clip (exactly -1 or 1).
        clipped = (activations[:, k, None] == ACTIVATION_NAMES.index("linear")) & (
            np.abs(total) > 3.0 + total_error
        )
        errors[:, k][(sources == 0)[:, None] | clipped] = 0.0
    outputs = np.clip(np.abs(values[:, length - encoding.outputs :]), 0.0, 1.0)
    shape = (batch, encoding.outputs, height, width)
    return outputs.reshape(shape), errors[:, length - encoding.outputs :].reshape(shape)


def converted_error(bound: np.ndarray) -> np.ndarray:
    """A bound on the error of HSV or HLS colours of ``(batch, 3, h, w)`` channels off by ``bound``.

    Returns:
        ``(batch, 1, h, w)``, the same for the three colour channels of a pixel.
    """
    return CONVERSION_LIPSCHITZ * bound.max(axis=1, keepdims=True) + CONVERSION_ERROR


def to_numpy(images: torch.Tensor) -> np.ndarray:
    """A rendered batch as float64 numpy (detached)."""
    return images.detach().double().numpy()


def _chain_layers(network: torch.nn.Module, example: torch.Tensor) -> list[torch.nn.Module]:
    """The leaf modules of ``network`` in the order its forward pass on ``example`` calls them (checked)."""
    leaves = [module for module in network.modules() if not list(module.children())]
    called: list[torch.nn.Module] = []
    hooks = [leaf.register_forward_hook(lambda module, *_: called.append(module)) for leaf in leaves]
    try:
        with torch.no_grad():
            network(example)
    finally:
        for hook in hooks:
            hook.remove()
    assert called == leaves, "the network is not a chain of its leaf modules"
    return leaves


# How many standard deviations of the rounding error a tolerance allows (see logit_bound): a
# normal variable passes 8 of them with probability 1e-15.
SIGMAS = 8.0


def logit_bound(network: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of a chain network (Conv2d, Linear, ReLU, MaxPool2d, Flatten) in float64, and
    a bound on the error of a float32 evaluation of them on the same float32 ``inputs``.

    Worst-case bounds (every rounding at its largest, in the same direction, amplified by
    ``|W|`` at every layer) overestimate a network's rounding a hundred thousand times, which
    would test nothing. This is the probabilistic analysis instead (Higham and Mary, "A new
    approach to probabilistic rounding error analysis", 2019): each rounding is an independent
    error of at most ``u`` of the partial sum, so a sum of ``n`` products of absolute sum ``A``
    is off by a variable of variance at most ``(n + 3) u^2 A^2 / 3`` (any order of summation,
    fused or not; three more for the bias and a normalisation folded into the weights), and
    errors of the inputs pass through ``W`` with variance ``W^2 var``. ReLU and max-pooling
    pass errors on (1-Lipschitz; the largest variance of a pooling window is kept). The bound
    is :data:`SIGMAS` standard deviations.

    Returns:
        ``(logits, bound)``, each ``(batch, classes)`` float64.
    """
    values, variances = inputs.double(), torch.zeros_like(inputs, dtype=torch.float64)
    for layer in _chain_layers(network, inputs[:1]):
        if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
            weight = layer.weight.detach().double()
            bias = None if layer.bias is None else layer.bias.detach().double()
            if isinstance(layer, torch.nn.Conv2d):
                options = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                               groups=layer.groups)  # fmt: skip
                fan_in = weight[0].numel()

                def apply(x, w, b, options=options):
                    return torch.nn.functional.conv2d(x, w, b, **options)
            else:
                fan_in = weight.shape[1]
                apply = torch.nn.functional.linear
            scale = apply(values.abs(), weight.abs(), None if bias is None else bias.abs())
            variances = apply(variances, weight**2, None) + (fan_in + 3) * UNIT_ROUNDOFF**2 * scale**2 / 3
            values = apply(values, weight, bias)
        elif isinstance(layer, torch.nn.ReLU):
            values = values.clamp(min=0)
        elif isinstance(layer, torch.nn.MaxPool2d):
            pool = (layer.kernel_size, layer.stride, layer.padding)
            values, variances = (torch.nn.functional.max_pool2d(t, *pool) for t in (values, variances))
        elif isinstance(layer, torch.nn.Flatten):
            values, variances = values.flatten(1), variances.flatten(1)
        else:
            raise AssertionError(f"no rounding bound for {type(layer).__name__}")
    return values, SIGMAS * variances.sqrt()


def probability_bound(network: torch.nn.Module, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of a chain network in float64, and a bound on a float32 evaluation's error.

    Logits off by at most ``d`` (:func:`logit_bound`: :data:`SIGMAS` standard deviations of
    the rounding, its largest value per image) move each
    probability ``p`` by at most ``p (e^(2 d) - 1)``; the softmax's own float32 work (exp, a
    sum over the ``C`` classes, a division, and a log and an exp where it goes through
    log-probabilities of logits up to ``|z|``) adds at most ``(C + 8 + 2 |z|) u`` of ``p``.

    Returns:
        ``(probabilities, bound)``, each ``(batch, classes)`` float64 numpy.
    """
    logits, errors = logit_bound(network, inputs)
    probabilities = torch.softmax(logits, dim=1)
    largest = errors.amax(dim=1, keepdim=True)
    classes = logits.shape[1]
    own = (classes + 8 + 2 * logits.abs().amax(dim=1, keepdim=True)) * UNIT_ROUNDOFF
    bound = probabilities * (torch.expm1(2 * largest) + own)
    return probabilities.numpy(), bound.numpy()
