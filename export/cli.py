"""`python -m digitpipe.export` / `digitpipe-export`: checkpoint -> verified, self-describing ONNX.

The candidate file is written beside the target, verified as the bytes it is, and only
then renamed over the target: a failed export leaves the previous good model in place.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
from pathlib import Path

import cv2
import onnx
import onnxruntime
import torch

from digitpipe.export.onnx_export import DEFAULT_OPSET, EXPORTERS, INPUT_NAME, OUTPUT_NAME, attach_metadata, export_onnx, input_shape
from digitpipe.export.quantize import (CALIBRATION_IMAGES, QUANT_FORMAT, QuantizationError, calibration_blob, int8_path,
                                       quantize_int8)
from digitpipe.export.report import measure_latency, to_markdown
from digitpipe.export.verify import ATOL, open_runtimes, verify_file, verify_int8
from digitpipe.runtime.errors import ModelError, first_line
from digitpipe.runtime.integrity import report_beside
from digitpipe.runtime.metadata import ModelInfo
from digitpipe.train import checkpoint
from digitpipe.train.data import in_memory, load_dataset, subset
from digitpipe.train.datasets import DatasetSpec
from digitpipe.train.files import atomic_write_bytes, atomic_write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitpipe-export", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="artifacts/digits.pt", help="checkpoint written by training")
    p.add_argument("--out", default="artifacts/digits.onnx", help="ONNX file to write (report beside it)")
    p.add_argument("--exporter", default="torchscript", choices=EXPORTERS,
                   help="torch.onnx path; both verify on onnxruntime and cv2.dnn, torchscript is 20x quicker")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset to pin")
    p.add_argument("--static-batch", action="store_true", help="fix the batch to 1 instead of a dynamic axis")
    p.add_argument("--data-dir", default="data", help="where the test set is found or fetched to")
    p.add_argument("--verify-images", type=int, default=0, help="test images to verify on (0 = the whole test set)")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                   help="also write <out>.int8.onnx, statically quantized and verified on accuracy")
    return p


def model_info(ckpt: dict, proto: onnx.ModelProto, exporter: str, opset: int, ckpt_sha: str) -> ModelInfo:
    spec = DatasetSpec.from_dict(ckpt["dataset"])
    metrics = ckpt.get("metrics", {})
    provenance = {
        "dataset": spec.name, "arch": ckpt["model_config"]["arch"], "model_config": ckpt["model_config"],
        "test_accuracy": metrics.get("test_acc"), "val_accuracy": metrics.get("val_acc"),
        "best_epoch": metrics.get("epoch"), **export_stamp(ckpt_sha, exporter, opset),
    }
    return ModelInfo(
        labels=tuple(spec.labels), input_name=INPUT_NAME, input_shape=input_shape(proto), output_name=OUTPUT_NAME,
        preprocess=spec.preprocess,
        provenance=provenance, reject=spec.reject,
    )


def export_stamp(ckpt_sha: str, exporter: str, opset: int) -> dict:
    """Provenance every exported file carries: its checkpoint, how and when it was exported, with what."""
    return {"checkpoint_sha256": ckpt_sha, "exporter": exporter, "opset": opset,
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {"torch": str(torch.__version__), "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__}}


def announce(report: dict) -> int:
    """The verdict line of one installed (or refused) file; its exit code."""
    if not report["passed"]:
        print(f"error: verification failed; {report['model']} is unchanged (figures in {report['report_path']})",
              file=sys.stderr)
        return 1
    print(f"wrote {report['model']} (verified; report {report['report_path']} and .md)")
    return 0


def export_checkpoint(args: argparse.Namespace, log=print) -> dict:
    """Export, verify and (only if verified) install args.out, then its INT8 copy; return the report.

    The float report carries the INT8 one under "int8" when --int8 is on and the float passed."""
    ckpt_path, out = Path(args.checkpoint), Path(args.out)
    ckpt = checkpoint.load(ckpt_path)
    ckpt_sha = checkpoint.sha256_of(ckpt_path)
    model = checkpoint.model_from_checkpoint(ckpt)
    spec = DatasetSpec.from_dict(ckpt["dataset"])
    proto = export_onnx(model, spec.preprocess.channels, spec.size, args.exporter, args.opset, not args.static_batch)
    info = model_info(ckpt, proto, args.exporter, args.opset, ckpt_sha)
    data = attach_metadata(proto, info).SerializeToString()

    train, test = load_dataset(spec, Path(args.data_dir), log=log)
    test = in_memory(subset(test, args.verify_images))
    common = dict(checkpoint=str(ckpt_path), checkpoint_sha256=ckpt_sha, exporter=args.exporter, opset=args.opset,
                  input_shape=list(info.input_shape), versions=info.provenance["versions"])
    log(f"verifying {len(data) / 1e6:.2f} MB ONNX ({args.exporter}, opset {args.opset}) on {len(test)} test images")
    report = install(data, out, lambda path, runtimes: verify_file(path, runtimes, model, spec, test), common)
    if report["passed"] and args.int8:
        log(f"quantizing to INT8 ({QUANT_FORMAT}) with {CALIBRATION_IMAGES} training images")
        int8 = quantize_int8(data, calibration_blob(train, spec))
        report["int8"] = install(int8, int8_path(out), lambda path, runtimes: verify_int8(path, runtimes, model, spec, test),
                                 dict(common, float32={k: report[k] for k in ("onnx_bytes", "comparisons", "latency")}))
    return report


def install(data: bytes, out: Path, verify, extra: dict) -> dict:
    """Write data as a candidate beside out, verify those bytes (verify(path, runtimes)), rename
    over out only if they pass.

    Writes <out>.report.json and .md (run-digit --check-model reads the JSON), or
    <out>.rejected.report.json and .md."""
    candidate = out.with_name(f".{out.name}.candidate")
    atomic_write_bytes(candidate, data)
    try:
        runtimes = open_runtimes(candidate)
        report = verify(candidate, runtimes)
        report.update(extra, model=str(out), onnx_sha256=hashlib.sha256(data).hexdigest(), onnx_bytes=len(data))
        if report["passed"]:
            report["latency"] = measure_latency(runtimes)
            os.replace(candidate, out)
    finally:
        candidate.unlink(missing_ok=True)
    json_path = report_beside(out) if report["passed"] else out.with_suffix(".rejected.report.json")
    report["report_path"] = str(json_path)
    atomic_write_json(json_path, report)
    atomic_write_bytes(json_path.with_suffix(".md"), to_markdown(report).encode())
    return report


def format_report(report: dict) -> str:
    lines = [f"{'check':<28} {'n':>6} {'max|dlogit|':>12} {'top-1 agree':>12} {'accuracy':>9}"]
    for c in report["comparisons"]:
        acc = f"{c['accuracy']:.2%}" if "accuracy" in c else ""
        lines.append(f"{c['name']:<28} {c['count']:>6} {c['max_abs_logit_diff']:>12.2e} {c['top1_agreement']:>12.2%} {acc:>9}")
    rule = (f"tolerance {ATOL:g}" if report["kind"] == "float32" else
            f"accuracy drop {report['accuracy_drop_points']:.2f} points (at most {report['max_accuracy_drop_points']:g})")
    lines.append(f"pytorch test accuracy {report['pytorch_test_accuracy']:.2%}; "
                 f"preprocessing max|diff| {report['preprocess_max_abs_diff']:.1e}; {rule}")
    return "\n".join(lines)


def no_int8_copy(exc: QuantizationError) -> str:
    """The one line for an INT8 copy the quantizer could not make: it fails after the float32
    file was verified and installed, and before any INT8 file is written."""
    return (f"error: no INT8 copy ({first_line(exc)}); the float32 file is installed and verified, "
            f"the previous INT8 copy is unchanged")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = export_checkpoint(args)
    except checkpoint.CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QuantizationError as exc:
        print(no_int8_copy(exc), file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError, ModelError) as exc:  # ModelError: the runtime refuses the file
        print(f"error: export failed ({first_line(exc)}); "
              f"the previous models are unchanged", file=sys.stderr)
        return 1
    for r in (report, report.get("int8")):
        if r is None:
            continue
        print(format_report(r))
        if announce(r):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
