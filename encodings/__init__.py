"""Genome encodings: how a genome becomes an image and how genomes vary.

Nothing here knows of Ray, archives or files: genomes are batches of numpy arrays,
images are torch tensors.
"""

from ._batch import GenomeBatch
from .color import hls_bytes_to_rgb, hls_to_rgb, hsv_to_rgb
from .cppn import ACTIVATIONS, CPPNEncoding, CPPNGenomes, coordinate_inputs
from .cppn_triton import render_on_device
from .direct import DirectEncoding, DirectGenomes
from .errors import UserError, error_line
from .operators import polynomial_mutation, simulated_binary_crossover
from .plugins import PluginError, load_entry_point, load_entry_points
from .registry import (
    ENCODING_GROUP,
    ENCODINGS,
    GENOME_CLASSES,
    Encoding,
    EncodingSpec,
    color_space_help,
    encoding_help,
    registered_encodings,
)
from .tensor_operators import polynomial_mutation_tensor, simulated_binary_crossover_tensor
from .tensors import TensorGenomes

__all__ = [
    "ACTIVATIONS",
    "CPPNEncoding",
    "CPPNGenomes",
    "coordinate_inputs",
    "DirectEncoding",
    "DirectGenomes",
    "ENCODING_GROUP",
    "ENCODINGS",
    "Encoding",
    "EncodingSpec",
    "GENOME_CLASSES",
    "GenomeBatch",
    "PluginError",
    "color_space_help",
    "encoding_help",
    "error_line",
    "hls_bytes_to_rgb",
    "hls_to_rgb",
    "hsv_to_rgb",
    "load_entry_point",
    "load_entry_points",
    "polynomial_mutation",
    "registered_encodings",
    "render_on_device",
    "UserError",
    "simulated_binary_crossover",
    "TensorGenomes",
    "polynomial_mutation_tensor",
    "simulated_binary_crossover_tensor",
]
