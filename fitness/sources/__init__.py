"""Models from outside the registry: ``timm:NAME``, ``torchvision:NAME``, model files, plugins.

What ``--model`` accepts besides the registry's names (see :func:`fooling.fitness.get_model_spec`):

* ``timm:NAME`` (``timm:resnet50.a1_in1k``): timm builds it; weights come from the local cache
  (Hugging Face hub cache or torch hub's ``checkpoints``), or are downloaded where the network
  allows (never with ``FOOLING_OFFLINE`` set). Input size, mean and std from timm's pretrained
  config; the 1,000 ImageNet names where the head has 1,000 outputs.
* ``torchvision:NAME[.WEIGHTS]`` (``torchvision:alexnet``): the classification weights enum's
  default (or named) weights, its crop size, mean, std and categories.
* a file, told apart by its suffix and checked by its contents:

  - ``PATH.pt`` / ``PATH.ts``: TorchScript (``torch.jit.save``);
  - ``PATH.pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``);
  - ``PATH.onnx``: scored with ONNX Runtime (no gradients: perturb and ascent refuse it).

  Options (the CLI's ``--labels``, ``--input-size``, ``--channels``, ``--mean``, ``--std``) travel
  inside the reference string as ``PATH?labels=FILE&input-size=H,W&channels=C&mean=M&std=S``, so
  that a run's stored ``model`` rebuilds the same classifier (:func:`file_reference`).
* an endpoint: ``http(s)://HOST[:PORT]/v2/models/NAME[/versions/V]``, a model behind an Open
  Inference Protocol (KServe v2) server, scored by sending it images (:mod:`.endpoint`; the
  client: :mod:`fooling.fitness.endpoint`).
* an installed plugin: a package declaring an entry point in the group ``fooling.models``
  whose object, called with no arguments, returns a :class:`ModelSpec`.

Loading never runs a Python pickle, nor text from the file:

* ``torch.jit.load`` reads the archive with TorchScript's own C++ deserializer; its ``data.pkl``
  and ``constants.pkl`` are read by TorchScript's restricted unpickler, which rebuilds tensors
  and TorchScript types only and never imports or calls Python objects.
* ``torch.export.load`` is *not* pickle-free on its own (checked in torch 2.14): weights stored
  with ``use_pickle`` and the sample inputs go through ``torch.load``, which falls back to
  ``weights_only=False`` when the safe load fails, and "opaque" constants go through
  ``pickle.loads``. So archives holding opaque objects are refused before loading, and
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` is set while loading, which makes every ``torch.load``
  call use the safe weights-only unpickler whatever its caller asked for.
* ``torch.export.load`` also hands text from the archive to evaluators (shape expressions to
  ``sympy.sympify``, guards to ``exec``, names into generated source, operator names looked
  up from ``torch``): every string of the archive's programs is checked against what torch
  writes in its field before torch reads anything (:func:`check_export_archive`).
* An ONNX file's external data is read here, from the model's own folder only, into a
  self-contained model (ONNX Runtime would resolve it against the current directory), and
  belongs to the model's SHA-256 (:func:`read_model`).
* timm and torchvision weights are read with the same variable set (safetensors need none).
* A plain ``torch.save`` file (a pickled state dict or module) is refused with a message
  saying how to save the model instead.

Model files reach Ray actors through the object store: a :class:`FileNetwork` pickles as the
model's bytes (an ONNX file's with its external data in them) and is rebuilt from them on the
other side, so nodes need no copy of the file.

The modules, one role each: :mod:`.reference` (the reference syntax), :mod:`.resolve` (which
resolver takes a reference), :mod:`.files` (model files and the classifier they make),
:mod:`.export_check` (torch.export archives checked before loading), :mod:`.onnx_data` (ONNX
external data), :mod:`.hub` (timm and torchvision), :mod:`.plugins` (the ``fooling.models``
entry points) and :mod:`.records` (what checkpoints record of a model). Every public name is
importable from this package.
"""

from __future__ import annotations

from fooling.fitness.sources.common import (
    GradientUnavailableError,
    ModelFileError,
    reason,
    weights_only_loads,
)
from fooling.fitness.sources.endpoint import EndpointNetwork, endpoint_spec
from fooling.fitness.sources.export_check import (
    MAX_EXPORT_JSON_BYTES,
    MAX_EXPRESSION_CHARS,
    check_export_archive,
)
from fooling.fitness.sources.files import (
    KIND_NAMES,
    SAVE_HINT,
    FileNetwork,
    file_spec,
    probabilities_graph,
    read_labels,
    read_model,
    read_model_file,
    sniff,
)
from fooling.fitness.sources.hub import (
    DOWNLOAD_TIMEOUT_S,
    TIMM_DEFAULT_CROP_PCT,
    timm_config,
    timm_spec,
    torchvision_spec,
)
from fooling.fitness.sources.onnx_data import (
    inline_external_data,
    onnx_external_data,
)
from fooling.fitness.sources.plugins import (
    PLUGIN_GROUP,
    plugin_entry_points,
    plugin_import_paths,
    plugin_name,
    plugin_spec,
)
from fooling.fitness.sources.records import (
    describe_model,
    differentiable,
    model_change,
    require_extensible,
    require_gradients,
    source_change,
)
from fooling.fitness.sources.reference import (
    FILE_SUFFIXES,
    PICKLE_SUFFIXES,
    PREFIXES,
    TIMM_PREFIX,
    TORCHVISION_PREFIX,
    FileOptions,
    file_reference,
    is_model_file,
    parse_channels,
    parse_floats,
    parse_input_size,
    parse_options,
    prefixed,
    split_reference,
    with_options,
)
from fooling.fitness.sources.resolve import (
    RESOLVERS,
    resolve_source,
    source_kind,
)

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "EndpointNetwork",
    "FILE_SUFFIXES",
    "FileNetwork",
    "FileOptions",
    "GradientUnavailableError",
    "KIND_NAMES",
    "MAX_EXPORT_JSON_BYTES",
    "MAX_EXPRESSION_CHARS",
    "ModelFileError",
    "PICKLE_SUFFIXES",
    "PLUGIN_GROUP",
    "PREFIXES",
    "RESOLVERS",
    "SAVE_HINT",
    "TIMM_DEFAULT_CROP_PCT",
    "TIMM_PREFIX",
    "TORCHVISION_PREFIX",
    "check_export_archive",
    "describe_model",
    "differentiable",
    "endpoint_spec",
    "file_reference",
    "file_spec",
    "inline_external_data",
    "is_model_file",
    "model_change",
    "onnx_external_data",
    "parse_channels",
    "parse_floats",
    "parse_input_size",
    "parse_options",
    "plugin_entry_points",
    "plugin_import_paths",
    "plugin_name",
    "plugin_spec",
    "prefixed",
    "probabilities_graph",
    "read_labels",
    "read_model",
    "read_model_file",
    "reason",
    "require_extensible",
    "require_gradients",
    "resolve_source",
    "sniff",
    "source_change",
    "source_kind",
    "split_reference",
    "timm_config",
    "timm_spec",
    "torchvision_spec",
    "weights_only_loads",
    "with_options",
]
