"""``raystudy schema``: the committed ``studies/schema.json`` is its output, and every preset follows it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raystudy.config import STUDIES_DIR

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(STUDIES_DIR.glob("*.yaml"))


def test_committed_schema_is_the_commands_output():
    # a fresh process: only the built-in methods are registered (a test may have registered a plugin)
    out = subprocess.run(
        [sys.executable, "-m", "raystudy.cli", "schema"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout == (STUDIES_DIR / "schema.json").read_text(), (
        "regenerate: python -m raystudy.cli schema > studies/schema.json"
    )
    pretrain = json.loads(out.stdout)["$defs"]["PretrainConfig"]["properties"]
    assert {"moco", "byol", "simclr"} <= set(pretrain) and "sections" not in pretrain
    assert pretrain["moco"]["properties"]["momentum"] == {
        "default": 0.99,
        "exclusiveMaximum": 1.0,
        "minimum": 0.0,
        "title": "Momentum",
        "type": "number",
    }


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_name_the_schema_and_follow_it(preset: Path):
    assert preset.read_text().splitlines()[0] == "# yaml-language-server: $schema=./schema.json"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(preset.read_text()), json.loads((STUDIES_DIR / "schema.json").read_text()))
