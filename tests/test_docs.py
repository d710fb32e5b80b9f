"""The documentation's examples stay true."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hanse.blueprints.models import parse_blueprint, parse_skill
from hanse.config.loader import load_catalog

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_examples_load(tmp_path: Path) -> None:
    blocks = [
        block
        for page in ("configuration.md", "rate-limits.md")
        for block in re.findall(r"```toml\n(.*?)```", (DOCS / page).read_text(), re.S)
    ]
    assert blocks
    for index, block in enumerate(blocks):
        path = tmp_path / f"example-{index}.toml"
        path.write_text(block)
        catalog = load_catalog(path)
        assert catalog.models


def test_blueprint_and_skill_examples_validate() -> None:
    blocks = re.findall(r"```json\n(.*?)```", (DOCS / "blueprints.md").read_text(), re.S)
    objects = [json.loads(block) for block in blocks if block.startswith('{\n  "name"')]
    assert len(objects) >= 2
    for obj in objects:
        if "instructions" in obj:
            parse_skill(obj, "")
        else:
            parse_blueprint(obj, "")
