"""Model files made to attack the loader: crafted ``.pt2`` programs, ONNX external data, planted runs.

Every crafted file is built here: a real model saved with ``torch.export`` or ``torch.onnx``,
then edited. A payload that ran would create a marker file; none may.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from small_setups import LABELS
from small_setups import seeded as tiny
from torch import nn

import fooling.fitness.sources as sources
from fooling.evo.cli import main
from fooling.fitness import Scorer, load_model
from fooling.fitness.sources import FileNetwork, ModelFileError, check_export_archive

SIZE = 16
FOOLING = Path(sys.executable).parent / "fooling"


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """A fresh FOOLING_HOME (the ONNX cache) for each test."""
    monkeypatch.setenv("FOOLING_HOME", str(tmp_path / "home"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def evolve_args(model: Path | str, out: Path, *extra: str) -> list[str]:
    return ["evolve", "--model", str(model), "--generations", "2", "--population", "8", "--out", str(out),
            "--no-progress", "--no-report", *extra]  # fmt: skip


def assert_one_line_exit_2(code: int, stderr: str) -> str:
    assert code == 2, stderr[-3000:]
    assert stderr.count("\n") == 1 and stderr.startswith("fooling: error: "), stderr[-3000:]
    assert "Traceback" not in stderr
    return stderr


# --- crafted torch.export archives -------------------------------------------------------------


def save_export(path: Path, seed: int = 0) -> Path:
    """A real ExportedProgram with a dynamic batch dimension (so its sizes are expressions)."""
    program = torch.export.export(
        tiny(seed), (torch.zeros(2, 3, SIZE, SIZE),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    return path


def rewrite(
    source: Path, target: Path, edit: Callable[[dict], None], member: str = "models/model.json"
) -> Path:
    """Copy archive ``source`` to ``target`` with ``edit`` applied to the JSON of ``member``."""
    with zipfile.ZipFile(source) as clean, zipfile.ZipFile(target, "w") as crafted:
        for item in clean.infolist():
            data = clean.read(item.filename)
            if item.filename.split("/", 1)[1] == member:
                document = json.loads(data)
                edit(document)
                data = json.dumps(document).encode()
            crafted.writestr(item, data)
    return target


def payload(marker: Path, symbol: str = "s77") -> str:
    """The expression of issue 28: sympify would run ``os.system`` and return a plain symbol."""
    return f"(__import__('os').system('touch {marker}'), Symbol('{symbol}', positive=True, integer=True))[1]"


def expression(text: str) -> dict:
    return {"as_expr": {"expr_str": text, "hint": {"as_int": 2}}}


def graph(document: dict) -> dict:
    return document["graph_module"]["graph"]


def input_meta(document: dict) -> dict:
    """The tensor metadata of the program's one user input (the batch of images)."""
    spec = next(s for s in document["graph_module"]["signature"]["input_specs"] if "user_input" in s)
    return graph(document)["tensor_values"][spec["user_input"]["arg"]["as_tensor"]["name"]]


def output_meta(document: dict) -> dict:
    return graph(document)["tensor_values"][graph(document)["outputs"][0]["as_tensor"]["name"]]


def symbol(document: dict) -> str:
    """The name of the batch dimension's symbol (``s77``, ``s34``: torch numbers them as it likes)."""
    return next(iter(document["range_constraints"]))


# Every place of the program where torch reads an expression (or code), with the edit putting
# the text there. The first five are SymInts the deserializer parses with sympy.sympify.
PLACES: dict[str, Callable[[dict, str], None]] = {
    "input size": lambda d, text: input_meta(d)["sizes"].__setitem__(0, expression(text)),
    "output size": lambda d, text: output_meta(d)["sizes"].__setitem__(0, expression(text)),
    "stride": lambda d, text: input_meta(d)["strides"].__setitem__(3, expression(text)),
    "storage offset": lambda d, text: input_meta(d).update(storage_offset=expression(text)),
    "symbolic int value": lambda d, text: graph(d)["sym_int_values"].update(extra=expression(text)),
    # guards_code: exec'd as Python when the program's module is made.
    "guard": lambda d, text: d.update(guards_code=[f"{text} == 1"]),
    # A range constraint's symbol name is matched against parsed expressions.
    "range constraint": lambda d, text: d["range_constraints"].update(
        {text: {"min_val": 0, "max_val": None}}
    ),
}


