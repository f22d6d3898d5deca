"""Checkpoints written before the plug-in refactor still load: every preset's state-dict keys
and shapes equal the ones recorded with the code of 5584a6e (tests/fixtures/state_dict_keys.json:
per model the key count and a SHA-256 of the sorted ``key:shape`` lines)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from distill.models import build_model

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "state_dict_keys.json").read_text())


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_state_dict_keys_and_shapes_unchanged(name):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(name, num_classes=3)
    rows = sorted(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    assert (len(rows), digest) == (RECORDED[name]["keys"], RECORDED[name]["sha256"])
