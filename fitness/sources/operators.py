"""Which operators a model file may call: tensor arithmetic, never the file system or the network.

A TorchScript or ``torch.export`` file is a program: besides the layers of a classifier, its
code may call ``aten::from_file`` (maps any file read-write, creating it), ``aten::save``
(writes any file), ``prim::rpc_async`` or ``aten::manual_seed``. So every operator of a model
file is checked, before the model runs, against what a classifier needs:

* ATen tensor operators: the Core ATen opset (``torch.Tag.core``), pointwise operators,
  operators PyTorch defines in terms of other operators (``CompositeImplicitAutograd``,
  ``CompositeExplicitAutograd``), operators with a meta kernel (their result's shape follows
  from their inputs' alone, as torch.compile's fake tensors need), and the in-place forms of
  these; never one that takes a file name or a storage;
* TorchScript's builtins on numbers, lists, strings and tensor metadata (:data:`SCRIPT_BUILTINS`),
  and its control flow (:data:`SCRIPT_PRIMITIVES`);
* a few higher-order operators ``torch.export`` writes for control flow.

Every other namespace (custom C++ operators, ``cuda::``, ``quantized::``) is refused.
"""

from __future__ import annotations

import ast
import functools
import io
import zipfile

import torch

from fooling.fitness.sources.common import ModelFileError

__all__ = [
    "SCRIPT_BUILTINS",
    "SCRIPT_PRIMITIVES",
    "EXPORT_HIGHER_ORDER",
    "open_model_archive",
    "check_script_sources",
    "check_script_module",
    "refused_operator",
]

# Dispatcher keys of operators PyTorch defines in terms of other operators, and of those with a
# meta kernel: one that computes the result's shape from the inputs' alone, as torch.compile's
# fake tensors do, which an operator whose result comes from a file cannot have.
_TENSOR_KEYS = (
    "CompositeImplicitAutograd",
    "CompositeExplicitAutograd",
    "CompositeExplicitAutogradNonFunctional",
    "Meta",
)
# Arguments that reach outside the tensors: a path to open, or raw memory to alias.
_REFUSED_ARGUMENTS = frozenset({"filename"})
_REFUSED_ARGUMENT_TYPES = ("Storage",)


# TorchScript builtins (operators the interpreter runs itself, outside the dispatcher) that
# compute on numbers, lists, dicts, strings and tensor metadata. Left out on purpose: aten::save,
# aten::manual_seed and aten::seed, autograd (backward, grad), futures and RPC (wait, to_here),
# device and stream switching, and prim::Print.
def _qualified(namespace: str, names: str) -> frozenset[str]:
    return frozenset(f"{namespace}::{name}" for name in names.split())


