"""Fitness: classifiers, their data and weights, and batched scoring of images.

Nothing here knows of archives, genomes or Ray.
"""

from . import imagenet, sources  # noqa: F401  (register the ImageNet models; timm:, files, plugins)
from ._home import fooling_home, offline
from ._names import UnknownNameError, resolve_name
from .data import DigitData, load_mnist
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_class_names
from .lenet import LeNet
from .models import (
    LoadedModel,
    ModelSpec,
    ModelUnavailableError,
    get_model_spec,
    lenet_model_name,
    lenet_weights_path,
    load_model,
    model_names,
    register_model,
    weights_hash,
)
from .scorer import Scorer, pick_device, ten_crops
from .train import TrainResult, fit_lenet, train_lenet

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_class_names",
    "DigitData",
    "LeNet",
    "LoadedModel",
    "ModelSpec",
    "ModelUnavailableError",
    "Scorer",
    "TrainResult",
    "UnknownNameError",
    "fit_lenet",
    "fooling_home",
    "get_model_spec",
    "lenet_model_name",
    "lenet_weights_path",
    "load_model",
    "load_mnist",
    "model_names",
    "offline",
    "pick_device",
    "register_model",
    "resolve_name",
    "ten_crops",
    "train_lenet",
    "weights_hash",
]
