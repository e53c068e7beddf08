"""``--model`` beyond the registry: TorchScript, torch.export and ONNX files, plugins, timm:, torchvision:.

Every network here is tiny, built and saved inside the test.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import socket
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from plugin_packages import installed_package
from small_setups import LABELS, ConvNet
from small_setups import seeded as tiny
from torch import nn

import fooling.fitness.sources as sources
from fooling.evo.cli import main
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import checkpoint_uris, read_latest_checkpoint
from fooling.fitness import LoadedModel, Scorer, get_model_spec, load_model
from fooling.fitness.images import load_images, load_model_images, real_photo_confidence, to_model_input
from fooling.fitness.sources import FileNetwork, probabilities_graph

SIZE = 16


class DenseNet(nn.Module):
    """``(batch, 3, 16, 16)`` only -> ``(batch, 5)``: rejects any other input size."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * SIZE * SIZE, len(LABELS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images.flatten(1))


def save_torchscript(path: Path, seed: int = 0, kind: type[nn.Module] = ConvNet) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny(seed, kind)), str(path))
    return path


def save_export(path: Path, seed: int = 0) -> Path:
    example = torch.zeros(2, 3, SIZE, SIZE)
    program = torch.export.export(tiny(seed), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def save_onnx(path: Path, seed: int = 0) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny(seed), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})  # fmt: skip
    return path


SAVERS = {"pt": save_torchscript, "pt2": save_export, "onnx": save_onnx}


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """A fresh FOOLING_HOME (the ONNX cache) for each test, unless a session one is set up."""
    if "FOOLING_HOME" not in os.environ:
        monkeypatch.setenv("FOOLING_HOME", str(tmp_path / "home"))


