"""The command line's two kinds of failure: the user's (one line, exit 2) and bugs (traceback, exit 1).

Every mistake of the user's is a :class:`~fooling.encodings.errors.UserError` (or an ``OSError``,
the machine's state); anything else is a bug and must not look like a typo.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from fooling.encodings import UserError
from fooling.evo.cli import main, run_command
from fooling.evo.cli.parsing import UsageError
from fooling.fitness import (
    EngineUnavailableError,
    GradientUnavailableError,
    ModelFileError,
    ModelRunError,
    ModelUnavailableError,
    UnknownNameError,
)

# The module (``fooling.evo.cli.main`` the attribute is the function ``main``).
cli_main = importlib.import_module("fooling.evo.cli.main")


def fail_with(error: BaseException):
    def command():
        raise error

    return command


@pytest.mark.parametrize(
    "error",
    [
        UserError("--thing must be positive, not -1"),
        UsageError("evolve: unrecognized arguments: --thing"),
        UnknownNameError("unknown model 'lenet'"),
        ModelFileError("model.pt is not a TorchScript or torch.export file"),
        ModelUnavailableError("mnist-lenet is not trained yet"),
        ModelRunError("model x raised while scoring: boom"),
        EngineUnavailableError("--engine onnxruntime: not installed"),
        GradientUnavailableError("model.onnx has no gradients"),
        FileNotFoundError("no such file: x.png"),
    ],
)
def test_a_users_mistake_is_one_line_and_exit_2(error, capsys):
    assert run_command(fail_with(error)) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"fooling: error: {str(error).splitlines()[0]}"]


def test_every_error_of_the_users_is_a_user_error():
    for kind in (UsageError, UnknownNameError, ModelFileError, ModelUnavailableError, ModelRunError,
                 EngineUnavailableError, GradientUnavailableError):  # fmt: skip
        assert issubclass(kind, UserError), kind
    assert issubclass(UnknownNameError, LookupError) and issubclass(ModelRunError, RuntimeError)
    assert issubclass(ModelUnavailableError, RuntimeError)


@pytest.mark.parametrize(
    "error", [ValueError("a check of the program's own"), LookupError("x"), KeyError("k")]
)
def test_a_bug_inside_a_command_keeps_its_traceback(error):
    with pytest.raises(type(error)):
        run_command(fail_with(error))


def test_a_plain_value_error_inside_evolve_is_not_reported_as_the_users(monkeypatch, tmp_path):
    def broken(args, **defaults):
        raise ValueError("an internal check failed")

    monkeypatch.setattr(cli_main, "new_config", broken)
    with pytest.raises(ValueError, match="an internal check failed"):
        main(["evolve", "--out", str(tmp_path / "run")])


def test_a_user_error_inside_evolve_is_one_line(monkeypatch, tmp_path, capsys):
    def refused(args, **defaults):
        raise UserError("--population must be in [1, 1,000,000], not 0")

    monkeypatch.setattr(cli_main, "new_config", refused)
    assert main(["evolve", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "fooling: error: --population must be in [1, 1,000,000], not 0"
    ]


PROGRAM = """
import sys
from fooling.encodings import UserError
from fooling.evo.cli import run_command

def command():
    raise {error}

sys.exit(run_command(command))
"""


def test_as_a_program_a_bug_exits_1_with_its_traceback():
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(error="ValueError('a check of the program')")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "ValueError: a check of the program"


def test_as_a_program_a_users_mistake_exits_2_in_one_line():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROGRAM.format(error="UserError('--seed must be in [0, 4294967295], not -1')"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["fooling: error: --seed must be in [0, 4294967295], not -1"]


SIGTERMED = """
import os, signal, sys, time
from fooling.evo.cli import run_command

def command():
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a batch system's stop, while a command works
    time.sleep(30)

sys.exit(run_command(command))
"""


def test_sigterm_during_any_command_is_interrupted_exit_130_in_one_line():
    """It was exit 143 and no line, outside evolve's generations and perturb/ascent's steps."""
    done = subprocess.run([sys.executable, "-c", SIGTERMED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130
    assert done.stderr.splitlines() == ["fooling: interrupted"]
