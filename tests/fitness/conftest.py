"""Fixtures of the scoring tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def compiled_shapes(monkeypatch) -> list[tuple[int, ...]]:
    """The input shape of every call of a network ``torch.compile`` makes from now on, in order."""
    seen: list[tuple[int, ...]] = []
    original = torch.compile

    def recording(network, **options):
        compiled = original(network, **options)
        return lambda inputs: (seen.append(tuple(inputs.shape)), compiled(inputs))[1]

    monkeypatch.setattr(torch, "compile", recording)
    return seen