@pytest.fixture
def labels(tmp_path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def model_file(tmp_path: Path, kind: str, seed: int = 0) -> Path:
    return SAVERS[kind](tmp_path / f"net{seed}.{kind}", seed)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def evolve_args(model: Path | str, out: Path, *extra: str) -> list[str]:
    return ["evolve", "--model", str(model), "--generations", "3", "--population", "24", "--out", str(out),
            "--no-progress", "--no-report", *extra]  # fmt: skip


# --- loading: every format scores like the network it was saved from ----------------------------


@pytest.mark.parametrize("kind", ["pt", "pt2", "onnx"])
@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_each_file_format_scores_like_the_network_it_came_from(tmp_path, kind, engine):
    reference = f"{model_file(tmp_path, kind)}?input-size={SIZE},{SIZE}"
    model = load_model(reference)
    assert model.spec.input_size == (SIZE, SIZE) and model.spec.channels == 3
    assert model.spec.class_names == ("0", "1", "2", "3", "4")  # no --labels: indices
    images = torch.rand(7, 3, SIZE, SIZE)
    scorer = Scorer(model, engine=engine, device="cpu")
    with torch.no_grad():
        expected = torch.softmax(tiny()(images), 1).numpy()
    np.testing.assert_allclose(scorer.score(images), expected, atol=1e-5)
    assert scorer.engine == engine  # the ONNX Runtime engine really ran (no fallback to torch)


def test_an_exported_nn_sequential_whose_weights_are_numbered_loads_and_scores(tmp_path):
    # nn.Sequential names its weights "0.weight", "3.bias": names, though not identifiers.
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)).eval()
    example = torch.zeros(2, 3, SIZE, SIZE)
    program = torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "sequential.pt2"))
    model = load_model(str(tmp_path / "sequential.pt2"))
    images = torch.rand(6, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(network(images), 1).numpy()
    np.testing.assert_allclose(Scorer(model, engine="torch", device="cpu").score(images), expected, atol=1e-5)


def test_onnx_wrapping_keeps_a_user_input_named_images(tmp_path):
    path = tmp_path / "named.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                          input_names=["images"], output_names=["probabilities"],
                          dynamic_axes={"images": {0: "n"}})  # fmt: skip
    import onnxruntime as ort  # optional heavy dependency: only ONNX files

    graph = probabilities_graph(path.read_bytes(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    images = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(tiny()((images - 0.5) / 0.25), 1).numpy()
    np.testing.assert_allclose(session.run(None, {"images": images.numpy()})[0], expected, atol=1e-5)


def test_a_file_model_pickles_as_its_bytes(tmp_path):
    model = load_model(str(model_file(tmp_path, "pt2")))
    (tmp_path / "net0.pt2").unlink()  # the copy is rebuilt from the bytes, not from the path
    copy = pickle.loads(pickle.dumps(model))
    assert isinstance(copy.network, FileNetwork) and copy.weights_hash == model.weights_hash
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(copy.network(images), model.network(images))


def test_file_bytes_are_checked_on_arrival(tmp_path):
    model = load_model(str(model_file(tmp_path, "pt")) + f"?input-size={SIZE},{SIZE}")
    shipped = pickle.dumps(model)
    data = (tmp_path / "net0.pt").read_bytes()
    start = shipped.index(data)
    middle = start + len(data) // 2
    damaged = shipped[:middle] + bytes([shipped[middle] ^ 1]) + shipped[middle + 1 :]
    with pytest.raises(sources.ModelFileError, match="arrived damaged"):
        pickle.loads(damaged)


class BatchOfOne(nn.Module):
    """Takes exactly one image at a time, like a network traced or exported with batch 1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] != 1:
            raise ValueError("one image at a time")
        return self.net(images)


def test_a_torchscript_file_of_batch_one_stays_so_when_shipped(tmp_path):
    path = tmp_path / "one.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(BatchOfOne()), str(path))
    model = load_model(f"{path}?input-size={SIZE},{SIZE}")
    assert model.network.fixed_batch == 1  # found by probing: TorchScript records no input shape
    copy = pickle.loads(pickle.dumps(model))
    assert copy.network.fixed_batch == 1
    images = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(copy.network(images), tiny()(images))


def test_a_fixed_batch_file_is_run_in_chunks(tmp_path):
    path = tmp_path / "one.pt2"
    torch.export.save(torch.export.export(tiny(), (torch.zeros(1, 3, SIZE, SIZE),)), str(path))
    model = load_model(str(path))
    assert model.network.fixed_batch == 1
    images = torch.rand(5, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(tiny()(images), 1).numpy()
    np.testing.assert_allclose(Scorer(model, device="cpu").score(images), expected, atol=1e-5)


# --- the commands, in-process ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pt", "pt2", "onnx"])
def test_evolve_a_model_file_records_how_to_rebuild_it(tmp_path, capsys, labels, kind):
    path = model_file(tmp_path, kind)
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, *evolve_args(path, out, "--labels", str(labels),
                                                   "--input-size", f"{SIZE},{SIZE}"))  # fmt: skip
    assert code == 0 and "generation 2" in stdout
    checkpoint = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert list(checkpoint.archive.class_names) == list(LABELS)
    source = checkpoint.model_source
    assert source["kind"] == "file" and source["labels"] == list(LABELS)
    assert source["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert source["input_size"] == [SIZE, SIZE] and source["mean"] == [0.0] * 3 and source["std"] == [1.0] * 3
    assert source["differentiable"] == (kind != "onnx")
    assert source["reference"] == checkpoint.config.model
    assert checkpoint.config.model.startswith(str(path.absolute()) + "?labels=")
    # The table is readable as it is, with the run's model record in its metadata.
    metadata = json.loads(pq.read_schema(checkpoint_uris(str(out))[0]).metadata[b"fooling"])
    assert metadata["model_source"]["weights_hash"] == checkpoint.weights_hash


def test_resume_continues_the_same_file_and_refuses_a_changed_one(tmp_path, capsys, labels):
    path = model_file(tmp_path, "pt")
    out = tmp_path / "run"
    args = evolve_args(path, out, "--labels", str(labels), "--input-size", f"{SIZE},{SIZE}")
    assert run_cli(capsys, *args)[0] == 0
    code, stdout, _ = run_cli(capsys, "evolve", "--resume", str(out), "--generations", "5", "--no-progress",
                              "--no-report")  # fmt: skip
    assert code == 0 and "generation 4" in stdout
    save_torchscript(path, seed=1)  # other weights under the same name
    code, _, stderr = run_cli(capsys, "evolve", "--resume", str(out), "--generations", "7", "--no-progress")
    assert code == 2 and stderr.count("\n") == 1
    assert "changed since the run was made" in stderr and str(path.absolute()) in stderr


def test_ascent_and_perturb_on_differentiable_files(tmp_path, capsys, labels):
    script = model_file(tmp_path, "pt")
    exported = model_file(tmp_path, "pt2")
    code, stdout, _ = run_cli(capsys, "ascent", "--model", str(exported), "--labels", str(labels),
                              "--steps", "20", "--lr", "0.5", "--out", str(tmp_path / "ascent"))  # fmt: skip
    assert code == 0 and "median confidence" in stdout
    ascended = read_latest_checkpoint(str(tmp_path / "ascent"), GENOME_CLASSES)
    assert list(ascended.archive.class_names) == list(LABELS)
    with torch.no_grad():
        noise = torch.softmax(tiny()(torch.rand(64, 3, SIZE, SIZE)), 1).max(0).values.numpy()
    assert (ascended.archive.fitness > noise).all()  # gradients flowed: above any noise image's confidence
    code, stdout, _ = run_cli(capsys, "perturb", "--model", str(script), "--input-size", f"{SIZE},{SIZE}",
                              "--labels", str(labels), "--image", "chelsea", "--untargeted", "--steps", "30",
                              "--eps", "0.3", "--no-progress",
                              "--out", str(tmp_path / "perturb"))  # fmt: skip
    assert code in (0, 1) and "chelsea:" in stdout
    assert (tmp_path / "perturb" / "final.png").exists()


@pytest.mark.parametrize("command", ["ascent", "perturb"])
def test_gradient_commands_refuse_onnx_in_one_line(tmp_path, capsys, command):
    path = model_file(tmp_path, "onnx")
    extra = ["--image", "chelsea", "--untargeted"] if command == "perturb" else []
    code, _, stderr = run_cli(capsys, command, "--model", str(path), *extra, "--out", str(tmp_path / "out"))
    assert code == 2 and stderr.count("\n") == 1
    assert "ONNX Runtime" in stderr and "gradients" in stderr
    assert not (tmp_path / "out").exists()


def test_transfer_between_a_torchscript_and_an_onnx_model(tmp_path, capsys, labels):
    source = model_file(tmp_path, "pt", seed=0)
    target = model_file(tmp_path, "onnx", seed=0)  # the same weights: the labels must agree
    out = tmp_path / "run"
    assert run_cli(capsys, *evolve_args(source, out, "--labels", str(labels), "--input-size", "16"))[0] == 0
    code, stdout, _ = run_cli(capsys, "transfer", str(out), "--to", str(target), "--labels", str(labels))
    assert code == 0
    assert "same top-1 100.0%" in stdout  # same network in two formats: same answers
    code, stdout, _ = run_cli(capsys, "ablate", str(out), "--keep", "1", "0")  # rebuilt from the run's record
    assert code == 0 and "kept 1.00" in stdout and "kept 0.00" in stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kind", ["pt", "pt2", "onnx"])
def test_each_file_format_scores_on_cuda(tmp_path, kind):
    model = load_model(f"{model_file(tmp_path, kind)}?input-size={SIZE},{SIZE}")
    images = torch.rand(7, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(tiny()(images), 1).numpy()
    scorer = Scorer(model, engine="torch", device="cuda")  # half-precision autocast on CUDA
    np.testing.assert_allclose(scorer.score(images.cuda()), expected, atol=1e-2)


# --- plugins --------------------------------------------------------------------------------------

PLUGIN = """
import torch
from torch import nn

from fooling.fitness import ModelSpec


def _build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 4)).eval()


