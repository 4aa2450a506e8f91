"""`python -m digitpipe.export.check` / `digitpipe-check`: the whole test set through PyTorch and the deployed file.

PyTorch runs the checkpoint on the training transform; the runtime reads every test image
as a PNG file with run-digit's own code and runs the ONNX file on onnxruntime and cv2.dnn.
Prints each accuracy, the predictions that differ from PyTorch and max |logit difference|;
fails (exit 1) when a runtime's accuracy is more than --max-gap points from PyTorch's
(for an INT8 file: more than --max-gap points below it, the rule export verifies it by).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from digitpipe.export.verify import FLOAT_MAX_GAP, INT8_MAX_DROP, accuracy_gap, allowed_gap, dataset_parity, open_runtimes
from digitpipe.runtime.errors import ModelError, first_line
from digitpipe.train import checkpoint
from digitpipe.train.data import in_memory, load_dataset, subset
from digitpipe.train.datasets import DatasetSpec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitpipe-check", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="artifacts/digits.onnx", help="ONNX file to check")
    p.add_argument("--checkpoint", default="artifacts/digits.pt", help="the checkpoint it was exported from")
    p.add_argument("--data-dir", default="data", help="where the test set is found or fetched to")
    p.add_argument("--images", type=int, default=0, help="test images to use (0 = the whole test set)")
    p.add_argument("--max-gap", type=float, default=None,
                   help=f"accuracy points allowed between PyTorch and each runtime "
                        f"(default {FLOAT_MAX_GAP} for float models, {INT8_MAX_DROP} for INT8)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return p


def check(args: argparse.Namespace, log=print) -> dict:
    ckpt = checkpoint.load(Path(args.checkpoint))
    runtimes = open_runtimes(Path(args.model))
    provenance = next(iter(runtimes.values())).info.provenance
    exported_from = provenance.get("checkpoint_sha256")
    if exported_from and exported_from != checkpoint.sha256_of(Path(args.checkpoint)):
        raise checkpoint.CheckpointError(f"{args.model} was not exported from {args.checkpoint} "
                                         f"(its metadata names checkpoint sha256 {exported_from[:12]}...)")
    int8 = "quantization" in provenance
    max_gap = args.max_gap if args.max_gap is not None else allowed_gap(int8)
    spec = DatasetSpec.from_dict(ckpt["dataset"])
    _, test = load_dataset(spec, Path(args.data_dir), log=log)
    test = in_memory(subset(test, args.images))
    log(f"{args.model}: {len(test)} test images through PyTorch, onnxruntime and cv2.dnn")
    parity = dataset_parity(runtimes, checkpoint.model_from_checkpoint(ckpt), spec, test)
    gap = accuracy_gap(parity, int8)
    return {"model": args.model, "checkpoint": args.checkpoint, "images": len(test), "int8": int8,
            "pytorch_test_accuracy": parity["pytorch_test_accuracy"],
            "preprocess_max_abs_diff": parity["preprocess_max_abs_diff"],
            "runtimes": [c.to_dict() for c in parity["comparisons"]],
            "max_gap_points": gap, "allowed_gap_points": max_gap, "passed": gap <= max_gap}


def format_check(result: dict) -> str:
    lines = [f"{'runtime':<30} {'accuracy':>9} {'differ':>7} {'max|dlogit|':>12}",
             f"{'pytorch (training transform)':<30} {result['pytorch_test_accuracy']:>9.2%} {'':>7} {'':>12}"]
    for c in result["runtimes"]:
        lines.append(f"{c['name'].split(': ')[-1] + ' (image files)':<30} {c['accuracy']:>9.2%} "
                     f"{c['differing_predictions']:>7} {c['max_abs_logit_diff']:>12.2e}")
    what = "drop below PyTorch" if result["int8"] else "gap"
    lines.append(f"largest accuracy {what} {result['max_gap_points']:.3f} points (allowed {result['allowed_gap_points']:g})")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = check(args, log=(lambda *_: None) if args.json else print)
    except (checkpoint.CheckpointError, ModelError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: check failed ({first_line(exc)})", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else format_check(result))
    if not result["passed"]:
        print(f"error: accuracy {'drops' if result['int8'] else 'differs'} by {result['max_gap_points']:.3f} points, more than "
              f"{result['allowed_gap_points']:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
