"""A network that fails on a Ray scorer actor: one line naming the model and the generation, exit 2."""

from __future__ import annotations

import warnings

import torch
from small_setups import LABELS, RefusesBrightImages

from fooling.evo.cli import main

SIZE = 16


def test_a_model_raising_on_a_scorer_actor_is_one_line_and_leaves_nothing(ray_session, tmp_path, capsys):
    path = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(RefusesBrightImages().eval()), str(path))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    model = f"{path}?labels={tmp_path / 'labels.txt'}&input-size={SIZE},{SIZE}"
    out = tmp_path / "run"
    code = main(["evolve", "--model", model, "--engine", "torch", "--population", "8", "--generations", "2",
                 "--workers", "1", "--scorers", "1", "--out", str(out),
                 "--no-progress", "--no-report"])  # fmt: skip
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fooling: error: generation 0: model net.pt raised"), lines[0]
    assert "the network gave up" in lines[0] and "no generation was saved" in lines[0]
    assert not out.exists()
