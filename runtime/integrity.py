"""Is this the file that was verified? The export report records its sha256."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from digitpipe.runtime.errors import ModelError


def report_beside(model_path: Path) -> Path:
    """artifacts/digits.onnx -> artifacts/digits.report.json (as `make export` writes it)."""
    return model_path.with_suffix(".report.json")


def check_against_report(model_path: Path, data: bytes, report: Path | None = None) -> str:
    """Raise ModelError unless data hashes to the report's onnx_sha256; return the hash."""
    report = report or report_beside(model_path)
    try:
        expected = json.loads(report.read_text(encoding="utf-8"))["onnx_sha256"]
    except FileNotFoundError:
        raise ModelError(f"{model_path}: no export report {report} to check it against") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ModelError(f"{report}: not an export report (no onnx_sha256)") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelError(f"{model_path}: changed since export (sha256 {actual[:12]}..., "
                         f"{report.name} says {str(expected)[:12]}...)")
    return actual