@pytest.fixture
def exported(tmp_path) -> Path:
    return save_export(tmp_path / "clean.pt2")


def test_the_payload_would_run_if_torch_read_the_archive_unchecked(exported, tmp_path):
    # What makes the checks below necessary: torch.export.load itself runs the payload.
    marker = tmp_path / "MARKER"
    crafted = rewrite(
        exported, tmp_path / "crafted.pt2", lambda d: PLACES["input size"](d, payload(marker, symbol(d)))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.load(str(crafted))
    assert marker.exists()


@pytest.mark.parametrize("place", list(PLACES))
def test_a_payload_in_any_expression_is_refused_before_loading(exported, tmp_path, place):
    marker = tmp_path / "MARKER"
    crafted = rewrite(
        exported, tmp_path / "crafted.pt2", lambda d: PLACES[place](d, payload(marker, symbol(d)))
    )
    with pytest.raises(ModelFileError) as refused:
        check_export_archive(crafted.read_bytes(), "crafted.pt2")
    assert "\n" not in str(refused.value) and "refused" in str(refused.value)
    with pytest.raises(ModelFileError):
        FileNetwork("export", crafted.read_bytes(), "crafted.pt2")
    assert not marker.exists()


# Expressions of every kind an evaluator would act on, and some it would choke on.
VARIANTS = {
    "import": "__import__('os')",
    "attribute": "Symbol('s77', positive=True, integer=True).__class__",
    "dunder on a name": "s77.__class__.__base__",
    "lambda": "(lambda: Symbol('s77'))()",
    "string literal": "'s77'",
    "string with code": "Symbol('s77; import os')",
    "call of a builtin": "eval('s77')",
    "call of an unknown function": "exec(s77)",
    "keyword argument": "Symbol('s77', positive=True, evaluate=__import__('os'))",
    "conditional": "s77 if s77 else s77",
    "subscript": "Add(s77, s77)[0]",
    "unknown name": "open",
    "non-ASCII digit": "s\u0667",
    "newline": "s77\n+ 1",
    "huge exponent": "Pow(Integer(10), Integer(1000000000000000000))",
    "huge shift": "LShift(Integer(1), Integer(100000))",
    "huge literal": "s77 + " + "9" * 40,
    "very long": " + ".join(["s77"] * 2000),
    "deeply nested": "(" * 200 + "s77" + ")" * 200,
    "empty": "",
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_expression_variants_are_refused(exported, tmp_path, variant):
    crafted = rewrite(
        exported, tmp_path / "crafted.pt2", lambda d: PLACES["input size"](d, VARIANTS[variant])
    )
    with pytest.raises(ModelFileError, match="expr_str"):
        check_export_archive(crafted.read_bytes(), "crafted.pt2")


class Shapes(nn.Module):
    """Symbolic-size arithmetic of every kind torch writes: sums, floor division, modulo, max, division."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = x * 2
        if x.shape[0] > 4:  # a guard
            z = z + 1
        return (
            z.sum(0) + torch.cat([x, y]).mean(0) + x.shape[0] % 3 + x.shape[0] / 3 + max(x.shape[0], 7)
            + x.shape[0] // 3
        )  # fmt: skip


def test_what_torch_writes_passes_the_checks(tmp_path):
    program = torch.export.export(
        Shapes(), (torch.zeros(8, 3), torch.zeros(6, 3)), dynamic_shapes=({0: torch.export.Dim.AUTO},) * 2
    )
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    document = json.loads(zipfile.ZipFile(buffer).read(
        next(n for n in zipfile.ZipFile(buffer).namelist() if n.endswith("models/model.json"))
    ))  # fmt: skip
    written = json.dumps(document)
    for function in ("FloorDiv(", "Mod(", "Max(", "IntTrueDiv(", "Add("):  # the check saw each of them
        assert function in written
    assert document["guards_code"] and all("L['x'].size()[0]" in guard for guard in document["guards_code"])
    check_export_archive(buffer.getvalue(), "shapes.pt2")
    torch.export.load(io.BytesIO(buffer.getvalue())).module()(torch.zeros(7, 3), torch.zeros(5, 3))


def test_a_legitimate_dynamic_batch_archive_loads_and_scores(exported):
    model = load_model(f"{exported}?input-size={SIZE},{SIZE}")
    assert model.network.input_shape[0] is None  # the batch really is symbolic
    images = torch.rand(5, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(tiny()(images), 1).numpy()
    # Probabilities in [0, 1] from float32 networks of a few layers: they agree far below 1e-5.
    np.testing.assert_allclose(Scorer(model, engine="torch", device="cpu").score(images), expected, atol=1e-5)


def _target(document: dict, target: str, argument: dict) -> None:
    node = graph(document)["nodes"][-1]
    node["target"], node["inputs"] = target, [{"name": "command", "arg": argument, "kind": 1}]


def signature(document: dict) -> dict:
    return document["graph_module"]["module_call_graph"][0]["signature"]


def parameter(document: dict) -> dict:
    return document["graph_module"]["signature"]["input_specs"][0]["parameter"]


# Strings other than expressions that torch pastes into generated source, imports or calls by name.
DEFAULTDICT = json.dumps([1, {"type": "collections.defaultdict", "context": "null", "children_spec": []}])
OTHER_HOLES: dict[str, tuple[Callable[[dict, str], None], str]] = {
    # Looked up from the torch module by attribute: torch.os.system resolves.
    "node target": (lambda d, m: _target(d, "torch.os.system", {"as_string": f"touch {m}"}), "target"),
    # Pasted into the generated forward's signature.
    "input name": (
        lambda d, m: signature(d).update(forward_arg_names=[f"x=__import__('os').system('touch {m}')"]),
        "forward_arg_names",
    ),
    # Pasted into the module's generated source (a quote breaks out of it).
    "parameter name": (
        lambda d, m: parameter(d).update(parameter_name=f"a\")or __import__('os').system('touch {m}')#"),
        "parameter_name",
    ),
    # A defaultdict's context names a module to import.
    "input structure": (lambda d, m: signature(d).update(in_spec=DEFAULTDICT), "in_spec"),
    # Kept as text; FX may print it into a comment of generated source, which a carriage return ends.
    "stack trace": (
        lambda d, m: graph(d)["nodes"][0]["metadata"].update(
            stack_trace=f"File \"a.py\", line 1, in f\n    x\r__import__('os').system('touch {m}')"
        ),
        "metadata",
    ),
    # torch pastes constant strings between quotes into its guard code: no quotes inside.
    "string argument": (
        lambda d, m: _target(d, "torch.ops.aten.mul.Tensor", {"as_string": f"'+str(1)+'{m}"}),
        "as_string",
    ),
}


@pytest.mark.parametrize("hole", list(OTHER_HOLES))
def test_names_targets_and_structures_are_checked_too(exported, tmp_path, hole):
    marker = tmp_path / "MARKER"
    edit, field = OTHER_HOLES[hole]
    crafted = rewrite(exported, tmp_path / "crafted.pt2", lambda d: edit(d, str(marker)))
    with pytest.raises(ModelFileError, match=repr(field)):
        check_export_archive(crafted.read_bytes(), "crafted.pt2")
    assert not marker.exists()


def test_archive_members_torch_would_run_or_unpickle_are_refused(exported, tmp_path):
    def with_member(name: str, data: bytes) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(exported) as clean, zipfile.ZipFile(buffer, "w") as crafted:
            for item in clean.infolist():
                crafted.writestr(item, clean.read(item.filename))
            crafted.writestr(f"clean/{name}", data)
        return buffer.getvalue()

    with pytest.raises(ModelFileError, match="compiled code"):
        check_export_archive(with_member("data/aotinductor/model/model.so", b"\x7fELF"), "a.pt2")
    with pytest.raises(ModelFileError, match="does not accept"):
        check_export_archive(with_member("serialized_exported_program.json", b"{}"), "a.pt2")
    opaque = rewrite(exported, tmp_path / "opaque.pt2", lambda d: d["config"].__setitem__(
        "evil", {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}),
        member="data/constants/model_constants_config.json")  # fmt: skip
    with pytest.raises(ModelFileError, match="pickled Python objects"):
        check_export_archive(opaque.read_bytes(), "opaque.pt2")


def test_the_cli_refuses_a_crafted_archive_in_one_line(exported, tmp_path):
    marker = tmp_path / "MARKER"
    crafted = rewrite(exported, tmp_path / "crafted.pt2", lambda d: PLACES["input size"](d, payload(marker)))
    result = subprocess.run(
        [str(FOOLING), *evolve_args(crafted, tmp_path / "run")], capture_output=True, text=True, timeout=300
    )
    assert_one_line_exit_2(result.returncode, result.stderr)
    assert "expr_str" in result.stderr and not marker.exists() and not (tmp_path / "run").exists()


def test_a_damaged_archive_is_one_line_without_torchs_logged_traceback(exported, tmp_path):
    # Valid JSON that is not a program: torch logs a whole traceback before raising.
    damaged = rewrite(exported, tmp_path / "damaged.pt2", lambda d: d["graph_module"].pop("signature"))
    result = subprocess.run(
        [str(FOOLING), *evolve_args(damaged, tmp_path / "run")], capture_output=True, text=True, timeout=300
    )
    assert_one_line_exit_2(result.returncode, result.stderr)
    assert "cannot read the torch.export archive" in result.stderr and "signature" in result.stderr


# --- resuming: the run folder's model record is checked before anything loads ---------------------


def test_resume_refuses_a_crafted_file_planted_under_the_runs_model_before_loading(
    exported, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    assert run_cli(capsys, *evolve_args(exported, out))[0] == 0
    marker = tmp_path / "MARKER"
    crafted = rewrite(exported, tmp_path / "crafted.pt2", lambda d: PLACES["input size"](d, payload(marker)))
    crafted.replace(exported)  # the run's stored reference now names the crafted archive
    loads: list[object] = []
    monkeypatch.setattr(sources.files, "check_export_archive", lambda data, shown: loads.append(shown))
    code, _, stderr = run_cli(capsys, "evolve", "--resume", str(out), "--generations", "4", "--no-progress")
    assert_one_line_exit_2(code, stderr)
    assert "changed since the run was made" in stderr and str(exported) in stderr
    assert loads == [] and not marker.exists()  # refused before the file was even looked into


def test_resume_refuses_labels_edited_since_the_run(tmp_path, capsys):
    path = save_export(tmp_path / "net.pt2")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    out = tmp_path / "run"
    assert run_cli(capsys, *evolve_args(path, out, "--labels", str(labels)))[0] == 0
    labels.write_text("\n".join(LABELS).replace("owl", "eagle") + "\n")  # same file, same weights
    code, _, stderr = run_cli(capsys, "evolve", "--resume", str(out), "--generations", "4", "--no-progress")
    assert_one_line_exit_2(code, stderr)
    assert f"--labels {labels} changed since the run was made (class 2 was 'owl', is 'eagle')" in stderr
    labels.write_text("\n".join(LABELS) + "\n")  # put back: the run goes on
    code, stdout, _ = run_cli(capsys, "evolve", "--resume", str(out), "--generations", "3", "--no-progress",
                              "--no-report")  # fmt: skip
    assert code == 0 and "generation 2" in stdout


# --- ONNX external data: read from the model's own folder only, part of its SHA-256 ------------------


def save_external_onnx(folder: Path, seed: int = 0, location: str = "weights.bin") -> Path:
    """An ONNX model whose initializers lie in ``folder / location`` (as torch.onnx writes large models)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny(seed), (torch.zeros(1, 3, SIZE, SIZE),), buffer, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})  # fmt: skip
    model = onnx.load_model_from_string(buffer.getvalue())
    path = folder / "net.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)  # fmt: skip
    assert (folder / location).stat().st_size > 0
    return path


