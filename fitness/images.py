"""Reading photos: files, folders, labelled ``DIR/CLASS/IMAGE`` folders, or the photos scikit-image ships."""

from __future__ import annotations

import logging
import math
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from fooling.encodings.errors import UserError
from fooling.fitness._names import close_names
from fooling.fitness.limits import MAX_IMAGE_PIXELS, open_regular_file
from fooling.fitness.models import ModelSpec
from fooling.fitness.scorer import Scorer

logger = logging.getLogger(__name__)

# Real photos that ship with scikit-image, usable offline by name.
BUNDLED_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# PIL's resampling filters by the names timm's and torchvision's configs give them.
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


# What PIL raises for a file it cannot read, besides DecompressionBombError.
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError)


def _bundled(name: str) -> np.ndarray:
    from skimage import data  # heavy (scikit-image): only for the bundled photos

    return getattr(data, name)()


def resize_and_crop(
    picture: np.ndarray, size: tuple[int, int], crop_pct: float, interpolation: str = "bilinear"
) -> np.ndarray:
    """A photo resized and centre-cropped with PIL as timm's (and torchvision's) evaluation does it.

    The photo is resized with ``interpolation`` so that a centre crop of ``size`` keeps the middle
    ``crop_pct`` of it: for a square ``size`` of side ``s``, the shorter side becomes
    ``floor(s / crop_pct)`` (aspect kept); for a non-square one, the photo is scaled until it
    covers ``floor(H / crop_pct), floor(W / crop_pct)``. Then the centre ``size`` is cut out
    (padded with black where the photo is smaller, as torchvision's ``CenterCrop`` does).

    Args:
        picture: ``(height, width)`` or ``(height, width, channels)`` uint8 photo.
        size: ``(H, W)`` the model takes.
        crop_pct: fraction of the resized photo the crop keeps, in ``(0, 2]`` (timm: 0.875 for
            most ImageNet models, 1.0 for many recent ones).
        interpolation: a name of :data:`RESAMPLING`.

    Returns:
        ``(H, W)`` or ``(H, W, channels)`` uint8.

    Raises:
        ValueError: ``crop_pct`` out of range, or an unknown ``interpolation``.
    """
    if not 0 < crop_pct <= 2:
        raise ValueError(f"crop_pct must be in (0, 2], not {crop_pct}")
    if interpolation not in RESAMPLING:
        raise ValueError(f"unknown interpolation {interpolation!r} (known: {', '.join(RESAMPLING)})")
    picture = np.asarray(picture)
    image = Image.fromarray(picture[..., :3] if picture.ndim == 3 else picture)
    width, height = image.size
    # A hair above the quotient: torchvision's resize/crop pairs (232 -> 224) give crop_pct
    # whose quotient falls a rounding error short of the resize side.
    scale = (math.floor(size[0] / crop_pct + 1e-6), math.floor(size[1] / crop_pct + 1e-6))
    if scale[0] == scale[1]:  # torchvision's Resize(int): the shorter side to scale, aspect kept
        short, long = sorted((width, height))
        other = int(scale[0] * long / short)
        target = (scale[0], other) if width <= height else (other, scale[0])
    else:  # timm's ResizeKeepRatio: scaled until it covers ``scale``
        ratio = min(height / scale[0], width / scale[1])
        target = (round(width / ratio), round(height / ratio))
    if target != (width, height):
        image = image.resize(target, RESAMPLING[interpolation])
    array = np.asarray(image)
    height, width = array.shape[:2]
    pad_top, pad_left = max(size[0] - height, 0), max(size[1] - width, 0)
    if pad_top or pad_left:  # as CenterCrop: the larger half of the padding after the image
        padding = [(pad_top // 2, (pad_top + 1) // 2), (pad_left // 2, (pad_left + 1) // 2)]
        array = np.pad(array, padding + [(0, 0)] * (array.ndim - 2))
        height, width = array.shape[:2]
    top, left = int(round((height - size[0]) / 2.0)), int(round((width - size[1]) / 2.0))
    return array[top : top + size[0], left : left + size[1]]


def to_model_input(
    picture: np.ndarray,
    channels: int,
    size: tuple[int, int],
    *,
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """``(height, width[, 3])`` uint8 -> ``(channels, *size)`` float in [0, 1].

    With ``crop_pct`` (a timm or torchvision model's): :func:`resize_and_crop`, as the model's
    own evaluation transform. Without: the centre square, then an antialiased bilinear resize,
    so nothing is stretched.

    Raises:
        ValueError: see :func:`resize_and_crop`.
    """
    if crop_pct is not None:
        picture = resize_and_crop(picture, size, crop_pct, interpolation)
    image = torch.from_numpy(np.array(picture, copy=True)).float() / 255.0
    image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)[:3]
    if image.shape[0] == 1 and channels == 3:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 3 and channels == 1:
        image = (image * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    if crop_pct is not None:
        return image.contiguous()
    height, width = image.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[:, top : top + side, left : left + side].unsqueeze(0)
    return F.interpolate(square, size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(
        0, 1
    )


def _needed_side(size: tuple[int, int], crop_pct: float | None) -> int:
    """The shorter side a photo must keep for the model's resize to see full detail."""
    return math.ceil(max(size) / min(crop_pct or 1.0, 1.0))


def _decode_reduced(picture: Image.Image, needed: int) -> Image.Image:
    """``picture`` decoded as RGB, first shrunk by an integer factor where it is far larger than needed.

    Memory is the point: a 49-megapixel photo (or a 140 KB PNG that inflates to one) as a
    float tensor takes 600 MB per copy, and the resize made several. The photo is shrunk
    while still 8-bit (JPEG: decoded at a reduced scale; others: box-averaged by
    :meth:`PIL.Image.Image.reduce`), keeping a shorter side of at least ``2 * needed``, so
    the model's own resize afterwards still averages over every pixel it covers.

    Args:
        picture: an opened, not yet decoded image.
        needed: the shorter side the model's transform resizes to.

    Returns:
        An RGB image whose shorter side is at least ``min(original, 2 * needed)``.
    """
    keep = 2 * needed
    if picture.format == "JPEG":
        picture.draft("RGB", (keep, keep))  # decodes at 1/2, 1/4 or 1/8 scale, never below keep
    picture = picture.convert("RGB") if picture.mode != "RGB" else picture  # convert always copies
    factor = min(picture.size) // keep
    return picture.reduce(factor) if factor >= 2 else picture


def read_photo(file: Path, needed: int) -> np.ndarray:
    """The RGB pixels ``(H, W, 3)`` uint8 of photo ``file``, shrunk while 8-bit where far larger than needed.

    Args:
        file: an image file (untrusted: any content).
        needed: the shorter side the model's transform resizes to (see :func:`_decode_reduced`).

    Raises:
        OSError: it cannot be opened (missing, no permission).
        UserError: not a regular file, not a readable image, or above :data:`MAX_IMAGE_PIXELS`
            (refused from its header, before decoding).
    """
    try:
        # Not a regular file (a FIFO would block forever, a device never end): one line.
        with open_regular_file(file, str(file)) as handle:
            with warnings.catch_warnings():  # the size is checked below, with our own limit
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                picture = Image.open(handle)  # reads the header only
            with picture:
                width, height = picture.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise UserError(
                        f"{file} is {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,}; "
                        "scale it down first"
                    )
                return np.asarray(_decode_reduced(picture, needed))
    except UserError:
        raise
    except Image.DecompressionBombError:
        limit = f"limit {MAX_IMAGE_PIXELS:,}"
        raise UserError(f"{file} declares too many pixels ({limit}); scale it down first") from None
    except _UNREADABLE as error:
        # PIL's own limits end in ValueError (a zTXt or iCCP chunk that inflates past
        # MAX_TEXT_CHUNK), a damaged file in SyntaxError, struct.error or EOFError.
        raise UserError(f"{file} is not a readable image ({type(error).__name__})") from None


def load_model_images(source: str, spec: ModelSpec) -> tuple[torch.Tensor, list[str]]:
    """Photos as ``spec``'s model takes them: images ``(batch, channels, H, W)`` in [0, 1] and their names.

    This is :func:`load_images` with the model's channels, input size, ``crop_pct`` and
    interpolation (a timm model's pretrained config, a torchvision weights' transform).

    Raises:
        FileNotFoundError, UserError: see :func:`load_images`.
    """
    return load_images(
        source, spec.channels, spec.input_size, crop_pct=spec.crop_pct, interpolation=spec.interpolation
    )


def load_images(
    source: str,
    channels: int,
    size: tuple[int, int],
    *,
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
) -> tuple[torch.Tensor, list[str]]:
    """Images ``(batch, channels, *size)`` in [0, 1] and their names.

    Args:
        source: a bundled photo name (:data:`BUNDLED_PHOTOS`), an image file, or a folder
            of image files.
        channels: channels the model takes (1 or 3).
        size: ``(height, width)`` the model takes.
        crop_pct: share of a photo the model's evaluation transform keeps; ``None``: the
            centre square, resized (see :func:`to_model_input`; :func:`load_model_images`
            takes it from a model's spec).
        interpolation: the resize of that transform (used with ``crop_pct`` only).

    Raises:
        FileNotFoundError: no such file or folder.
        UserError: a file that is not a readable image, one above :data:`MAX_IMAGE_PIXELS`
            (refused from its header, before decoding), or a folder with no images.
    """
    fit = {"crop_pct": crop_pct, "interpolation": interpolation}
    if source in BUNDLED_PHOTOS:
        return to_model_input(_bundled(source), channels, size, **fit).unsqueeze(0), [source]
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"no such image or folder: {source}{close_names(source, BUNDLED_PHOTOS, count=1)} "
            f"(bundled photos: {', '.join(BUNDLED_PHOTOS)})"
        )
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    )
    if not files:
        raise UserError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    needed = _needed_side(size, crop_pct)
    images = [to_model_input(read_photo(file, needed), channels, size, **fit) for file in files]
    return torch.stack(images), unique_names(files)


def class_photo_folders(folder: str, spec: ModelSpec) -> dict[int, Path]:
    """The sub-folders of a labelled photo folder ``DIR/CLASS/IMAGE`` named after a class of ``spec``.

    They are keyed by class index; case and ``_``/space are ignored in the names, and other
    sub-folders are logged and left out.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        UserError: no sub-folder holding images is named after a class of ``spec``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--real-images {folder}: no such folder (expected DIR/CLASS/IMAGE)")
    index = {name.lower().replace("_", " "): i for i, name in enumerate(spec.class_names)}
    found = {}
    for sub in sorted(path for path in root.iterdir() if path.is_dir()):
        class_id = index.get(sub.name.lower().replace("_", " "))
        if class_id is None:
            logger.warning("--real-images: %s is not a class of %s; left out", sub.name, spec.name)
        elif any(p.suffix.lower() in IMAGE_SUFFIXES for p in sub.iterdir()):
            found[class_id] = sub
    if not found:
        raise UserError(
            f"--real-images {folder}: no sub-folder of images is named after a class of {spec.name} "
            "(expected DIR/CLASS/IMAGE)"
        )
    return found


def real_photo_confidence(scorer: Scorer, photos: dict[int, Path]) -> dict[int, tuple[float, int]]:
    """The classifier's mean confidence in each class on that class's photos.

    Args:
        scorer: the classifier; photos are fitted to it by :func:`load_model_images`.
        photos: ``{class index: folder of its photos}`` (:func:`class_photo_folders`).

    Returns:
        ``{class index: (mean probability of that class over its photos, number of photos)}``.

    Raises:
        UserError: a file that is not a readable image.
    """
    found = {}
    for class_id, folder in photos.items():
        images, _ = load_model_images(str(folder), scorer.spec)
        probabilities = np.concatenate([scorer.score(images[s : s + 32]) for s in range(0, len(images), 32)])
        found[class_id] = (float(probabilities[:, class_id].mean()), len(images))
    return found


# What a name taken from a file may not hold to be one harmless path component: separators,
# control characters, and leading dots (".", ".." and hidden names).
_UNSAFE_IN_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|^\.+")


def safe_name(name: str) -> str:
    """``name`` as one path component that stays inside the folder it is joined to.

    Separators and control characters become ``_``, as does each leading dot, so ``..``,
    ``.`` and ``.hidden`` become ``__``, ``_`` and ``_hidden``; an empty name becomes ``_``.
    """
    return _UNSAFE_IN_NAME.sub(lambda match: "_" * len(match.group()), name) or "_"


def unique_names(files: list[Path]) -> list[str]:
    """A distinct output name per file: its stem, or its whole name where stems repeat.

    ``x.png`` and ``x.jpg`` become ``x.png`` and ``x.jpg``, never both ``x``; where even whole
    names collide, every name is prefixed with the file's position (``000-x.png``). Every name
    is a :func:`safe_name`: photos may come from someone else, and a photo named ``...png``
    (stem ``..``) must not name its output folder's parent.
    """
    stems = [safe_name(file.stem) for file in files]
    whole = [safe_name(file.name) for file in files]
    names = [name if stems.count(stem) > 1 else stem for stem, name in zip(stems, whole)]
    if len(set(names)) != len(names):  # e.g. "x.png" beside a file whose stem is "x.png"
        names = [f"{index:03d}-{name}" for index, name in enumerate(whole)]
    return names
