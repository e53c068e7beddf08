"""Fitness: classifiers, their data and weights, and batched scoring of images.

Nothing here knows of archives, genomes or Ray.
"""

# Imported for what they register: the ImageNet models, retrained networks, and timm:,
# torchvision:, model files and plugins (sources last: its catch-all resolvers come after);
# the built-in scoring engines.
from fooling.fitness import engine, fooling_class, imagenet, sources, torch_engine  # noqa: F401
from fooling.fitness._home import fooling_home, offline
from fooling.fitness._messages import error_line
from fooling.fitness._names import UnknownNameError, class_index, close_names, resolve_name
from fooling.fitness.data import DigitData, load_mnist
from fooling.fitness.engines import EngineUnavailableError
from fooling.fitness.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_class_names
from fooling.fitness.lenet import LeNet
from fooling.fitness.models import (
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
from fooling.fitness.scorer import ModelRunError, Scorer, pick_device, ten_crops
from fooling.fitness.sources.common import GradientUnavailableError, ModelFileError
from fooling.fitness.train import TrainResult, fit_lenet, train_lenet

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_class_names",
    "DigitData",
    "EngineUnavailableError",
    "GradientUnavailableError",
    "LeNet",
    "LoadedModel",
    "ModelFileError",
    "ModelSpec",
    "ModelRunError",
    "ModelUnavailableError",
    "Scorer",
    "TrainResult",
    "UnknownNameError",
    "close_names",
    "error_line",
    "class_index",
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
