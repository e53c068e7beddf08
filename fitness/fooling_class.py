"""Training with an extra "fooling" class (the paper's section 3.3), network side only.

Round k of the paper's loop adds fooling images to the training set as class n+1 and
trains DNN_k+1. This module builds those training sets, gives a network one more output,
fine-tunes ImageNet networks and reads an ImageFolder of natural images; the loop itself
(evolution, archives, runs) lives in ``fooling.evo.experiments.retrain``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fooling.encodings.errors import UserError
from fooling.fitness._home import fooling_home
from fooling.fitness._names import resolve_name
from fooling.fitness.images import read_photo
from fooling.fitness.models import (
    ModelSpec,
    ModelUnavailableError,
    get_model_spec,
    register_resolver,
    weights_hash,
)
from fooling.fitness.train import save_weights

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
FOOLING_CLASS_NAME = "fooling"


def fooling_share(round_index: int, rounds: int, final_share: float) -> float:
    """Share of the training set the fooling class holds when training DNN_{round_index + 1}.

    It grows linearly and reaches ``final_share`` in the last round, as the paper's MNIST
    fooling class grew to 25% of the training data by its 15th round.

    Raises:
        ValueError: ``round_index`` not in ``[1, rounds]`` or a share outside ``(0, 1)``.
    """
    if not 1 <= round_index <= rounds:
        raise ValueError(f"round {round_index} is not in 1..{rounds}")
    if not 0 < final_share < 1:
        raise ValueError(f"the fooling class's share must be in (0, 1), not {final_share}")
    return final_share * round_index / rounds


def fooling_count(num_real: int, share: float) -> int:
    """Fooling images to add to ``num_real`` real ones so that they are ``share`` of the total."""
    return int(round(share * num_real / (1 - share)))


@dataclasses.dataclass
class TrainingSet:
    """Real images plus fooling images as one more class.

    Attributes:
        images: ``(n, ...)`` uint8, the real images first.
        labels: ``(n,)`` int64; the fooling images have label ``fooling_label``.
        fooling_label: the new class's index (the number of real classes).
        unique_fooling: distinct fooling images used (fewer than their count when the
            pool was smaller than the share asked for and images were drawn again).
    """

    images: np.ndarray
    labels: np.ndarray
    fooling_label: int
    unique_fooling: int

    @property
    def share(self) -> float:
        """Fraction of the set that is fooling images."""
        return float((self.labels == self.fooling_label).mean()) if len(self.labels) else 0.0


def with_fooling_class(
    images: np.ndarray,
    labels: np.ndarray,
    fooling_pool: np.ndarray,
    share: float,
    *,
    num_classes: int,
    rng: np.random.Generator,
) -> TrainingSet:
    """The real training set plus fooling images labelled ``num_classes`` at ``share``.

    Fooling images are drawn from ``fooling_pool`` without replacement while it lasts;
    a pool smaller than the count asked for is drawn again (reported in ``unique_fooling``).

    Args:
        images: ``(n_real, ...)`` uint8 real images.
        labels: ``(n_real,)`` labels in ``[0, num_classes)``.
        fooling_pool: ``(n_pool, ...)`` uint8 fooling images, same image shape.
        share: fraction of the result that is fooling images, in ``[0, 1)``.
        num_classes: real classes; the fooling class gets this index.
        rng: draws the fooling images.

    Raises:
        ValueError: an empty pool when images are needed, or mismatched shapes.
    """
    count = fooling_count(len(labels), share)
    if count and len(fooling_pool) == 0:
        raise ValueError("no fooling images to add")
    if len(fooling_pool) and fooling_pool.shape[1:] != images.shape[1:]:
        raise ValueError(f"fooling images of shape {fooling_pool.shape[1:]}, real {images.shape[1:]}")
    if count <= len(fooling_pool):
        rows = rng.choice(len(fooling_pool), size=count, replace=False)
    else:  # every pool image once, the rest drawn again
        rows = np.concatenate(
            [
                rng.permutation(len(fooling_pool)),
                rng.integers(0, len(fooling_pool), count - len(fooling_pool)),
            ]
        )
    chosen = fooling_pool[rows] if count else np.zeros((0, *images.shape[1:]), images.dtype)
    return TrainingSet(
        images=np.concatenate([images, chosen]),
        labels=np.concatenate([labels.astype(np.int64), np.full(count, num_classes, np.int64)]),
        fooling_label=num_classes,
        unique_fooling=int(len(np.unique(rows))) if count else 0,
    )


def last_linear(network: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """The network's output layer: ``(parent module, attribute name, layer)``.

    Raises:
        UserError: the network has no ``nn.Linear`` layer (the user's model cannot be retrained so).
    """
    found = None
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            found = name
    if found is None:
        raise UserError(f"{type(network).__name__} has no linear output layer to extend")
    parent_name, _, attribute = found.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    return parent, attribute, getattr(parent, attribute)


def add_output(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with one more output (the fooling class).

    The old outputs keep their weights; the new one starts at zero weights and a bias
    below every old bias, so the copy labels every image as before until trained.

    Raises:
        ValueError: no linear output layer.
    """
    network = copy.deepcopy(network)
    parent, attribute, old = last_linear(network)
    new = nn.Linear(old.in_features, old.out_features + 1, bias=True)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: old.out_features] = old.weight
        new.bias.fill_(0.0)
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
            new.bias[old.out_features] = old.bias.min() - 10.0
        else:
            new.bias[old.out_features] = -10.0
    setattr(parent, attribute, new)
    return network


