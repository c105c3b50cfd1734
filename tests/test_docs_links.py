"""Every relative link in the user-facing Markdown points at a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "CHANGELOG.md", "docs/how-it-works.md", "deploy/README.md", "benchmarks/README.md",
        "integrations/README.md"]
_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    path = ROOT / doc
    assert path.is_file(), doc
    broken = [m.group(1) for m in _LINK.finditer(path.read_text())
              if not m.group(1).startswith(("http://", "https://", "mailto:"))
              and not (path.parent / m.group(1)).exists()]
    assert broken == [], f"{doc}: {broken}"

