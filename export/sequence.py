"""`python -m digitpipe.export.sequence`: the sequence reader's checkpoint -> a verified, self-describing ONNX file.

The same contract as the classifier (runtime/metadata.py, output kind "sequence", fit
"strip") and the same rule: the candidate is verified as the bytes it is, on onnxruntime
and cv2.dnn, and only then renamed over the target. Verified means
  1. onnx.checker's full check;
  2. random inputs: every logit within ATOL of PyTorch's, the same best label at every step;
  3. held-out strips of MNIST test digits written as PNG files and read back by the
     runtime's own code: the same, the runtime's blob within PREPROCESS_ATOL of the training
     transform, and every strip decoded (runtime/sequence.py) to the text PyTorch reads.
The report gives each runtime's exact-match rate on those strips.

No INT8 copy: the network is 0.6 MB and runs only on the groups of ink the classifier
doubts (a few a frame at most), so it has no speed to gain; beside an INT8 classifier
run-digit uses this float file.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from digitpipe.export.cli import announce, export_stamp, install
from digitpipe.export.onnx_export import DEFAULT_OPSET, INPUT_NAME, attach_metadata, export_onnx, input_shape
from digitpipe.export.verify import ATOL, PREPROCESS_ATOL, Comparison, _checked, compare, read_back
from digitpipe.runtime.errors import ModelError, first_line
from digitpipe.runtime.metadata import ModelInfo, Preprocess
from digitpipe.runtime.sequence import ctc_greedy
from digitpipe.train import checkpoint
from digitpipe.train.sequence import HEIGHT, LABELS, STRIDE, WIDTH, load_sequence, validation_strips

OUTPUT_NAME = "sequence"
VERIFY_SEED = 7_000_003  # strips no training run draws (training validates on its seed + 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitpipe-export-sequence", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="artifacts/sequence.pt", help="checkpoint written by train.sequence")
    p.add_argument("--out", default="artifacts/sequence.onnx", help="ONNX file to write (report beside it)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset to pin")
    p.add_argument("--verify-strips", type=int, default=500, help="held-out strips of MNIST test digits to verify on")
    p.add_argument("--data-dir", default="data", help="where MNIST is found (the strips' digits)")
    return p


def export_sequence_onnx(net: torch.nn.Module, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    return export_onnx(net, 1, HEIGHT, opset=opset, width=WIDTH, output_name=OUTPUT_NAME)


def sequence_info(proto: onnx.ModelProto, ckpt: dict, ckpt_sha: str, opset: int) -> ModelInfo:
    provenance = {"task": "sequence-reader", "training": ckpt["config"], "validation": ckpt.get("result", {}),
                  **export_stamp(ckpt_sha, "torchscript", opset)}
    # Training feeds strips / 255 (train/sequence.py), cut by the runtime's own fit_strip.
    pp = Preprocess(width=WIDTH, height=HEIGHT, mean=(0.0,), std=(1.0,), color="gray", fit="strip")
    return ModelInfo(labels=LABELS, input_name=INPUT_NAME, input_shape=input_shape(proto), output_name=OUTPUT_NAME,
                     preprocess=pp, provenance=provenance, kind="sequence", stride=STRIDE)


def steps(logits: np.ndarray) -> np.ndarray:
    """N x C x 1 x T -> (N * T) x C: one row per output step, as compare() takes them."""
    return logits[:, :, 0].transpose(0, 2, 1).reshape(-1, logits.shape[1])


def texts(logits: np.ndarray) -> list[str]:
    return [ctc_greedy(out[:, 0], LABELS, STRIDE).text for out in logits]


def verify_sequence(path: Path, runtimes: dict, net: torch.nn.Module, strips: np.ndarray, truth: list[str]) -> dict:
    report = _checked(path, kind="float32", atol=ATOL, task="sequence-reader")
    x = torch.rand(8, 1, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    train_input = torch.from_numpy(strips[:, None]).float() / 255.0
    with torch.no_grad():
        random_ref = net(x).numpy()
        ref = torch.cat([net(train_input[i : i + 256]) for i in range(0, len(train_input), 256)]).numpy()
    with tempfile.TemporaryDirectory(prefix="digitpipe-verify-") as tmp:
        images = [read_back(strip, Path(tmp) / f"{i:04d}.png") for i, strip in enumerate(strips)]
    reference_text = texts(ref)
    comparisons: list[Comparison] = []
    exact = {"pytorch": float(np.mean([a == b for a, b in zip(reference_text, truth)]))}
    preprocess_diff, same_text = 0.0, True
    for name, rt in runtimes.items():
        comparisons.append(compare(f"random inputs: {name}", steps(random_ref), steps(rt.logits(x.numpy()))))
        blob = rt.blob(images)
        preprocess_diff = max(preprocess_diff, float(np.abs(blob - train_input.numpy()).max()))
        logits = rt.logits(blob)
        comparisons.append(compare(f"strip files: {name}", steps(ref), steps(logits)))
        read = texts(logits)
        same_text &= read == reference_text
        exact[name] = float(np.mean([a == b for a, b in zip(read, truth)]))
    report.update(comparisons=[c.to_dict() for c in comparisons], preprocess_max_abs_diff=preprocess_diff,
                  exact_match=exact, strips=len(strips), same_text_as_pytorch=same_text,
                  providers={name: rt.backend.providers for name, rt in runtimes.items()})
    report["passed"] = all(c.passed() for c in comparisons) and same_text and preprocess_diff <= PREPROCESS_ATOL
    return report


def export_sequence(args: argparse.Namespace, log=print) -> dict:
    ckpt_path, out = Path(args.checkpoint), Path(args.out)
    net, ckpt = load_sequence(ckpt_path)
    ckpt_sha = checkpoint.sha256_of(ckpt_path)
    proto = export_sequence_onnx(net, args.opset)
    info = sequence_info(proto, ckpt, ckpt_sha, args.opset)
    data = attach_metadata(proto, info).SerializeToString()
    strips, truth = validation_strips(args.verify_strips, VERIFY_SEED, args.data_dir)
    log(f"verifying the {len(data) / 1e6:.2f} MB sequence reader on {len(strips)} held-out strips")
    common = dict(checkpoint=str(ckpt_path), checkpoint_sha256=ckpt_sha, exporter="torchscript", opset=args.opset,
                  input_shape=list(info.input_shape), versions=info.provenance["versions"])
    return install(data, out, lambda path, runtimes: verify_sequence(path, runtimes, net, strips, truth), common)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.verify_strips < 1:
        print("error: --verify-strips must be at least 1", file=sys.stderr)
        return 2
    try:
        report = export_sequence(args)
    except checkpoint.CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError, ModelError) as exc:
        print(f"error: sequence reader export failed ({first_line(exc)}); the previous one is unchanged", file=sys.stderr)
        return 1
    for c in report["comparisons"]:
        print(f"{c['name']:<28} max|dlogit| {c['max_abs_logit_diff']:.2e}  steps differing {c['differing_predictions']}")
    print("strips read exactly: " + ", ".join(f"{k} {v:.1%}" for k, v in report["exact_match"].items()))
    return announce(report)


if __name__ == "__main__":
    raise SystemExit(main())