def fine_tune(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    head_only: bool = True,
) -> nn.Module:
    """Fine-tune ``network`` with Adam on images in ``[0, 1]`` (how ImageNet nets are retrained).

    Args:
        network: modified in place and returned, in eval mode.
        images: ``(n, channels, height, width)`` float in ``[0, 1]`` at the network's input size.
        labels: ``(n,)`` int64.
        mean: the network's per-channel normalisation mean.
        std: the network's per-channel normalisation standard deviation.
        steps: optimiser steps (mini-batches drawn at random with replacement).
        batch_size: images per mini-batch.
        lr: Adam's learning rate.
        seed: seed of the mini-batch draws (torch's global generator is seeded with it too).
        head_only: train only the output layer (fast on a CPU; batch-norm statistics stay).

    Returns:
        ``network`` itself, in eval mode, every parameter's ``requires_grad`` off again.

    Raises:
        ValueError: ``steps < 1`` or no images.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    if len(images) == 0:
        raise ValueError("no images to fine-tune on")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    for parameter in network.parameters():
        parameter.requires_grad_(not head_only)
    _, _, head = last_linear(network)
    for parameter in head.parameters():
        parameter.requires_grad_(True)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    shape = (1, len(mean), 1, 1)
    mean_t, std_t = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    # Eval mode even while training the head: batch-norm statistics of a handful of
    # images would wreck a network trained on a million.
    network.eval() if head_only else network.train()
    loss_function = nn.CrossEntropyLoss()
    for _ in range(steps):
        rows = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=generator)
        optimizer.zero_grad()
        loss_function(network((images[rows] - mean_t) / std_t), labels[rows]).backward()
        optimizer.step()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network.eval()


def class_index(folder_name: str, class_names: tuple[str, ...]) -> int:
    """The class a folder of an ImageFolder tree holds: its name, or its index as digits.

    Underscores stand for spaces (``Egyptian_cat``); case is ignored.

    Raises:
        UnknownNameError: no such class (suggests close names).
    """
    if folder_name.isdigit() and int(folder_name) < len(class_names):
        return int(folder_name)
    index = {name.lower(): i for i, name in enumerate(class_names)}
    return index[resolve_name(folder_name.replace("_", " ").lower(), index, "class")]


def load_image_folder(
    root: str | Path, class_names: tuple[str, ...], size: tuple[int, int], channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a torchvision ImageFolder tree ``root/CLASS/IMAGE``, resized.

    Args:
        root: the folder.
        class_names: the model's classes; each CLASS folder must name one (see :func:`class_index`).
        size: ``(height, width)`` to resize to.
        channels: 3 (RGB) or 1 (gray).

    Returns:
        ``images (n, channels, height, width)`` float in ``[0, 1]`` and ``labels (n,)`` int64.

    Raises:
        UserError: ``root`` is not in ImageFolder layout (no class folders, a class folder
            without images, files beside the class folders) or an image cannot be read.
        UnknownNameError: a class folder names no class of the model.
    """
    root = Path(root)
    layout = f"--train-dir {root} is not in ImageFolder layout (ROOT/CLASS_NAME/IMAGE.jpg)"
    if not root.is_dir():
        raise UserError(f"{layout}: not a folder")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise UserError(f"{layout}: no class folders")
    stray = [p.name for p in entries if p.is_file()]
    if stray:
        raise UserError(f"{layout}: files beside the class folders ({stray[0]})")
    images, labels = [], []
    for folder in folders:
        label = class_index(folder.name, class_names)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{layout}: class folder {folder.name} holds no images")
        for path in files:
            try:
                picture = Image.fromarray(read_photo(path, max(size)))
            except OSError as error:
                raise UserError(f"cannot read image {path}: {error}") from None
            picture = picture.convert("RGB" if channels == 3 else "L")
            picture = picture.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(picture, dtype=np.float32) / 255.0
            images.append(array.reshape(size[0], size[1], channels).transpose(2, 0, 1))
            labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