def relocate(path: Path, location: str, **fields: str) -> Path:
    """Point every external tensor of ``path`` at ``location`` (and ``fields``), in place."""
    model = onnx.load_model(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
            elif entry.key in fields:
                entry.value = fields[entry.key]
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_is_read_from_the_models_folder_from_any_directory(tmp_path, monkeypatch):
    path = save_external_onnx(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = load_model(f"{path}?input-size={SIZE},{SIZE}")
    images = torch.rand(4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(tiny()(images), 1).numpy()
    for engine in ("onnxruntime", "torch"):  # the file's own session, and the wrapped graph
        np.testing.assert_allclose(
            Scorer(model, engine=engine, device="cpu").score(images), expected, atol=1e-5
        )
    # What travels to Ray actors is self-contained: it loads with the external file gone.
    (tmp_path / "model" / "weights.bin").unlink()
    copy = pickle.loads(pickle.dumps(model))
    assert copy.weights_hash == model.weights_hash
    np.testing.assert_allclose(Scorer(copy, engine="torch", device="cpu").score(images), expected, atol=1e-5)


def test_the_cli_scores_a_model_with_external_data_from_another_directory(tmp_path):
    path = save_external_onnx(tmp_path / "model")
    (tmp_path / "elsewhere").mkdir()
    result = subprocess.run(
        [str(FOOLING), *evolve_args(path, tmp_path / "run", "--input-size", f"{SIZE},{SIZE}")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path / "elsewhere",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def function_default(path: Path, location: str) -> Path:
    """A model at ``path`` adding a tensor kept at ``location`` that only a function's default names.

    The tensor is the default value of a local function's attribute (``FunctionProto.attribute_proto``),
    which a ``Constant`` inside the function takes by reference.
    """
    classes = len(LABELS)
    tensor = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[classes])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * classes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    constant = onnx.helper.make_node("Constant", [], ["c"])
    constant.attribute.append(
        onnx.AttributeProto(name="value", ref_attr_name="value", type=onnx.AttributeProto.TENSOR)
    )
    function = onnx.helper.make_function(
        "local", "Bias", ["x"], ["y"], [constant, onnx.helper.make_node("Add", ["x", "c"], ["y"])],
        [onnx.helper.make_opsetid("", 17)],
    )  # fmt: skip
    function.attribute_proto.append(onnx.helper.make_attribute("value", tensor))
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Flatten", ["x"], ["flat"]),
         onnx.helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
         onnx.helper.make_node("Expand", ["mean", "shape"], ["wide"]),
         onnx.helper.make_node("Bias", ["wide"], ["logits"], domain="local")],
        "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", classes])],
        [onnx.numpy_helper.from_array(np.array([1, classes], np.int64), "shape")],
    )  # fmt: skip
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("local", 1)],
        functions=[function], ir_version=9,
    )  # fmt: skip
    path.write_bytes(model.SerializeToString())
    return path


