"""What a checkpoint records of its model, what changed since, and what a model cannot do."""

from __future__ import annotations

import re
from pathlib import Path

from fooling.encodings.errors import UserError
from fooling.fitness.endpoint.reference import is_endpoint
from fooling.fitness.models import LoadedModel
from fooling.fitness.sources.common import GradientUnavailableError, ModelFileError
from fooling.fitness.sources.files import KIND_NAMES, FileNetwork, read_labels, read_model
from fooling.fitness.sources.reference import FILE_SUFFIXES, is_model_file, split_reference
from fooling.fitness.sources.resolve import source_kind


def describe_model(reference: str, model: LoadedModel) -> dict:
    """How to rebuild ``model`` (JSON-able, stored in checkpoints).

    The record holds the reference string, its kind, the file's SHA-256 (files), labels,
    preprocessing and the weights hash.
    """
    record = {
        "reference": reference,
        "kind": source_kind(reference),
        "name": model.spec.name,
        "channels": model.spec.channels,
        "input_size": list(model.spec.input_size),
        "mean": list(model.spec.mean),
        "std": list(model.spec.std),
        "crop_pct": model.spec.crop_pct,
        "interpolation": model.spec.interpolation,
        "labels": list(model.spec.class_names),
        "weights_hash": model.weights_hash,
        "differentiable": differentiable(model),
    }
    if isinstance(model.network, FileNetwork):
        record["file_format"] = model.network.kind
        record["sha256"] = model.network.sha256
    return record


def differentiable(model: LoadedModel) -> bool:
    """False when the model cannot give gradients (an ONNX file)."""
    return bool(getattr(model.network, "differentiable", True))


def require_gradients(model: LoadedModel, command: str) -> None:
    """Raise :class:`GradientUnavailableError` for a model without gradients."""
    if not differentiable(model):
        raise GradientUnavailableError(
            f"{command} follows gradients, and {model.spec.name} is scored with ONNX Runtime, which "
            "computes none: use a TorchScript (.pt), torch.export (.pt2), timm: or torchvision: model"
        )


def _labels_change(recorded: dict, names: tuple[str, ...], where: str) -> str | None:
    """How ``names`` differ from the class names ``recorded`` holds, as a sentence; ``None`` if not."""
    then = recorded.get("labels")
    if not isinstance(then, list) or not all(isinstance(name, str) for name in then):
        return None  # a record without (readable) labels: nothing to compare
    if tuple(then) == names:
        return None
    first = next((i for i, (a, b) in enumerate(zip(then, names, strict=False)) if a != b), None)
    detail = (
        f"class {first} was {then[first][:40]!r}, is {names[first][:40]!r}"
        if first is not None
        else f"{len(then)} classes then, {len(names)} now"
    )
    return f"{where} changed since the run was made ({detail})"


def _digest_change(recorded: dict, sha256: str, path: str) -> str | None:
    before = str(recorded["sha256"])
    if before == sha256:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", before):  # a record written by hand: shown, not trusted
        before = repr(before[:20])
    return f"{path} changed since the run was made (SHA-256 {before[:12]}... then, {sha256[:12]}... now)"


def source_change(recorded: dict | None, reference: str) -> str | None:
    """What changed in the files of model ``reference`` since ``recorded`` was made; loads nothing.

    Compares the model file's SHA-256 (for ONNX, with its external data: :func:`read_model`)
    and the class names of its ``--labels`` file with the record, so that a resumed run
    refuses a changed (or planted) file before loading it, which is where such a file could
    act. ``None`` when nothing changed, and for records or references naming no file (older
    records without a SHA-256 are checked after loading, by :func:`model_change`).

    Args:
        recorded: a :func:`describe_model` record (a checkpoint's ``model_source``).
        reference: the model reference the run is about to load.

    Raises:
        ModelFileError: the model or labels file is missing or unreadable, or its external
            data is refused (see :func:`read_model`).
    """
    # An endpoint's URL may end like a file name (``/v2/models/net.onnx``): nothing to read here.
    if not isinstance(recorded, dict) or not is_model_file(reference) or is_endpoint(reference):
        return None
    path, options = split_reference(reference)
    if "sha256" in recorded:
        changed = _digest_change(recorded, read_model(path)[1], path)
        if changed:
            return changed
    if options.labels is not None:
        return _labels_change(recorded, read_labels(options.labels), f"--labels {options.labels}")
    return None


def model_change(recorded: dict | None, model: LoadedModel) -> str | None:
    """What changed in a model file, or its labels, since ``recorded`` was made, as a sentence.

    ``recorded`` is a :func:`describe_model` record. ``None`` when the record names no file, or
    its SHA-256 and class names still match.
    """
    if not isinstance(recorded, dict) or not isinstance(model.network, FileNetwork):
        return None
    reference = str(recorded.get("reference", model.spec.name))
    path, options = split_reference(reference)
    if "sha256" in recorded:
        changed = _digest_change(recorded, model.network.sha256, path)
        if changed:
            return changed
    where = f"--labels {options.labels}" if options.labels is not None else f"the class names of {path}"
    return _labels_change(recorded, model.spec.class_names, where)


def require_extensible(reference: str, command: str) -> None:
    """Raise unless model ``reference`` may take another output unit (``retrain``'s fooling class).

    Checked from the reference alone, before anything is loaded or asked for more input.

    Raises:
        ModelFileError: a model file: its graph is fixed.
        UserError: a model behind an endpoint: only its server can change it.
    """
    use = "use a timm:, torchvision: or plugin model"
    if is_endpoint(reference):
        raise UserError(
            f"{command} adds an output unit to the network, which a model behind an endpoint "
            f"({reference}) cannot take: {use}"
        )
    if is_model_file(reference):
        path = split_reference(reference)[0]
        kind = KIND_NAMES.get(FILE_SUFFIXES.get(Path(path).suffix.lower(), ""), "model")
        raise ModelFileError(
            f"{command} adds an output unit to the network, which {'an' if kind[0] in 'AEIOU' else 'a'} "
            f"{kind} file ({Path(path).name}) cannot take: {use}"
        )
