"""Photos are decoded with bounded memory, and shrinking a large photo first keeps what the model sees."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fooling.encodings import UserError
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


# --- photos that are not what they seem ------------------------------------------------------------


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_inflating_chunk(where: str) -> bytes:
    """A 32x32 PNG with a 4 MB metadata chunk (a few KB compressed), past PIL's MAX_TEXT_CHUNK.

    ``where``: a ``zTXt`` comment after the pixels (read by ``load``), or an ``iCCP`` colour
    profile before them (read by ``open``).
    """
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    png = buffer.getvalue()
    if where == "zTXt after the pixels":
        end = png.rindex(b"IEND") - 4
        return png[:end] + chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * 4 * 2**20, 9)) + png[end:]
    header_end = 8 + 25
    profile = chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"B" * 4 * 2**20, 9))
    return png[:header_end] + profile + png[header_end:]


@pytest.mark.parametrize("where", ["zTXt after the pixels", "iCCP before the pixels"])
def test_a_metadata_chunk_past_pils_limit_is_one_line(tmp_path, where):
    photo = tmp_path / "photo.png"
    photo.write_bytes(with_inflating_chunk(where))
    with pytest.raises(UserError, match=r"photo.png is not a readable image \(ValueError\)") as caught:
        load_images(str(photo), 3, (28, 28))
    assert "\n" not in str(caught.value)


def fooling(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``fooling ARGV`` in a new process; a hang is a failure, not a stuck test run."""
    command = [str(Path(sys.executable).with_name("fooling")), *argv]  # the installed command
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def test_a_fifo_among_the_photos_is_refused_at_once(fooling_home, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("L", (28, 28), 0).save(photos / "a.png")
    os.mkfifo(photos / "b.png")  # nothing ever writes: opening it to read would wait forever
    result = fooling("perturb", "--model", "mnist-lenet", "--image", str(photos), "--untargeted",
                     "--steps", "1", "--no-progress", "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [f"fooling: error: {photos / 'b.png'} is a FIFO, not a regular file"]
    assert not (tmp_path / "out").exists()


def test_a_fifo_as_labels_is_refused_at_once(fooling_home, tmp_path):
    labels = Path(tmp_path / "labels.txt")
    os.mkfifo(labels)
    result = fooling("evolve", "--model", str(tmp_path / "net.onnx"), "--labels", str(labels),
                     "--generations", "1", "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [f"fooling: error: --labels {labels} is a FIFO, not a regular file"]


def in_new_process(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -c code`` in a new process; a hang is a failure, not a stuck test run."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_a_fifo_as_a_stored_labels_file_is_refused_at_once(tmp_path):
    # A run folder's model reference names its labels file: someone else's folder may name a FIFO.
    labels = tmp_path / "labels.txt"
    os.mkfifo(labels)
    result = in_new_process(
        "from fooling.fitness.sources.files import read_labels\n"
        "from fooling.encodings import UserError\n"
        f"try:\n    read_labels({str(labels)!r})\nexcept UserError as error:\n    print(error)\n"
    )
    assert result.stdout.strip() == f"--labels {labels} is a FIFO, not a regular file", result.stderr[-2000:]


def test_training_photos_are_read_as_photos_are(tmp_path):
    # retrain --train-dir: a FIFO, a metadata chunk past PIL's limit and a declared bomb are one line each.
    root = tmp_path / "train" / "3"
    root.mkdir(parents=True)
    Image.new("L", (28, 28), 0).save(root / "a.png")
    os.mkfifo(root / "b.png")
    code = (
        "from fooling.fitness.fooling_class import load_image_folder\n"
        "from fooling.encodings import UserError\n"
        "names = tuple(str(i) for i in range(10))\n"
        f"try:\n    load_image_folder({str(tmp_path / 'train')!r}, names, (28, 28), 1)\n"
        "except UserError as error:\n    print(error)\n"
    )
    assert in_new_process(code).stdout.strip() == f"{root / 'b.png'} is a FIFO, not a regular file"
    (root / "b.png").unlink()
    (root / "b.png").write_bytes(with_inflating_chunk("zTXt after the pixels"))
    assert in_new_process(code).stdout.strip() == f"{root / 'b.png'} is not a readable image (ValueError)"
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)  # 900 megapixels, never decoded
    (root / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    assert "declares too many pixels (limit 50,000,000)" in in_new_process(code).stdout