def _hostile(tmp_path: Path, case: str) -> Path:
    """A model in ``tmp_path / 'model'`` whose external data points where ``case`` says."""
    path = save_external_onnx(tmp_path / "model")
    secret = tmp_path / "secret.bin"
    secret.write_bytes((tmp_path / "model" / "weights.bin").read_bytes())  # would even load as weights
    if case in ("cwd-relative", "function default"):  # `cd / && fooling evolve` read /etc/passwd
        (tmp_path / "cwd" / "etc").mkdir(parents=True)
        (tmp_path / "cwd" / "etc" / "passwd").write_bytes(secret.read_bytes())
        if case == "cwd-relative":
            return relocate(path, "etc/passwd")
        return function_default(path, "etc/passwd")
    if case == "parent":
        return relocate(path, "../secret.bin")
    if case == "absolute":
        return relocate(path, str(secret))
    if case == "symlink":
        (tmp_path / "model" / "link.bin").symlink_to(secret)
        return relocate(path, "link.bin")
    if case == "symlinked folder":
        (tmp_path / "model" / "inner").symlink_to(tmp_path, target_is_directory=True)
        return relocate(path, "inner/secret.bin")
    if case == "beyond the end":
        return relocate(path, "weights.bin", offset="10", length=str(secret.stat().st_size))
    raise AssertionError(case)


