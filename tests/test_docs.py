"""The documentation's examples stay true."""

from __future__ import annotations

import re
from pathlib import Path

from hanse.config.loader import load_catalog

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_examples_load(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", (DOCS / "configuration.md").read_text(), re.S)
    assert blocks
    for index, block in enumerate(blocks):
        path = tmp_path / f"example-{index}.toml"
        path.write_text(block)
        catalog = load_catalog(path)
        assert catalog.models