def make_spec():
    return ModelSpec(name="fake-plugin", channels=1, input_size=(12, 12), mean=(0.0,), std=(1.0,),
                     class_names=("north", "south", "east", "west"), build=_build)


def broken():
    raise RuntimeError("the plugin's own error")
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package declaring two ``fooling.models`` entry points, 'installed' on ``sys.path``."""
    points = (
        "[fooling.models]\nfake-plugin = fake_fooling_plugin:make_spec\n"
        "broken-plugin = fake_fooling_plugin:broken\n"
    )
    with installed_package(tmp_path / "site", monkeypatch, "fake_fooling_plugin", PLUGIN, points) as site:
        yield site


def test_an_installed_plugin_model_evolves_and_is_suggested(plugin, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, *evolve_args("fake-plugin", out))
    assert code == 0 and "/4 classes" in stdout
    checkpoint = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert list(checkpoint.archive.class_names) == ["north", "south", "east", "west"]
    assert checkpoint.model_source["kind"] == "plugin"
    code, _, stderr = run_cli(capsys, *evolve_args("fake-plugn", tmp_path / "other"))
    assert code == 2 and "did you mean 'fake-plugin'" in stderr


# --- bad input: one line, exit code 2, no traceback --------------------------------------------------


class _Payload:
    """Unpickling this touches ``target``: the mark of a loader that ran a pickle."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _pickle_payload(tmp_path: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(_Payload(tmp_path / "EXECUTED"), buffer)
    return buffer.getvalue()


