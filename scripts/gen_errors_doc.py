"""Regenerate docs/errors.md from the error catalogue: ``python scripts/gen_errors_doc.py``."""

from __future__ import annotations

from pathlib import Path

from vigil.safety.catalog import errors_markdown

if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
    target.write_text(errors_markdown())
    print(f"wrote {target}")