HOSTILE = {
    "cwd-relative": "does not exist in",
    "function default": "does not exist in",
    "parent": "'..' leads out of the model's folder",
    "absolute": "an absolute path",
    "symlink": "leads outside the model's folder",
    "symlinked folder": "leads outside the model's folder",
    "beyond the end": "outside the file's",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_external_data_outside_the_models_folder_is_refused_in_one_line(tmp_path, capsys, monkeypatch, case):
    path = _hostile(tmp_path, case)
    (tmp_path / "cwd").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "cwd")
    code, _, stderr = run_cli(capsys, *evolve_args(path, tmp_path / "run", "--input-size", f"{SIZE},{SIZE}"))
    assert_one_line_exit_2(code, stderr)
    assert HOSTILE[case] in stderr and "net.onnx" in stderr
    assert not (tmp_path / "run").exists()


def test_a_model_naming_external_data_is_refused_without_its_path():
    # Bytes alone (no folder to read from): ONNX Runtime would look in the current directory.
    model = onnx.ModelProto()
    tensor = model.graph.initializer.add()
    tensor.name, tensor.data_type, tensor.data_location = (
        "w",
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.EXTERNAL,
    )
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "secret.bin"
    with pytest.raises(ModelFileError, match="keeps tensors in external files"):
        FileNetwork("onnx", model.SerializeToString(), "bytes.onnx")


