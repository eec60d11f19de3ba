"""The published list of error codes is the catalogue the code raises from."""

from __future__ import annotations

from pathlib import Path

from vigil.errors import CATALOG
from vigil.safety.catalog import errors_markdown


def test_docs_errors_md_is_current() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
    assert doc.read_text() == errors_markdown(), "run: python scripts/gen_errors_doc.py"


def test_every_code_has_a_cause_title_and_remedy() -> None:
    errors_markdown()  # imports every subsystem, so every error class is registered
    for code, cls in CATALOG.items():
        assert code.startswith("VIGIL-") and code == code.upper()
        assert cls.title and cls.remedy, code
