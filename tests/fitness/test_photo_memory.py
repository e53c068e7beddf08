"""Photos are decoded with bounded memory, and shrinking a large photo first keeps what the model sees."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fooling.fitness.images import load_images, to_model_input
from fooling.fitness.limits import MAX_IMAGE_PIXELS

# Prints how much the peak resident memory grew while one photo was loaded, in MiB.
_MEASURE = """
import resource, sys
from fooling.fitness.images import load_images
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
crop = None if sys.argv[2] == "none" else float(sys.argv[2])
images, _ = load_images(sys.argv[1], 3, (224, 224), crop_pct=crop)
assert tuple(images.shape) == (1, 3, 224, 224)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.fixture(scope="module")
def inflating_png(tmp_path_factory) -> str:
    """A 7000x7000 RGB PNG (49 megapixels, under the limit) of one colour: about 160 KB on disk."""
    side = 7000
    assert side * side <= MAX_IMAGE_PIXELS
    path = tmp_path_factory.mktemp("bomb") / "inflates.png"
    Image.new("RGB", (side, side), (200, 30, 60)).save(path, optimize=True)
    assert path.stat().st_size < 1_000_000
    return str(path)


@pytest.mark.parametrize("crop_pct", ["none", "0.875"])
def test_an_inflating_png_is_decoded_with_bounded_memory(inflating_png, crop_pct):
    # Decoding 49 megapixels of 8-bit RGB needs 147 MB once; the float copies the resize made
    # of the whole photo took 1.4 GB more. Allow the decode twice over, nothing near a float copy.
    decoded_mib = 7000 * 7000 * 3 / 2**20
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, inflating_png, crop_pct],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    grown = int(result.stdout.split()[-1])
    assert grown < 2 * decoded_mib + 64, f"loading the photo grew the peak by {grown} MiB"


@pytest.mark.parametrize("crop_pct", [None, 0.875])
def test_shrinking_a_large_photo_first_keeps_the_model_input(tmp_path, crop_pct):
    # A smooth photo well above twice the model's side: shrunk by an integer box filter first,
    # then resized as before, it gives nearly what resizing the whole photo gives.
    height, width = 1900, 2600
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.stack(
        [
            127.5 + 127.5 * np.sin(x / 97.0),
            127.5 + 127.5 * np.cos(y / 71.0),
            255.0 * (x + y) / (height + width),
        ],
        axis=-1,
    ).astype(np.uint8)
    path = tmp_path / "large.png"
    Image.fromarray(picture).save(path)
    loaded, _ = load_images(str(path), 3, (224, 224), crop_pct=crop_pct)
    whole = to_model_input(picture, 3, (224, 224), crop_pct=crop_pct)
    # Both average the same pixels with slightly different kernels; on a picture whose
    # features span ~70 source pixels (6 after the resize) that moves values by under 2/255.
    difference = (loaded[0] - whole).abs()
    assert float(difference.mean()) < 2 / 255
    assert float(difference.max()) < 8 / 255


def test_a_small_photo_is_not_shrunk(tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    path = tmp_path / "small.png"
    Image.fromarray(picture).save(path)
    loaded, _ = load_images(str(path), 3, (224, 224), crop_pct=0.875)
    assert np.array_equal(loaded[0].numpy(), to_model_input(picture, 3, (224, 224), crop_pct=0.875).numpy())
