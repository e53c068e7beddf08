"""Scoring engines: torch and ONNX Runtime agree, the ONNX cache, thread counts, --engine."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fooling.fitness.engine as engine_module
import fooling.fitness.torch_engine as torch_engine_module
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES, evolve, resume_config
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import ModelRunError, Scorer, UnknownNameError, load_model
from fooling.fitness.engine import (
    EngineUnavailableError,
    cache_entry,
    configure_threads,
    onnx_model,
    resolve_engine,
    scoring_threads,
)
from fooling.fitness.engines import EngineOptions

# Every registered model that works offline (the torchvision ones need a download).
OFFLINE_MODELS = ("mnist-lenet", "imagenet-lite0", "imagenet-lite1", "imagenet-lite2")
TOLERANCE = 1e-4


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fooling: error: ")
    return err[0]


def photos(channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Real photos from scikit-image, ``(4, channels, *size)`` in [0, 1]."""
    from skimage import color, data

    images = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
    tensors = []
    for image in images:
        if channels == 1:
            image = color.rgb2gray(image)[..., None] * 255
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().unsqueeze(0) / 255
        tensors.append(F.interpolate(tensor, size=size, mode="bilinear", antialias=True))
    return torch.cat(tensors).clamp(0, 1)


@pytest.fixture
def threads_restored():
    """Put this process's thread count back after a test that changes it."""
    before = scoring_threads()
    yield
    configure_threads(before)


@pytest.mark.parametrize("name", OFFLINE_MODELS)
def test_engines_agree_on_random_images_and_real_photos(fooling_home, name):
    model = load_model(name)
    by_torch = Scorer(model, engine="torch")
    by_onnx = Scorer(model, engine="onnxruntime")
    assert (by_torch.engine, by_onnx.engine) == ("torch", "onnxruntime")
    size = by_torch.image_size
    generator = torch.Generator().manual_seed(0)
    for images in (
        torch.rand(5, model.spec.channels, *size, generator=generator),
        photos(model.spec.channels, size),
    ):
        expected, actual = by_torch.score(images), by_onnx.score(images)
        assert by_onnx.engine == "onnxruntime"  # no silent fallback
        assert actual.shape == expected.shape == (len(images), model.spec.num_classes)
        assert np.abs(actual - expected).max() < TOLERANCE
        assert np.allclose(actual.sum(1), 1, atol=1e-5)


def test_engines_agree_with_ten_crops(fooling_home):
    model = load_model("imagenet-lite0")
    images = photos(3, (256, 256))[:2]
    expected = Scorer(model, engine="torch", crops=10).score(images)
    actual = Scorer(model, engine="onnxruntime", crops=10).score(images)
    assert np.abs(actual - expected).max() < TOLERANCE


@pytest.mark.parametrize(
    ("partial", "expected"),
    [(False, [False, True, True, True, True]), (True, [False, True, True, False, False])],
    ids=["every class", "top-k answers"],
)
def test_bad_rows_is_one_rule_for_numpy_and_torch_scores(lenet, monkeypatch, partial, expected):
    scorer = Scorer(lenet, engine="torch")
    # An endpoint's top-k answers mark each class not returned with -inf (the engine says so).
    monkeypatch.setattr(scorer, "_session", types.SimpleNamespace(partial_scores=partial))
    inf, nan = float("inf"), float("nan")
    scores = np.array([[0.2, 0.8], [nan, 0.5], [inf, 0.1], [-inf, -inf], [-inf, 0.9]], np.float32)
    for given in (scores, torch.from_numpy(scores)):
        bad = scorer.bad_rows(given)
        assert type(bad) is type(given) and bad.dtype in (np.bool_, torch.bool)
        assert bad.tolist() == expected
    if partial:  # rows with -inf pass, and the scores come back as they were
        kept = scores[[0, 3, 4]]
        assert scorer._finite(kept) is kept
    with pytest.raises(ModelRunError, match=r"gave non-finite scores \(NaN or infinity\) for 2 of 3 images"):
        scorer._finite(scores[[0, 1, 2]])


def test_auto_is_onnxruntime_on_the_cpu_and_torch_on_cuda(monkeypatch):
    assert resolve_engine("auto", "cpu") == "onnxruntime"
    assert resolve_engine("AUTO", "cuda") == "torch"
    assert resolve_engine("torch", "cpu") == "torch"
    with pytest.raises(EngineUnavailableError, match="scores on the CPU"):
        resolve_engine("onnxruntime", "cuda")
    monkeypatch.setattr(engine_module, "onnxruntime_available", lambda: False)
    assert resolve_engine("auto", "cpu") == "torch"
    with pytest.raises(EngineUnavailableError, match="package is not installed"):
        resolve_engine("onnxruntime", "cpu")