# --- retrained networks in the model registry -----------------------------------------------

# ``BASE-retrainK-HASH``: DNN_K of a fooling-class loop that started from model BASE,
# HASH being the first 8 hex digits of its weights hash (so reruns never clash).
RETRAINED_PATTERN = re.compile(r"^(?P<base>.+)-retrain(?P<round>\d+)-(?P<hash>[0-9a-f]{8})$")


def retrained_path(name: str) -> Path:
    """Where the weights of retrained network ``name`` are cached (a JSON side-car beside)."""
    return fooling_home() / "models" / "retrained" / f"{name}.pt"


def save_retrained(network: nn.Module, base: str, round_index: int, class_names: tuple[str, ...]) -> str:
    """Cache a retrained network so that ``load_model`` finds it by name in any process.

    Returns:
        Its registry name, ``BASE-retrainK-HASH``.
    """
    name = f"{base}-retrain{round_index}-{weights_hash(network)[:8]}"
    save_weights(
        network, retrained_path(name), {"model": name, "base": base, "class_names": list(class_names)}
    )
    return name


def retrained_spec(name: str) -> ModelSpec | None:
    """The :class:`ModelSpec` of cached retrained network ``name``, or ``None`` if there is none."""
    match = RETRAINED_PATTERN.match(name)
    if not match or not retrained_path(name).exists():
        return None
    path = retrained_path(name)
    base = get_model_spec(match.group("base"))
    info = json.loads(path.with_suffix(".json").read_text())
    class_names = tuple(info["class_names"])

    def build() -> nn.Module:
        network = base.build()
        _, _, head = last_linear(network)
        if head.out_features != len(class_names):
            network = add_output(network)
        try:
            network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:
            raise ModelUnavailableError(f"cannot read weights {path}: {str(error)[:200]}") from None
        return network.eval()

    return ModelSpec(
        name=name,
        channels=base.channels,
        input_size=base.input_size,
        mean=base.mean,
        std=base.std,
        class_names=class_names,
        build=build,
        description=f"{base.name} retrained with a fooling class (round {match.group('round')})",
    )


# Networks retrained with a fooling class resolve by name in any process, from the cache.
register_resolver(retrained_spec)
