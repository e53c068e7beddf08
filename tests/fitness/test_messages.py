"""One-line error texts: what every one-line report (exit 2, logged fallbacks) prints of an error."""

from __future__ import annotations

from fooling.fitness import error_line


def test_first_non_blank_line_without_colour_codes():
    error = RuntimeError("\n  \x1b[31mboom\x1b[0m: it broke  \nTraceback (most recent call last):\n  ...")
    assert error_line(error) == "boom: it broke"


def test_last_line_names_the_remote_exception():
    error = RuntimeError("RayTaskError: task failed\n\n  File x\nModuleNotFoundError: no 'foo'\n\n")
    assert error_line(error, last=True) == "ModuleNotFoundError: no 'foo'"


def test_empty_or_blank_message_gives_the_type_name():
    # str(OSError()) is "": a report built with str(error).splitlines()[0] raised IndexError.
    assert error_line(OSError()) == "OSError"
    assert error_line(ValueError("  \n \n")) == "ValueError"
    assert error_line(KeyError()) == "KeyError"


def test_long_lines_are_cut():
    assert error_line(ValueError("x" * 500)) == "x" * 197 + "..."  # cut: says there was more
    assert error_line(ValueError("y" * 500), limit=20) == "y" * 17 + "..."
    assert error_line(ValueError("z" * 500 + "\nmore"), limit=None) == "z" * 500