SCRIPT_BUILTINS = _qualified(
    "aten",
    """
    Bool Complex ComplexImplicit Float FloatImplicit Int IntImplicit ScalarImplicit Size
    __and__ __contains__ __derive_index __getitem__ __interpolate __is__ __isnot__ __lshift__
    __not__ __or__ __range_length __round_to_zero_floordiv __rshift__ __upsample
    __upsample_bilinear __upsample_nearest __xor__ _infer_size _size_if_not_equal _unwrap_optional
    _set_item _list_to_tensor _tensor_to_list _ncf_unsqueeze _ncf_view
    abs acos acosh add add_ all angle any append as_tensor asin asinh atan atan2 atanh
    broadcast_shapes ceil clear copy copysign cos cosh count degrees dict div divmod einsum
    element_size eq erf erfc exp expm1 extend fabs factorial floor floordiv fmod format frexp
    gamma gcd ge get get_autocast_dtype gt index insert is_autocast_cpu_enabled
    is_autocast_enabled is_grad_enabled is_non_overlapping_and_dense is_scripting
    is_strides_like_format isfinite isinf isnan items join keys ldexp le len lgamma list log
    log10 log1p lower lt mathremainder modf mul mul_ ne neg pop pow radians remainder remove
    reverse round select setdefault sin sinh size slice sort sorted split sqrt startswith endswith
    str stride strip lstrip rstrip sub sum sym_size sym_stride tan tanh tensor upper values warn
    """,
)
# TorchScript's structure: constants, the module's own attributes (read and set), control flow, containers,
# casts and tensor metadata. Calls that remain after inlining (interfaces), fork and
# with-blocks are refused: their code is not in the graph that is checked.
SCRIPT_PRIMITIVES = _qualified(
    "prim",
    """
    Constant GetAttr SetAttr If Loop ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex
    TupleSlice DictConstruct DictIndex RaiseException Uninitialized unchecked_cast
    unchecked_unwrap_optional NumToTensor device dtype layout requires_grad is_nested is_cuda
    is_cpu is_sparse is_sparse_csr is_quantized is_meta is_mkldnn is_xpu is_mps type
    data min max abs isinstance StringIndex rangelist tolist EnumName EnumValue itemsize nbytes
    """,
)
# Higher-order operators torch.export writes for control flow; their bodies are subgraphs of
# the same program, whose nodes are checked like any other.
EXPORT_HIGHER_ORDER = frozenset(
    {"cond", "while_loop", "map_impl", "scan", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)
# Most members one model file may hold, and the longest TorchScript source read.
_MAX_MEMBERS = 1_000_000
_MAX_SOURCE_BYTES = 64 * 2**20


def open_model_archive(data: bytes, shown: str, kind: str) -> zipfile.ZipFile:
    """The zip archive of a TorchScript or ``torch.export`` file, its member names checked.

    Python's ``zipfile`` keeps the last of two members of one name, torch's reader (miniz)
    may take the first, and miniz compares names without case: a checker that reads one copy
    and a loader that reads another would check one file and load a different one, so such
    archives are refused.

    Args:
        data: the file's bytes.
        shown: how messages name the file.
        kind: how messages name its format (``"TorchScript"``).

    Raises:
        ModelFileError: not a zip file, or two members whose names are equal ignoring case
            (one line).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ModelFileError(f"{shown}: damaged {kind} archive (not a zip file)") from None
    seen: set[str] = set()
    for count, name in enumerate(archive.namelist()):
        folded = name.casefold()
        if folded in seen or count > _MAX_MEMBERS:
            archive.close()
            raise ModelFileError(
                f"{shown}: damaged archive (two members named {name[:100]!r}, ignoring case); refused"
            )
        seen.add(folded)
    return archive


def check_script_sources(data: bytes, shown: str) -> None:
    """Refuse a TorchScript archive whose loading itself would run code of the file's.

    ``torch.jit.load`` calls every ``__setstate__`` the archive's classes define while it
    rebuilds their objects, before any graph can be checked. So the archive's sources
    (``code/**.py``) are read first and a class defining one is refused. The archive's member
    names are checked as :func:`open_model_archive` does.

    Raises:
        ModelFileError: damaged, or a class of the file defines ``__setstate__`` (one line).
    """
    with open_model_archive(data, shown, "TorchScript") as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if "code" not in parts[:2] or not info.filename.endswith(".py"):
                continue
            member = info.filename[:100]
            if info.file_size > _MAX_SOURCE_BYTES:
                raise ModelFileError(f"{shown}: {member} is {info.file_size} bytes, over the limit")
            try:
                tree = ast.parse(archive.read(info).decode("utf-8"))
            except (SyntaxError, ValueError, RecursionError, MemoryError, zipfile.BadZipFile, OSError):
                raise ModelFileError(f"{shown}: damaged TorchScript archive ({member})") from None
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name == "__setstate__":
                    raise ModelFileError(
                        f"{shown} defines __setstate__ ({member}), code that loading the "
                        "file would run; refused (script the model without custom state)"
                    )


@functools.lru_cache(maxsize=4096)
def refused_operator(namespace: str, name: str, overload: str) -> str | None:
    """Why the operator ``namespace::name.overload`` may not run in a model file, or ``None``.

    Args:
        namespace: ``"aten"``, ``"prim"``, ``"higher_order"`` or another.
        name: the operator's name (``"conv2d"``).
        overload: its overload (``"default"`` for the unnamed one).

    Returns:
        ``None`` for an operator a classifier may call (see the module's docstring), else a
        few words saying why not.
    """
    qualified = f"{namespace}::{name}"
    if namespace == "prim":
        return None if qualified in SCRIPT_PRIMITIVES else "a TorchScript primitive this loader does not run"
    if namespace == "higher_order":
        return None if name in EXPORT_HIGHER_ORDER else "a higher-order operator this loader does not run"
    if namespace != "aten":
        return f"an operator of the {namespace!r} namespace, not a standard tensor operator"
    try:
        operator = getattr(getattr(torch.ops.aten, name), overload)
    except (AttributeError, RuntimeError):
        return "not an operator of this PyTorch"
    if _is_builtin(operator):
        return None if qualified in SCRIPT_BUILTINS else "a TorchScript builtin this loader does not run"
    schema = operator._schema
    for argument in schema.arguments:
        if argument.name in _REFUSED_ARGUMENTS or any(
            kind in str(argument.type) for kind in _REFUSED_ARGUMENT_TYPES
        ):
            return f"it takes {argument.name!r} ({argument.type}), which reaches outside its tensors"
    if _computes_on_tensors(operator):
        return None
    if name.endswith("_"):  # the in-place form of a tensor operator
        functional = getattr(torch.ops.aten, name[:-1], None)
        if (
            functional is not None
            and overload in functional.overloads()
            and _computes_on_tensors(getattr(functional, overload))
        ):
            return None
    return "not a Core ATen, composite, pointwise or shape-traceable tensor operator"


def _is_builtin(operator) -> bool:
    """Whether ``operator`` is run by the TorchScript interpreter itself (no dispatcher entry)."""
    try:
        torch._C._dispatch_has_kernel_for_dispatch_key(operator.name(), "CPU")
    except RuntimeError:
        return True
    return False


def _computes_on_tensors(operator) -> bool:
    """Core ATen, pointwise, composite, or with a meta kernel (see :data:`_TENSOR_KEYS`)."""
    tags = operator.tags
    if torch.Tag.core in tags or torch.Tag.pointwise in tags:
        return True
    return any(torch._C._dispatch_has_kernel_for_dispatch_key(operator.name(), key) for key in _TENSOR_KEYS)


def _split_kind(kind: str, schema: str) -> tuple[str, str, str]:
    """``("aten", "add", "Tensor")`` from a node's kind ``aten::add`` and its schema text."""
    namespace, name = kind.split("::", 1)
    head = schema.split("(", 1)[0]
    overload = head.split(".", 1)[1] if head.startswith(kind + ".") else "default"
    return namespace, name, overload


def _check_graph(graph, shown: str, where: str) -> None:
    """Refuse any node of ``graph`` (its blocks and subgraphs too) calling a refused operator."""
    pending = [graph]
    while pending:
        block = pending.pop()
        for node in block.nodes():
            kind = node.kind()
            schema = node.schema() if kind.startswith("aten::") else ""
            if schema == "(no schema)":
                why = "an operator call this PyTorch cannot resolve"
            else:
                why = refused_operator(*_split_kind(kind, schema))
            if why is not None:
                raise ModelFileError(
                    f"{shown} calls {kind} in {where} ({why}); refused: a model file may only compute "
                    "on tensors"
                )
            pending.extend(node.blocks())
            pending.extend(node.g(name) for name in node.attributeNames() if node.kindOf(name) == "g")


def check_script_module(module: torch.jit.ScriptModule, shown: str) -> None:
    """Refuse a loaded TorchScript module if any code it holds calls a refused operator.

    Every method and hook of the module and of every submodule is checked, inlined, whether
    or not scoring calls it, so no path through the file's code is left unchecked.

    Raises:
        ModelFileError: naming the first refused operator and the method calling it (one line).
    """
    for path, submodule in module.named_modules():
        script = submodule._c
        functions = [(name, script._get_method(name).graph) for name in script._method_names()]
        hooks = script._get_forward_pre_hooks() + script._get_forward_hooks()
        functions += [(hook.name, hook.graph) for hook in hooks]
        for name, graph in functions:
            inlined = graph.copy()
            torch._C._jit_pass_inline(inlined)
            _check_graph(inlined, shown, f"{path + '.' if path else ''}{name}")