def _bad_models(tmp_path: Path, labels: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (command-line arguments after evolve's model flags, what stderr must say)."""
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    (tmp_path / "junk.onnx").write_bytes(b"not a model either")
    torch.save(tiny().state_dict(), tmp_path / "state.pt")
    (tmp_path / "payload.pt").write_bytes(_pickle_payload(tmp_path))
    save_torchscript(tmp_path / "dense.pt", kind=DenseNet)
    # A valid ExportedProgram whose sample inputs were replaced by a malicious pickle.
    save_export(tmp_path / "clean.pt2")
    with (
        zipfile.ZipFile(tmp_path / "clean.pt2") as clean,
        zipfile.ZipFile(tmp_path / "evil.pt2", "w") as evil,
    ):
        for item in clean.infolist():
            data = clean.read(item.filename)
            evil.writestr(item, _pickle_payload(tmp_path) if "sample_inputs" in item.filename else data)
    (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
    save_onnx(tmp_path / "net.onnx")
    return {
        "missing": (["--model", str(tmp_path / "nowhere.pt2")], "does not exist"),
        "not a model": (["--model", str(tmp_path / "junk.pt")], "is not a TorchScript or torch.export file"),
        "not onnx": (["--model", str(tmp_path / "junk.onnx")], "is not an ONNX model"),
        "state dict": (["--model", str(tmp_path / "state.pt")], "is a pickle"),
        "pickled object": (["--model", str(tmp_path / "payload.pt")], "is a pickle"),
        "pth": (["--model", str(tmp_path / "weights.pth")], "are pickles"),
        "pickle inside pt2": (["--model", str(tmp_path / "evil.pt2")], "pickled Python objects"),
        "labels mismatch": (
            ["--model", str(tmp_path / "net.onnx"), "--labels", str(tmp_path / "four.txt")],
            "has 5 outputs but --labels",
        ),  # fmt: skip
        "labels missing": (
            ["--model", str(tmp_path / "net.onnx"), "--labels", str(tmp_path / "no.txt")],
            "no such file",
        ),  # fmt: skip
        "input size rejected": (
            ["--model", str(tmp_path / "dense.pt"), "--input-size", "8,8"],
            "rejects images",
        ),
        "no input size": (["--model", str(tmp_path / "dense.pt")], "give --input-size"),
        "bad input size": (["--model", str(tmp_path / "dense.pt"), "--input-size", "0,8"], "--input-size"),
        "options for a registry model": (["--model", "mnist-lenet", "--labels", str(labels)], "model file"),
        "unknown timm": (["--model", "timm:resnet5"], "did you mean 'resnet50'"),
        "unknown torchvision": (["--model", "torchvision:alexnett"], "did you mean 'alexnet'"),
        "unknown torchvision weights": (["--model", "torchvision:alexnet.IMAGENET1K_V9"], "IMAGENET1K_V1"),
    }


CASES = [
    "missing", "not a model", "not onnx", "state dict", "pickled object", "pth", "pickle inside pt2",
    "labels mismatch", "labels missing", "input size rejected", "no input size", "bad input size",
    "options for a registry model", "unknown timm", "unknown torchvision", "unknown torchvision weights",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_model_input_is_one_line_exit_2(tmp_path, capsys, labels, case):
    flags, expected = _bad_models(tmp_path, labels)[case]
    code, _, stderr = run_cli(capsys, "evolve", *flags, "--generations", "2", "--out", str(tmp_path / "run"))
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("fooling: error: ") and "Traceback" not in stderr
    assert expected in stderr
    assert not (tmp_path / "EXECUTED").exists()  # no pickle ran
    assert not (tmp_path / "run").exists()


def test_a_plugin_that_raises_is_one_line_exit_2(plugin, tmp_path, capsys):
    code, _, stderr = run_cli(capsys, *evolve_args("broken-plugin", tmp_path / "run"))
    assert code == 2 and stderr.count("\n") == 1
    assert "broken-plugin" in stderr and "the plugin's own error" in stderr


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No weights cached anywhere (torch hub and Hugging Face caches point at empty folders)."""
    import huggingface_hub.constants  # optional heavy dependency: only timm models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("timm:resnet18.a1_in1k", "not in the local cache"),
        ("torchvision:alexnet", "not in the local cache"),
        ("imagenet-alexnet", "not in the local cache"),  # the registered names too: no download tried
        ("imagenet-resnet50", "not in the local cache"),
    ],
)
def test_hub_models_offline_and_not_cached_are_one_line_exit_2(
    empty_caches, tmp_path, capsys, model, expected
):
    assert os.environ.get("FOOLING_OFFLINE") == "1"
    code, _, stderr = run_cli(capsys, *evolve_args(model, tmp_path / "run"))
    assert code == 2 and stderr.count("\n") == 1 and expected in stderr and "FOOLING_OFFLINE" in stderr


def hub_on_loopback(monkeypatch, port: int) -> None:
    """The Hugging Face hub's client sends its requests to 127.0.0.1:``port``, and may send them."""
    import huggingface_hub.constants  # optional heavy dependency: only timm models

    hub = huggingface_hub.constants
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # conftest's guard, lifted for this test
    monkeypatch.setattr(hub, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(
        hub,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        f"http://127.0.0.1:{port}/{{repo_id}}/resolve/{{revision}}/{{filename}}",
    )


@pytest.fixture
def online(empty_caches, monkeypatch):
    """Downloads allowed (no FOOLING_OFFLINE), none possible: torch hub's download fails the test."""
    monkeypatch.delenv("FOOLING_OFFLINE")

    def download(url, *args, **kwargs):
        pytest.fail(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)


@pytest.mark.parametrize("model", ["timm:resnet18.a1_in1k", "torchvision:alexnet", "imagenet-alexnet"])
def test_hub_weights_from_a_host_that_does_not_resolve_are_one_line_at_once(
    online, tmp_path, capsys, monkeypatch, model
):
    """No network: one line before any download (the hub's client would retry for about 45 s)."""
    asked = []

    def no_name_service(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    hub_on_loopback(monkeypatch, 9)  # if it ever got past
    monkeypatch.setattr(sources.hub.socket, "getaddrinfo", no_name_service)
    code, _, stderr = run_cli(capsys, *evolve_args(model, tmp_path / "run"))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "cannot be reached to download them (Name or service not known)" in stderr
    assert asked == ["127.0.0.1" if model.startswith("timm:") else "download.pytorch.org"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("environment", "raised", "said"),
    [
        ({"no_proxy": "localhost"}, socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
         "Name or service not known"),
        ({}, UnicodeError("label empty or too long"), "not a valid host name"),
    ],
    ids=["only no_proxy set", "a malformed host"],
)  # fmt: skip
def test_the_reachability_check_runs_without_a_proxy_and_words_a_bad_host_in_one_line(
    online, tmp_path, capsys, monkeypatch, environment, raised, said
):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    def fails(host, *args, **kwargs):
        raise raised

    hub_on_loopback(monkeypatch, 9)
    monkeypatch.setattr(sources.hub.socket, "getaddrinfo", fails)
    code, _, stderr = run_cli(capsys, *evolve_args("timm:resnet18.a1_in1k", tmp_path / "run"))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert f"127.0.0.1 cannot be reached to download them ({said})" in stderr


def test_the_hubs_retries_print_no_warnings_and_end_in_one_error_line(
    online, tmp_path, capsys, caplog, monkeypatch
):
    """A hub that does not answer (a closed port on 127.0.0.1): its client's retries stay quiet."""
    import huggingface_hub.utils._http as hub_http

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub_on_loopback(monkeypatch, port)
    sleeps = []
    monkeypatch.setattr(hub_http.time, "sleep", sleeps.append)  # the retries' waits, not waited
    caplog.set_level(logging.INFO)
    code, _, stderr = run_cli(capsys, *evolve_args("timm:resnet18.a1_in1k", tmp_path / "run"))
    assert code == 2 and len(sleeps) >= 5, stderr  # it did retry
    assert stderr.startswith("fooling: error: timm:resnet18.a1_in1k: cannot load") and stderr.count("\n") == 1
    hub_records = [record for record in caplog.records if record.name.startswith("huggingface_hub")]
    assert hub_records == [], [record.getMessage() for record in hub_records]
    assert "timm:resnet18.a1_in1k: downloading the weights from 127.0.0.1" in caplog.text


def test_hub_model_names_give_their_preprocessing_without_weights():
    timm_spec = get_model_spec("timm:resnet50.a1_in1k")
    assert timm_spec.input_size == (224, 224) and timm_spec.num_classes == 1000
    assert timm_spec.mean == (0.485, 0.456, 0.406) and timm_spec.class_names[281] == "tabby"
    vision = get_model_spec("torchvision:alexnet")
    assert vision.name == "torchvision:alexnet.IMAGENET1K_V1" and vision.input_size == (224, 224)


TIMM_TEST_MODEL = os.environ.get("FOOLING_TIMM_TEST_MODEL", "resnet18.a1_in1k")


def _timm_cached() -> bool:
    return sources.hub._timm_cached_weights(sources.timm_config(TIMM_TEST_MODEL)[0]) is not None


@pytest.mark.skipif(not _timm_cached(), reason=f"timm {TIMM_TEST_MODEL} weights are not in the local cache")
def test_a_cached_timm_model_loads_offline():
    model = load_model(f"timm:{TIMM_TEST_MODEL}")
    assert model.spec.num_classes == 1000
    with torch.no_grad():
        probabilities = Scorer(model, device="cpu", engine="torch").score(
            torch.rand(1, 3, *model.spec.input_size)
        )
    assert probabilities.shape == (1, 1000)


@pytest.mark.parametrize("kind", ["pt", "pt2", "onnx", "endpoint"])
def test_retrain_refuses_a_fixed_graph_before_asking_for_anything_else(tmp_path, capsys, kind):
    """No --train-dir, no --input-size: the refusal comes first (they would not help), nothing is asked."""
    model = "http://127.0.0.1:9/v2/models/net" if kind == "endpoint" else str(tmp_path / f"net.{kind}")
    code, _, stderr = run_cli(capsys, "retrain", "--model", model, "--out", str(tmp_path / "retrain"))
    shown = {
        "pt": "a TorchScript file (net.pt)",
        "pt2": "a torch.export file (net.pt2)",
        "onnx": "an ONNX file (net.onnx)",
        "endpoint": f"a model behind an endpoint ({model})",
    }[kind]
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert f"retrain adds an output unit to the network, which {shown}" in stderr
    assert not (tmp_path / "retrain").exists()


def test_retrain_refuses_a_model_file_before_any_search(tmp_path, capsys, labels):
    path = model_file(tmp_path, "pt")
    photos = tmp_path / "photos" / "cat"
    photos.mkdir(parents=True)
    torch.manual_seed(0)
    Image.fromarray((torch.rand(20, 20, 3) * 255).to(torch.uint8).numpy()).save(photos / "0.png")
    code, _, stderr = run_cli(capsys, "retrain", "--model", str(path), "--input-size", "16", "--labels",
                              str(labels), "--train-dir", str(tmp_path / "photos"), "--rounds", "1",
                              "--generations", "2", "--population", "10", "--no-progress",
                              "--out", str(tmp_path / "retrain"))  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1 and "cannot take" in stderr
    assert not (tmp_path / "retrain").exists()


# --- photos fitted as the model's own evaluation transform (timm's crop_pct and interpolation) ------


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth ``(height, width, 3)`` uint8 picture with detail near its edges (so crops differ)."""
    rows, columns = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    waves = [np.sin(rows / rng.uniform(2, 6) + columns / rng.uniform(2, 6) + phase) for phase in (0, 1, 2)]
    return ((np.stack(waves, -1) + 1) * 127.5).round().astype(np.uint8)


def _timm_transform(size: tuple[int, int], crop_pct: float, interpolation: str):
    from timm.data import create_transform  # optional heavy dependency: only timm models

    return create_transform(input_size=(3, *size), crop_pct=crop_pct, interpolation=interpolation,
                            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # fmt: skip


@pytest.mark.parametrize("photo_shape", [(37, 53), (53, 37)])
@pytest.mark.parametrize("size", [(20, 20), (20, 28)])
@pytest.mark.parametrize(
    ("crop_pct", "interpolation"), [(0.5, "bicubic"), (0.875, "bilinear"), (1.0, "nearest")]
)
def test_photos_are_fitted_as_timms_eval_transform_fits_them(photo_shape, size, crop_pct, interpolation):
    picture = _photo(*photo_shape)
    ours = to_model_input(picture, 3, size, crop_pct=crop_pct, interpolation=interpolation)
    theirs = _timm_transform(size, crop_pct, interpolation)(Image.fromarray(picture))
    assert ours.shape == (3, *size)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.fixture
def fake_timm(monkeypatch):
    """``timm:fake_net`` with a tiny pretrained config (20x20, crop 0.5, bicubic); nothing downloaded."""
    from timm.models._pretrained import PretrainedCfg  # optional heavy dependency: only timm models

    config = PretrainedCfg(input_size=(3, 20, 20), crop_pct=0.5, interpolation="bicubic", num_classes=5,
                           mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), tag="test")  # fmt: skip
    real = sources.hub.timm_config
    monkeypatch.setattr(
        sources.hub,
        "timm_config",
        lambda name: (config, "fake_net.test") if name.startswith("fake_net") else real(name),
    )
    return config


def test_a_timm_models_photos_are_resized_with_its_interpolation_and_crop(fake_timm, tmp_path):
    spec = get_model_spec("timm:fake_net")
    assert (spec.input_size, spec.crop_pct, spec.interpolation) == ((20, 20), 0.5, "bicubic")
    assert spec.mean == (0.5, 0.5, 0.5) and spec.num_classes == 5
    Image.fromarray(_photo(37, 53)).save(tmp_path / "photo.png")
    images, names = load_model_images(str(tmp_path / "photo.png"), spec)
    expected = _timm_transform((20, 20), 0.5, "bicubic")(Image.open(tmp_path / "photo.png"))
    assert names == ["photo"] and images.shape == (1, 3, 20, 20)
    torch.testing.assert_close(images[0], expected, atol=1e-6, rtol=0)
    # Not what a model without a crop gets: the whole centre square.
    plain, _ = load_images(str(tmp_path / "photo.png"), 3, (20, 20))
    assert (plain - images).abs().max() > 0.1


def test_torchvision_weights_give_their_resize_and_crop():
    spec = get_model_spec("torchvision:resnet50.IMAGENET1K_V2")  # resize 232, crop 224, bilinear
    assert spec.input_size == (224, 224) and spec.interpolation == "bilinear"
    assert math.floor(224 / spec.crop_pct + 1e-6) == 232


def test_audit_scores_real_photos_as_the_model_takes_them(fake_timm, tmp_path):
    spec = get_model_spec("timm:fake_net")
    model = LoadedModel(spec=spec, network=tiny(), weights_hash="test")
    folder = tmp_path / "cat"
    folder.mkdir()
    for seed in range(2):
        Image.fromarray(_photo(40 + seed, 60, seed)).save(folder / f"{seed}.png")
    found = real_photo_confidence(Scorer(model, device="cpu", engine="torch"), {0: folder})
    images, _ = load_model_images(str(folder), spec)
    expected = Scorer(model, device="cpu", engine="torch").score(images)[:, 0].mean()
    assert found[0][1] == 2 and found[0][0] == pytest.approx(float(expected), abs=1e-6)
