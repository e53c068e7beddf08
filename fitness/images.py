"""Reading photos for the gradient methods: files, folders, or the photos scikit-image ships."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from fooling.fitness.limits import MAX_IMAGE_PIXELS

# Real photos that ship with scikit-image, usable offline by name.
BUNDLED_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _bundled(name: str) -> np.ndarray:
    from skimage import data  # optional heavy dependency: only the bundled photos

    return getattr(data, name)()


def to_model_input(picture: np.ndarray, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """``(height, width[, 3])`` uint8 -> ``(channels, *size)`` float in [0, 1]: centre square
    crop, then an antialiased resize, so nothing is stretched."""
    image = torch.from_numpy(np.array(picture, copy=True)).float() / 255.0
    image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)[:3]
    if image.shape[0] == 1 and channels == 3:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 3 and channels == 1:
        image = (image * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    height, width = image.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[:, top : top + side, left : left + side].unsqueeze(0)
    return F.interpolate(square, size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(
        0, 1
    )


def load_images(source: str, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
    """Images ``(batch, channels, *size)`` in [0, 1] and their names.

    Args:
        source: a bundled photo name (:data:`BUNDLED_PHOTOS`), an image file, or a folder
            of image files.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: a file that is not a readable image, one above :data:`MAX_IMAGE_PIXELS`
            (refused from its header, before decoding), or a folder with no images.
    """
    if source in BUNDLED_PHOTOS:
        return to_model_input(_bundled(source), channels, size).unsqueeze(0), [source]
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"no such image or folder: {source} (or use one of {', '.join(BUNDLED_PHOTOS)})"
        )
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    )
    if not files:
        raise ValueError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for file in files:
        try:
            with warnings.catch_warnings():  # the size is checked below, with our own limit
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                picture = Image.open(file)  # reads the header only
            with picture:
                width, height = picture.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ValueError(
                        f"{file} is {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,}; "
                        "scale it down first"
                    )
                array = np.asarray(picture.convert("RGB"))
        except Image.DecompressionBombError:
            raise ValueError(
                f"{file} declares too many pixels (limit {MAX_IMAGE_PIXELS:,}); scale it down first"
            ) from None
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{file} is not a readable image ({type(error).__name__})") from None
        images.append(to_model_input(array, channels, size))
    return torch.stack(images), unique_names(files)


def unique_names(files: list[Path]) -> list[str]:
    """A distinct output name per file: its stem, or its whole name where stems repeat
    (``x.png`` and ``x.jpg`` become ``x.png`` and ``x.jpg``, never both ``x``)."""
    stems = [file.stem for file in files]
    names = [file.name if stems.count(file.stem) > 1 else file.stem for file in files]
    if len(set(names)) != len(names):  # e.g. "x.png" beside a file whose stem is "x.png"
        names = [f"{index:03d}-{file.name}" for index, file in enumerate(files)]
    return names
