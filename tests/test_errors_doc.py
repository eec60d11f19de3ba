"""The published list of error codes is the catalogue the code raises from."""

from __future__ import annotations

import re
from pathlib import Path

from vigil.errors import CATALOG, Category
from vigil.safety.catalog import errors_markdown, full_catalog


def test_docs_errors_md_is_current() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
    assert doc.read_text() == errors_markdown(), "run: python scripts/gen_errors_doc.py"


def test_every_code_has_a_cause_title_and_remedy() -> None:
    errors_markdown()  # imports every subsystem, so every error class is registered
    for code, cls in CATALOG.items():
        assert code.startswith("VIGIL-") and code == code.upper()
        assert cls.title and cls.remedy, code


CODE = re.compile(r"VIGIL-[A-Z]+(?:-[A-Z]+)*")


def test_every_code_the_source_can_emit_is_catalogued() -> None:
    """A code written anywhere under src/ (a class, a message, a template) must be in
    the catalogue, so `vigil explain` and docs/errors.md know it."""
    catalogue = full_catalog()
    src = Path(__file__).resolve().parent.parent / "src"
    missing: dict[str, list[str]] = {}
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.suffix in (".pyc", ".png", ".ico", ".woff2"):
            continue
        for code in set(CODE.findall(path.read_text(errors="replace"))):
            if code not in catalogue:
                missing.setdefault(code, []).append(str(path.relative_to(src)))
    assert not missing, f"uncatalogued error codes: {missing}"


def test_the_scan_would_see_an_uncatalogued_code() -> None:
    assert CODE.findall('raise Boom("VIGIL-NO-SUCH-THING: x")') == ["VIGIL-NO-SUCH-THING"]
    assert "VIGIL-NO-SUCH-THING" not in full_catalog()


def test_every_code_has_a_category() -> None:
    for code, cls in full_catalog().items():
        assert isinstance(cls.category, Category), code
    assert full_catalog()["VIGIL-HALTED"].category is Category.REFUSED
    assert full_catalog()["VIGIL-STORE"].category is Category.TRANSIENT
    assert full_catalog()["VIGIL-BUDGET-EXCEEDED"].category is Category.PERMANENT
    assert full_catalog()["VIGIL-RUN-NOT-FOUND"].category is Category.NOT_FOUND
    for code in ("VIGIL-COMMIT", "VIGIL-CAPTURE", "VIGIL-INTERNAL"):
        assert full_catalog()[code].category is Category.INTERNAL
