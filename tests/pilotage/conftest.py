"""The pilotage tests' hand-computable département (tests.support.pilotage_scene)."""

from __future__ import annotations

import pytest

from tests.support.pilotage_scene import build_scene


@pytest.fixture
def scene(db, tmp_path):
    return build_scene(db, tmp_path)
