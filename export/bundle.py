"""`python -m digitpipe.export.bundle` (`make bundle`): put a verified model inside the package.

The wheel carries digitpipe/models/digits.onnx (and the ink detector and the sequence reader
beside it) with their
export reports; run-digit and digitpipe.Reader fall back to them. Only files whose report
passed, whose bytes hash to that report's onnx_sha256, and that both runtimes load as the
right kind of model are copied; a refused file leaves the bundled ones as they were.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from digitpipe.runtime.bundled import BUNDLED_DIR, BUNDLED_MODEL, TRAINED_MODEL
from digitpipe.runtime.detector import DETECTOR_NAME
from digitpipe.runtime.errors import ModelError
from digitpipe.runtime.integrity import check_against_report, report_beside
from digitpipe.runtime.model import Model
from digitpipe.runtime.sequence import SEQUENCE_NAME
from digitpipe.train.files import atomic_write_bytes

BACKENDS = ("onnxruntime", "opencv")


def checked_files(model: Path, kind: str) -> dict[str, bytes]:
    """{file name in the bundle: bytes} for a model and its report; ModelError unless both pass."""
    report = report_beside(model)
    try:
        data = model.read_bytes()
        report_bytes = report.read_bytes()
        passed = json.loads(report_bytes).get("passed")
    except FileNotFoundError as exc:
        raise ModelError(f"{exc.filename}: no such file (create it with `make train export`)") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"{report}: not an export report ({exc})") from None
    if passed is not True:
        raise ModelError(f"{report}: the export did not pass verification; nothing bundled")
    check_against_report(model, data, report)
    for backend in BACKENDS:
        found = Model(model, backend, "cpu").info.kind
        if found != kind:
            raise ModelError(f"{model}: output kind {found!r} on {backend}, expected {kind!r}")
    name = {"logits": BUNDLED_MODEL, "mask": DETECTOR_NAME, "sequence": SEQUENCE_NAME}[kind]
    return {name: data, report_beside(Path(name)).name: report_bytes}


def bundle(model: Path, into: Path = BUNDLED_DIR, log=print) -> list[Path]:
    """Check the classifier and the detector and sequence reader beside it (those there are),
    then copy them into `into`."""
    files = checked_files(model, "logits")
    for name, kind in ((DETECTOR_NAME, "mask"), (SEQUENCE_NAME, "sequence")):
        if model.with_name(name).is_file():
            files.update(checked_files(model.with_name(name), kind))
    written = []
    for name, data in files.items():
        atomic_write_bytes(into / name, data)
        written.append(into / name)
    stale = {n for name in (DETECTOR_NAME, SEQUENCE_NAME) for n in (name, report_beside(Path(name)).name)} - set(files)
    for name in stale:  # a detector or reader left from an earlier bundle would not belong to this model
        (into / name).unlink(missing_ok=True)
    for path in written:
        log(f"bundled {path} ({path.stat().st_size:,} bytes)")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m digitpipe.export.bundle", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=TRAINED_MODEL,
                   help=f"verified classifier; {DETECTOR_NAME} and {SEQUENCE_NAME} beside it are bundled too")
    p.add_argument("--into", type=Path, default=BUNDLED_DIR, help="the package's model folder")
    args = p.parse_args(argv)
    try:
        bundle(args.model, args.into)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