def test_unknown_engine_suggests_close_names(fooling_home, tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="did you mean 'onnxruntime'"):
        RunConfig(engine="onnx")
    assert main(["evolve", "--engine", "onnxrun", "--out", str(tmp_path / "r")]) == 2
    assert "unknown engine 'onnxrun'; did you mean 'onnxruntime'" in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_onnxruntime_missing_is_one_line(fooling_home, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine_module, "onnxruntime_available", lambda: False)
    arguments = ["evolve", "--engine", "onnxruntime", "--generations", "1", "--population", "4"]
    assert main([*arguments, "--out", str(tmp_path / "r"), "--no-progress", "--no-report"]) == 2
    assert "the onnxruntime package is not installed" in one_error_line(capsys)


def test_model_that_cannot_be_exported_falls_back_to_torch(lenet, monkeypatch, caplog):
    def refuse(model):
        raise RuntimeError("unsupported operator aten::weird\nmore detail")

    monkeypatch.setattr(engine_module, "export_onnx", refuse)
    monkeypatch.setattr(engine_module, "_read_cached", lambda entry, model: None)
    scorer = Scorer(lenet, engine="onnxruntime")
    images = torch.rand(3, 1, 28, 28)
    with caplog.at_level(logging.WARNING):
        probabilities = scorer.score(images)
        scorer.score(images)
    assert scorer.engine == "torch"
    lines = [r.getMessage() for r in caplog.records if "ONNX Runtime" in r.getMessage()]
    assert lines == [
        "mnist-lenet cannot run on ONNX Runtime (unsupported operator aten::weird): scoring with torch"
    ]
    assert np.array_equal(probabilities, Scorer(lenet, engine="torch").score(images))