def test_changed_external_data_changes_the_hash_and_resume_refuses_it(tmp_path, capsys):
    path = save_external_onnx(tmp_path / "model")
    before = load_model(f"{path}?input-size={SIZE},{SIZE}")
    out = tmp_path / "run"
    assert run_cli(capsys, *evolve_args(path, out, "--input-size", f"{SIZE},{SIZE}"))[0] == 0
    other = save_external_onnx(tmp_path / "other", seed=1)  # other weights, the same graph file
    (tmp_path / "model" / "weights.bin").write_bytes((other.parent / "weights.bin").read_bytes())
    after = load_model(f"{path}?input-size={SIZE},{SIZE}")
    assert after.network.sha256 != before.network.sha256 and after.weights_hash != before.weights_hash
    code, _, stderr = run_cli(capsys, "evolve", "--resume", str(out), "--generations", "4", "--no-progress")
    assert_one_line_exit_2(code, stderr)
    assert "changed since the run was made" in stderr and str(path) in stderr


def test_a_model_without_external_data_keeps_the_files_own_sha256(tmp_path):
    folder = tmp_path / "model"
    path = save_external_onnx(folder)
    inlined = onnx.load_model(str(path))  # external data read in by onnx itself
    single = tmp_path / "single.onnx"
    onnx.save_model(inlined, str(single))
    assert sources.read_model(str(single)) == (
        single.read_bytes(),
        hashlib.sha256(single.read_bytes()).hexdigest(),
    )
    with pytest.raises(ModelFileError, match="missing.bin"):
        sources.read_model(str(relocate(path, "missing.bin")))
