"""What every model source shares: its errors, one-line reasons, and weights-only loading."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from fooling.encodings.errors import UserError, shortened
from fooling.fitness.limits import MAX_MODEL_BYTES, open_regular_file


class ModelFileError(UserError):
    """A model file that cannot be used (missing, not a model, a pickle, bad options); one line."""


class GradientUnavailableError(UserError):
    """A model without gradients (scored by ONNX Runtime) asked for them; one line."""


def reason(error: BaseException) -> str:
    """One line saying why ``error`` happened, at most 200 characters.

    For TorchScript's many-line errors it is the last line naming an exception
    (``RuntimeError: ...``), else the first line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("[ONNXRuntimeError]"):  # the useful part is on the next lines
        return shortened(" ".join(lines), 200)
    named = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    line = named[-1].split(":", 1)[1].strip() if named and ":" in named[-1] else lines[0]
    return shortened(line or lines[0], 200)


def read_model_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The whole of regular file ``path`` (a model or its external data), refused by its size first.

    Args:
        path: the file.
        what: how messages name it, e.g. ``"model file net.onnx"``.

    Raises:
        ModelFileError: over :data:`~fooling.fitness.limits.MAX_MODEL_BYTES` (checked before
            any read, so a huge or sparse file costs nothing), more than this machine's free
            memory, not a regular file, or unreadable.
    """
    limit = f"the {MAX_MODEL_BYTES / 2**30:g} GiB limit of model files"
    try:
        with open_regular_file(path, what) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_MODEL_BYTES:
                raise ModelFileError(f"{what}: {size:,} bytes, over {limit}")
            data = handle.read(MAX_MODEL_BYTES + 1)  # a file that grew meanwhile is still bounded
    except MemoryError:
        raise ModelFileError(f"{what}: {size:,} bytes do not fit in this machine's free memory") from None
    except UserError as error:  # not a regular file
        raise ModelFileError(str(error)) from None
    except OSError as error:
        raise ModelFileError(f"{what}: cannot read it ({reason(error)})") from None
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(f"{what}: over {limit}")
    return data


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """While inside: every ``torch.load`` uses the safe weights-only unpickler.

    This holds even where its caller passes ``weights_only=False``
    (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, read per call).
    """
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