def test_compiled_scoring_pads_to_one_batch_shape_and_agrees_with_eager(lenet, monkeypatch, compiled_shapes):
    monkeypatch.setattr(torch_engine_module, "COMPILED_BATCH", 8)  # 19 images: chunks of 8, 8 and 3 + 5 zeros
    seen = compiled_shapes
    images = torch.rand(19, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    compiled = Scorer(lenet, engine="torch", compiled=True).score(images)
    # One static shape (compiled once, never per batch size), and each chunk run once: the
    # compiling call's logits are the first chunk's.
    assert seen == [(8, 1, 28, 28)] * 3
    eager = Scorer(lenet, engine="torch", compiled=False).score(images)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    assert compiled.shape == (19, 10)
    assert Scorer(lenet, engine="torch", compiled=True).score(images[:0]).shape == (0, 10)


@pytest.mark.parametrize(
    ("inputs", "largest", "fitted"),
    [(1, 256, 1), (200, 256, 200), (256, 256, 256), (257, 256, 129), (400, 256, 200), (1000, 256, 250),
     (4000, 256, 250), (19, 8, 7)],
)  # fmt: skip
def test_fitted_batch_runs_a_call_in_the_fewest_equal_chunks(inputs, largest, fitted):
    assert torch_engine_module.fitted_batch(inputs, largest) == fitted
    chunks = -(-inputs // fitted)
    assert fitted <= largest and chunks == -(-inputs // largest)  # no more chunks than the largest needs
    assert chunks * fitted - inputs < chunks  # padding: less than one row per chunk


def test_compiled_scoring_fits_its_one_shape_to_the_calls_it_is_told_of(lenet, compiled_shapes):
    seen = compiled_shapes
    images = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    scorer = Scorer(lenet, engine="torch", compiled=True, batch=300)
    compiled = scorer.score(images)
    assert seen == [(150, 1, 28, 28)] * 2  # 300 rows computed, where chunks of 256 compute 512
    compiled_short = scorer.score(images[:100])  # a shorter call keeps the shape, padded
    assert seen[2:] == [(150, 1, 28, 28)]
    eager = Scorer(lenet, engine="torch", compiled=False).score(images)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    np.testing.assert_allclose(compiled_short, eager[:100], atol=1e-5)
    with pytest.raises(ValueError, match="batch must be at least 1"):
        Scorer(lenet, engine="torch", batch=0)


@pytest.mark.parametrize(("device", "chunks"), [("cpu", [600]), ("meta", [200, 200, 200])])
def test_eager_scoring_off_the_cpu_runs_a_call_in_the_fitted_chunks(lenet, device, chunks):
    # Off the CPU a call holds up to 1,024 inputs: uncompiled, the network still sees chunks of
    # at most 256 rows, so its activations stay those of one chunk ("meta": a device without
    # data, which shows the shapes the network is given).
    seen: list[int] = []
    network = copy.deepcopy(lenet.network)
    forward = network.forward
    network.forward = lambda inputs: (seen.append(len(inputs)), forward(inputs))[1]
    session = torch_engine_module.TorchSession(
        dataclasses.replace(lenet, network=network),
        EngineOptions(device=torch.device(device), threads=1, batch=600),
    )
    probabilities = session.score_tensor(torch.rand(600, 1, 28, 28), 1, (28, 28))
    assert seen == chunks and probabilities.shape == (600, 10) and probabilities.device.type == device


def test_network_that_cannot_be_compiled_falls_back_to_eager(lenet, monkeypatch, caplog):
    def refuse(inputs):
        raise RuntimeError("inductor: no C++ compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda network, **options: refuse)
    scorer = Scorer(lenet, engine="torch", compiled=True)
    images = torch.rand(3, 1, 28, 28)
    with caplog.at_level(logging.WARNING):
        probabilities = scorer.score(images)
        scorer.score(images)
    assert not scorer.compiled
    lines = [r.getMessage() for r in caplog.records if "compiled" in r.getMessage()]
    assert lines == ["mnist-lenet cannot be compiled (inductor: no C++ compiler): scoring with eager torch"]
    assert np.array_equal(probabilities, Scorer(lenet, engine="torch").score(images))


# --- the cache ------------------------------------------------------------------------------


def _exports(monkeypatch) -> list[str]:
    """Record every export (the model's name) from now on."""
    calls: list[str] = []
    original = engine_module.export_onnx

    def counting(model):
        calls.append(model.spec.name)
        return original(model)

    monkeypatch.setattr(engine_module, "export_onnx", counting)
    return calls


def test_cache_exports_once_and_records_the_hash(lenet, tmp_path, monkeypatch):
    exports = _exports(monkeypatch)
    first = onnx_model(lenet, home=tmp_path)
    second = onnx_model(lenet, home=tmp_path)
    assert first == second and exports == ["mnist-lenet"]
    entry = cache_entry(lenet, home=tmp_path)
    record = json.loads(entry.meta.read_text())
    assert record["sha256"] == hashlib.sha256(entry.onnx.read_bytes()).hexdigest()
    assert record["weights_hash"] == lenet.weights_hash and record["opset"] == 17
    assert not [p for p in entry.onnx.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncate", "flip", "stale_record", "no_record"])
def test_damaged_cache_is_exported_again_never_loaded(lenet, tmp_path, monkeypatch, caplog, damage):
    good = onnx_model(lenet, home=tmp_path)
    entry = cache_entry(lenet, home=tmp_path)
    if damage == "truncate":
        entry.onnx.write_bytes(good[: len(good) // 2])
    elif damage == "flip":
        entry.onnx.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    elif damage == "stale_record":
        record = json.loads(entry.meta.read_text())
        entry.meta.write_text(json.dumps({**record, "weights_hash": "0" * 16}))
    else:
        entry.meta.unlink()
    loaded: list[bytes] = []
    monkeypatch.setattr(engine_module, "onnx_session", lambda data, threads=None: loaded.append(data))
    exports = _exports(monkeypatch)
    with caplog.at_level(logging.WARNING):
        data = onnx_model(lenet, home=tmp_path)
    assert exports == ["mnist-lenet"]
    assert data == entry.onnx.read_bytes() and len(data) == len(good)
    if damage != "no_record":
        assert "does not match its record" in caplog.text or "unreadable" in caplog.text
    # What a scorer hands to ONNX Runtime is always the verified graph.
    monkeypatch.setenv("FOOLING_HOME", str(tmp_path))
    entry.onnx.write_bytes(good[:100])
    Scorer(lenet, engine="onnxruntime")._onnx_session()
    assert loaded and all(blob == entry.onnx.read_bytes() != good[:100] for blob in loaded)


def test_unwritable_cache_keeps_the_graph_in_memory(lenet, tmp_path, caplog):
    home = tmp_path / "home"
    home.mkdir()
    (home / "onnx").write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        data = onnx_model(lenet, home=home)
    assert data[:2] and "kept in memory" in caplog.text


# --- threads --------------------------------------------------------------------------------


def test_thread_count_comes_from_the_cores_available(threads_restored):
    assert configure_threads() == len(os.sched_getaffinity(0)) == torch.get_num_threads()
    assert configure_threads(1.5) == 1 == torch.get_num_threads() == scoring_threads()
    assert configure_threads(0.25) == 1  # a fractional Ray share still gets one thread


# Allocates and frees a 64 MB torch tensor 12 times and prints the page faults of the last
# 3 times (after calling keep_freed_memory when argv[1] is "keep"). Kept memory is reused once
# glibc's heap has grown to fit the pattern (torch's 64-byte alignment needs a little more than
# a freed block of the same size; that took up to 8 rounds).
PAGE_FAULTS = """
import resource, sys, torch
from fooling.fitness.engine import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else "skipped")
for round in range(12):
    if round == 9:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_tensors_are_reused_without_page_faults():
    faults = {}
    for mode in ("keep", "default"):
        result = subprocess.run(
            [sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, timeout=120, check=True
        )
        setting, count = result.stdout.split()
        assert setting == {"keep": "True", "default": "skipped"}[mode]
        faults[mode] = int(count)
    # 64 MB is 16,384 pages of 4 kB: glibc's default maps them afresh each time.
    assert faults["default"] > 3 * 8000
    assert faults["keep"] < 1000


def test_keep_freed_memory_can_be_opted_out(monkeypatch):
    monkeypatch.setattr(engine_module, "_memory_kept", False)
    monkeypatch.setenv("FOOLING_DEFAULT_ALLOCATOR", "1")
    assert engine_module.keep_freed_memory() is False


def test_onnx_sessions_use_the_decided_thread_count(lenet, threads_restored):
    configure_threads(1)
    session = Scorer(lenet, engine="onnxruntime")._onnx_session()
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_onnxruntime_floats_do_not_depend_on_the_thread_count(lenet, threads_restored):
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    configure_threads(1)
    one = Scorer(lenet, engine="onnxruntime").score(images)
    configure_threads(2)
    two = Scorer(lenet, engine="onnxruntime").score(images)
    assert np.array_equal(one, two)


# --- runs -----------------------------------------------------------------------------------

TINY = dict(model="mnist-lenet", population=40, batch_size=20, seed=5, generations=4, checkpoint_every=2)


def test_runs_on_either_engine_agree(fooling_home, tmp_path):
    runs = {
        name: evolve(RunConfig(**TINY, engine=name, out=str(tmp_path / name)), show_progress=False)
        for name in ("torch", "onnxruntime")
    }
    torch_fitness = runs["torch"].archive.elite_fitness()
    onnx_fitness = runs["onnxruntime"].archive.elite_fitness()
    assert np.abs(torch_fitness - onnx_fitness).max() < TOLERANCE
    stored = read_latest_checkpoint(str(tmp_path / "onnxruntime"), GENOME_CLASSES).config
    assert stored.engine == "onnxruntime"


def test_tiny_cppn_runs_on_lite0_agree(fooling_home, tmp_path):
    fitness = {}
    for name in ("torch", "onnxruntime"):
        config = RunConfig(
            model="imagenet-lite0",
            encoding="cppn",
            generations=2,
            population=6,
            image_size=32,
            classes=["jellyfish", "goldfish", "king penguin"],
            engine=name,
            out=str(tmp_path / name),
        )
        fitness[name] = evolve(config, show_progress=False).archive.elite_fitness()
    assert np.abs(fitness["torch"] - fitness["onnxruntime"]).max() < TOLERANCE


def test_resume_keeps_the_engine_and_warns_when_it_changes(fooling_home, tmp_path, caplog):
    out = str(tmp_path / "run")
    evolve(RunConfig(**{**TINY, "generations": 2}, engine="torch", out=out), show_progress=False)
    assert resume_config(out, generations=4).engine == "torch"
    with caplog.at_level(logging.WARNING):
        assert resume_config(out, generations=4, engine="torch").engine == "torch"
    assert "bit-identical" not in caplog.text
    with caplog.at_level(logging.WARNING):
        config = resume_config(out, generations=4, engine="onnxruntime")
    assert config.engine == "onnxruntime"
    assert "will no longer be bit-identical to an uninterrupted run" in caplog.text
    resumed = evolve(config, resume=True, show_progress=False)
    assert resumed.generation == 4
    assert read_latest_checkpoint(out, GENOME_CLASSES).config.engine == "onnxruntime"


def test_resume_with_the_same_engine_is_bit_identical(fooling_home, tmp_path):
    whole = evolve(RunConfig(**TINY, engine="onnxruntime", out=str(tmp_path / "whole")), show_progress=False)
    part = str(tmp_path / "part")
    evolve(RunConfig(**{**TINY, "generations": 2}, engine="onnxruntime", out=part), show_progress=False)
    resumed = evolve(resume_config(part, generations=4), resume=True, show_progress=False)
    assert resumed.archive.equals(whole.archive)


def test_configs_stored_before_the_engine_setting_read_as_torch():
    stored = json.loads(RunConfig().to_json())
    del stored["engine"]
    assert RunConfig.from_json(json.dumps(stored)).engine == "torch"
    assert RunConfig.from_json(RunConfig(engine="onnxruntime").to_json()).engine == "onnxruntime"


def test_transfer_and_ablate_take_an_engine(fooling_home, tmp_path, capsys):
    out = str(tmp_path / "run")
    evolve(RunConfig(**{**TINY, "generations": 2}, out=out), show_progress=False)
    assert main(["transfer", out, "--to", "mnist-lenet", "--engine", "torch"]) == 0
    capsys.readouterr()
    assert main(["transfer", out, "--to", "mnist-lenet", "--engine", "tourch"]) == 2
    assert "did you mean 'torch'" in one_error_line(capsys)


class _AnySizeNet(torch.nn.Module):
    """``(batch, 3, H, W)`` -> ``(batch, 5)`` logits for any H, W >= 3 (scripted into a model file)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
        )
        self.head = torch.nn.Linear(24, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)) * 4.0


def _save_any_size_net(path) -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(_AnySizeNet().eval()), str(path))


# Probabilities lie in [0, 1] and both engines compute them in float32 (epsilon 1.2e-7) through
# a few dozen operations: they agree to well under 1e-5 (measured: 4e-8).
PROBABILITY_TOLERANCE = 1e-5


@pytest.mark.parametrize(
    "option", ["mean=0.9", "std=0.05", "input-size=24,20"], ids=["mean", "std", "input-size"]
)
def test_the_onnx_cache_keys_everything_baked_into_the_graph(tmp_path, monkeypatch, option):
    monkeypatch.setenv("FOOLING_HOME", str(tmp_path / "home"))
    path = tmp_path / "net.pt"
    _save_any_size_net(path)
    default = f"{path}?input-size=16,16"
    changed = f"{path}?input-size=16,16&{option}" if "input-size" not in option else f"{path}?{option}"
    scores, specs = {}, {}
    # The changed options first: the defaults' run must not be handed the graph exported for them.
    for reference in (changed, default):
        model = load_model(reference)
        specs[reference] = model.spec
        images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        images = F.interpolate(images, size=model.spec.input_size, mode="bilinear")
        by_onnx = Scorer(model, engine="onnxruntime", device="cpu")
        scores[reference] = by_onnx.score(images)
        assert by_onnx.engine == "onnxruntime"  # no fallback to torch
        expected = Scorer(model, engine="torch", device="cpu").score(images)
        assert np.abs(scores[reference] - expected).max() < PROBABILITY_TOLERANCE, reference
    # Each option changes what the network sees, so the scores (the same images, resized) differ.
    assert np.abs(scores[changed] - scores[default]).max() > 100 * PROBABILITY_TOLERANCE
    records = sorted((tmp_path / "home" / "onnx").glob("*.json"))
    assert len(records) == 2 and len(list((tmp_path / "home" / "onnx").glob("*.onnx"))) == 2
    keys = [json.loads(record.read_text()) for record in records]
    assert {(tuple(k["mean"]), tuple(k["std"]), tuple(k["input_size"])) for k in keys} == {
        (spec.mean, spec.std, spec.input_size) for spec in specs.values()
    }


def test_a_cache_record_of_other_preprocessing_is_not_used(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FOOLING_HOME", str(tmp_path / "home"))
    path = tmp_path / "net.pt"
    _save_any_size_net(path)
    model = load_model(f"{path}?input-size=16,16")
    onnx_model(model)
    entry = cache_entry(model)
    # A graph exported with another mean, filed under this model's name (a stale or planted entry).
    other = load_model(f"{path}?input-size=16,16&mean=0.5")
    record = json.loads(entry.meta.read_text())
    entry.onnx.write_bytes(onnx_model(other))
    entry.meta.write_text(json.dumps({**record, "sha256": hashlib.sha256(entry.onnx.read_bytes()).hexdigest(),
                                      "mean": [0.5, 0.5, 0.5]}))  # fmt: skip
    exports = _exports(monkeypatch)
    with caplog.at_level(logging.WARNING):
        onnx_model(model)
    assert exports == ["net.pt"] and "does not match its record" in caplog.text
