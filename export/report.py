"""Export reports: latency per runtime, and the markdown page written beside the JSON."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from digitpipe.runtime.model import Model

LATENCY_RUNS, THROUGHPUT_BATCH, THROUGHPUT_SECONDS = 200, 1000, 0.25


def throughput_batch(batch1_seconds: float) -> int:
    """Images per throughput batch: THROUGHPUT_BATCH, or fewer where a batch would take more
    than about THROUGHPUT_SECONDS (a detector's frame costs 6-7x a digit tile: 1,000 frames
    four times over, on two runtimes and two files, took 36 of its export's 63 s)."""
    return int(min(THROUGHPUT_BATCH, max(32, THROUGHPUT_SECONDS / max(batch1_seconds, 1e-9))))


def measure_latency(runtimes: dict[str, Model], seed: int = 0) -> dict:
    """Per runtime: batch-1 p50/p99 ms after warm-up, and images/s at throughput_batch's size."""
    out = {}
    for name, rt in runtimes.items():
        shape = [d if isinstance(d, int) else 1 for d in rt.info.input_shape]
        one = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        for _ in range(20):
            rt.logits(one)
        times = []
        for _ in range(LATENCY_RUNS):
            t = time.perf_counter()
            rt.logits(one)
            times.append(time.perf_counter() - t)
        p50_ms = float(np.median(times) * 1e3)
        batch = throughput_batch(p50_ms / 1e3)
        many = np.repeat(one, batch, axis=0)
        rt.logits(many)
        t = time.perf_counter()
        for _ in range(3):
            rt.logits(many)
        per_batch = (time.perf_counter() - t) / 3
        out[name] = {"batch1_p50_ms": p50_ms,
                     "batch1_p99_ms": float(np.percentile(times, 99) * 1e3),
                     "images_per_s": batch / per_batch, "throughput_batch": batch}
    return out


def to_markdown(report: dict) -> str:
    name = Path(report["model"]).name
    verdict = "passed" if report["passed"] else "REJECTED"
    mask = report.get("task") == "ink-detector"
    if report["kind"] == "float32":
        rule = f"max |logit difference| <= {report['atol']:g} and 100% top-1 agreement with PyTorch"
    elif mask:
        rule = f"IoU with the true ink within {report['max_iou_drop']:g} of PyTorch's"
    else:
        rule = f"test accuracy within {report['max_accuracy_drop_points']:g} points of PyTorch"
    v = report["versions"]
    lines = [
        f"# {name}: export report", "",
        f"Verification **{verdict}** ({report['kind']}; rule: {rule}).", "",
        "| | |", "|---|---|",
        f"| file | `{report['model']}`, {report['onnx_bytes'] / 1e6:.3f} MB |",
        f"| sha256 | `{report['onnx_sha256']}` |",
        f"| checkpoint | `{report['checkpoint']}`, sha256 `{report['checkpoint_sha256'][:16]}...` |",
        f"| exporter | {report['exporter']}, opset {report['opset']}, input {report['input_shape']} |",
        f"| versions | torch {v['torch']}, onnx {v['onnx']}, onnxruntime {v['onnxruntime']}, opencv {v['opencv']} |",
        f"| onnx.checker | {report['onnx_checker']} |",
        "", "## Parity with PyTorch", "",
        ("| inputs | n | max \\|logit difference\\| | marks agreeing | pixels marked differently |" if mask else
         "| inputs | n | max \\|logit difference\\| | top-1 agreement | differing predictions |"),
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c['name']} | {c['count']:,} | {c['max_abs_logit_diff']:.2e} | {c['top1_agreement']:.2%} | "
              f"{c['differing_predictions']} |" for c in report["comparisons"]]
    lines += ["", f"Runtime preprocessing (PNG files read by run-digit's code) vs the training transform: "
                  f"max |difference| {report['preprocess_max_abs_diff']:.1e}.", ""]
    if mask:
        lines += [f"## IoU with the true digit ink ({report['scenes']} held-out scenes)", "", "| runtime | IoU |", "|---|---|"]
        lines += [f"| {rt} | {v:.3f} |" for rt, v in report["iou_with_true_ink"].items()]
    elif report.get("task") == "sequence-reader":
        lines += [f"## Strips of 2-4 touching MNIST test digits read exactly ({report['strips']} held-out strips)", "",
                  f"Every runtime decodes every strip to the text PyTorch reads: {report['same_text_as_pytorch']}.", "",
                  "| runtime | exact match |", "|---|---|"]
        lines += [f"| {rt} | {v:.2%} |" for rt, v in report["exact_match"].items()]
    else:
        lines += ["## Test accuracy", "", "| runtime | accuracy |", "|---|---|",
                  f"| PyTorch (training transform) | {report['pytorch_test_accuracy']:.2%} |"]
        lines += [f"| {c['name'].split(': ')[-1]} (image files) | {c['accuracy']:.2%} |"
                  for c in report["comparisons"] if "accuracy" in c]
    if "latency" in report:
        lines += ["", "## Latency (this machine, CPU)", "",
                  "| runtime | batch 1 p50 ms | batch 1 p99 ms | images/s | at batch |", "|---|---|---|---|---|"]
        lines += [f"| {rt} | {m['batch1_p50_ms']:.3f} | {m['batch1_p99_ms']:.3f} | {m['images_per_s']:,.0f} | "
                  f"{m['throughput_batch']} |"
                  for rt, m in report["latency"].items()]
    if "float32" in report:
        lines += _beside_float(report)
    return "\n".join(lines) + "\n"


def _beside_float(report: dict) -> list[str]:
    f = report["float32"]
    rows = ["", "## INT8 beside float32", "", "| | float32 | int8 | int8 / float32 |", "|---|---|---|---|",
            f"| size (MB) | {f['onnx_bytes'] / 1e6:.3f} | {report['onnx_bytes'] / 1e6:.3f} | "
            f"{report['onnx_bytes'] / f['onnx_bytes']:.2f}x |"]
    float_by_name = {c["name"]: c for c in f["comparisons"]}
    for c in report["comparisons"]:
        fc = float_by_name.get(c["name"])
        if fc is not None and "accuracy" in c:
            rt = c["name"].split(": ")[-1]
            rows.append(f"| accuracy, {rt} | {fc['accuracy']:.2%} | {c['accuracy']:.2%} | "
                        f"{(c['accuracy'] - fc['accuracy']) * 100:+.2f} points |")
    for rt, m in report.get("latency", {}).items():
        fm = f["latency"][rt]
        rows.append(f"| batch 1 p50 ms, {rt} | {fm['batch1_p50_ms']:.3f} | {m['batch1_p50_ms']:.3f} | "
                    f"{m['batch1_p50_ms'] / fm['batch1_p50_ms']:.2f}x |")
        rows.append(f"| images/s, {rt} | {fm['images_per_s']:,.0f} | {m['images_per_s']:,.0f} | "
                    f"{m['images_per_s'] / fm['images_per_s']:.2f}x |")
    return rows
