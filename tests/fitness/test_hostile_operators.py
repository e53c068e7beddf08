"""Model files whose code reaches outside its tensors: files written by operators, load-time code.

Every crafted file is a real model saved by torch (``torch.jit.save``, ``torch.export.save``) whose
code maps a file read-write with ``aten::from_file`` and writes into it, or runs at load. Each
would create its marker file if it ran (the first test shows that); none may.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from small_setups import LABELS
from small_setups import seeded as tiny
from torch import nn

from fooling.fitness.sources import FileNetwork, ModelFileError
from fooling.fitness.sources.operators import SCRIPT_BUILTINS, SCRIPT_PRIMITIVES, refused_operator

SIZE = 16
FOOLING = Path(sys.executable).parent / "fooling"
PAYLOAD = b"echo pwned\n"


class WritesInForward(nn.Module):
    """Scores like ``tiny(0)``, and writes :data:`PAYLOAD` into ``target`` on every call."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.net = tiny(0)
        self.target = target
        self.payload = torch.tensor(list(PAYLOAD), dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.target, shared=True, size=len(self.payload), dtype=torch.uint8)
        mapped.copy_(self.payload)
        return self.net(images) + mapped.sum().to(images.dtype) * 0.0


class WritesInAnotherMethod(nn.Module):
    """A clean ``forward``; the write sits in an exported method scoring never calls."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.net = tiny(0)
        self.target = target

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @torch.jit.export
    def later(self) -> torch.Tensor:
        return torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8).fill_(65)


class WritesWhenLoaded(nn.Module):
    """Writes into ``target`` from ``__setstate__``, which ``torch.jit.load`` calls."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.weight = torch.rand(3, len(LABELS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean((2, 3)) @ self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return self.target, self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.target, weight, self.training = state
        written = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8).fill_(65)
        self.weight = weight + written.sum().to(weight.dtype) * 0.0  # used, so not compiled away


def script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def reference(path: Path) -> str:
    labels = path.parent / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return f"{path}?labels={labels}&input-size={SIZE},{SIZE}"


def test_the_writes_happen_when_torch_runs_the_files_unchecked(tmp_path):
    # What makes the checks necessary: torch.jit.load and a forward call write the files.
    in_forward, when_loaded = tmp_path / "forward.txt", tmp_path / "loaded.txt"
    module = torch.jit.load(str(script(WritesInForward(str(in_forward)), tmp_path / "a.pt")))
    module(torch.zeros(1, 3, SIZE, SIZE))
    assert in_forward.read_bytes() == PAYLOAD
    torch.jit.load(str(script(WritesWhenLoaded(str(when_loaded)), tmp_path / "b.pt")))
    assert when_loaded.read_bytes() == b"AAAA"


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        (WritesInForward, "aten::from_file in forward"),
        (WritesInAnotherMethod, "aten::from_file in later"),
        (WritesWhenLoaded, "defines __setstate__"),
    ],
)
def test_torchscript_that_reaches_outside_its_tensors_is_refused_before_it_runs(tmp_path, kind, says):
    marker = tmp_path / "MARKER"
    path = script(kind(str(marker)), tmp_path / "net.pt")
    result = subprocess.run(
        [str(FOOLING), "evolve", "--model", reference(path), "--generations", "1", "--population", "4",
         "--out", str(tmp_path / "run"), "--no-progress", "--no-report"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr[-2000:]
    assert not marker.exists() and not (tmp_path / "run").exists()


def exported_writer(target: Path, path: Path) -> Path:
    """A ``.pt2`` whose graph maps ``target`` read-write and copies :data:`PAYLOAD` into it.

    torch.export will not trace ``from_file`` itself, so a clean program's ``zeros`` node is
    edited into it, as a crafted file would be.
    """

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny(0)
            self.register_buffer("payload", torch.tensor(list(PAYLOAD), dtype=torch.uint8))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            scratch = torch.ops.aten.copy.default(torch.zeros(len(PAYLOAD), dtype=torch.uint8), self.payload)
            return self.net(images) + scratch.sum().to(images.dtype) * 0.0

    buffer = io.BytesIO()
    torch.export.save(torch.export.export(Net().eval(), (torch.zeros(2, 3, SIZE, SIZE),)), buffer)
    with zipfile.ZipFile(buffer) as clean, zipfile.ZipFile(path, "w") as crafted:
        for item in clean.infolist():
            data = clean.read(item.filename)
            if item.filename.endswith("models/model.json"):
                document = json.loads(data)
                for node in document["graph_module"]["graph"]["nodes"]:
                    if node["target"] == "torch.ops.aten.zeros.default":
                        node["target"] = "torch.ops.aten.from_file.default"
                        node["inputs"] = [
                            {"name": "filename", "arg": {"as_string": str(target)}, "kind": 1},
                            {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                            {"name": "size", "arg": {"as_int": len(PAYLOAD)}, "kind": 1},
                            {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2},
                        ]
                    elif node["target"] == "torch.ops.aten.copy.default":
                        node["target"] = "torch.ops.aten.copy_.default"
                data = json.dumps(document).encode()
            crafted.writestr(item, data)
    return path


def test_an_exported_program_calling_from_file_is_refused_before_loading(tmp_path):
    marker = tmp_path / "MARKER"
    crafted = exported_writer(marker, tmp_path / "net.pt2")
    with pytest.raises(ModelFileError, match=r"calls torch\.ops\.aten\.from_file\.default .*'filename'"):
        FileNetwork("export", crafted.read_bytes(), "net.pt2")
    assert not marker.exists()


def test_duplicate_archive_members_are_refused(tmp_path):
    # Python's zipfile reads the last of two equal names, torch's reader may take the first, and
    # compares names without case: the checker would read one program and torch load another.
    path = script(tiny(0), tmp_path / "clean.pt")
    with zipfile.ZipFile(path) as clean:
        items = [(item, clean.read(item.filename)) for item in clean.infolist()]
    for name, copy in [("same", lambda n: n), ("case", lambda n: n.replace("data.pkl", "DATA.pkl"))]:
        crafted = tmp_path / f"{name}.pt"
        with zipfile.ZipFile(crafted, "w") as archive:
            for item, data in items:
                archive.writestr(item, data)
                if item.filename.endswith("/data.pkl"):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # zipfile's duplicate-name warning
                        archive.writestr(copy(item.filename), data)
        with pytest.raises(ModelFileError, match="two members named"):
            FileNetwork("torchscript", crafted.read_bytes(), crafted.name)


class Common(nn.Module):
    """Layers whose TorchScript calls operators outside Core ATen: hardswish_, dropout's
    bernoulli_, fused attention, floor division, -inf masks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.act = nn.Hardswish(inplace=True)
        self.drop = nn.Dropout(0.1)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, len(LABELS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.drop(self.act(self.conv(images)))
        tokens = features.flatten(2).transpose(1, 2)
        mask = torch.zeros(tokens.shape[1], tokens.shape[1]).masked_fill(
            torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).triu(1), float("-inf")
        )
        attended, _ = self.attention(tokens, tokens, tokens, attn_mask=mask, need_weights=False)
        return self.head(attended[:, tokens.shape[1] // 2])


@pytest.mark.parametrize("how", ["script", "trace", "export", "export decomposed"])
def test_common_layers_load_and_score_as_their_module(tmp_path, how):
    torch.manual_seed(0)
    module = Common().eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how in ("script", "trace"):
            made = torch.jit.script(module) if how == "script" else torch.jit.trace(module, images)
            buffer = io.BytesIO()
            torch.jit.save(made, buffer)
            kind = "torchscript"
        else:
            program = torch.export.export(module, (images,))
            if how == "export decomposed":
                program = program.run_decompositions()
            buffer = io.BytesIO()
            torch.export.save(program, buffer)
            kind = "export"
    network = FileNetwork(kind, buffer.getvalue(), f"common.{kind}")
    with torch.no_grad():
        torch.testing.assert_close(network(images), module(images), rtol=1e-5, atol=1e-5)


def test_builtins_are_operators_this_torch_has_and_file_or_network_calls_are_not_among_them():
    # A typo in the list would silently refuse a legitimate model.
    assert not SCRIPT_BUILTINS - {schema.name for schema in torch._C._jit_get_all_schemas()}
    for refused in ["aten::save", "aten::manual_seed", "aten::from_file", "prim::Print", "prim::rpc_async",
                    "prim::CallMethod", "cuda::synchronize"]:  # fmt: skip
        assert refused not in SCRIPT_BUILTINS | SCRIPT_PRIMITIVES
        namespace, name = refused.split("::")
        assert refused_operator(namespace, name, "default") is not None
