"""python -m bench.lofo: leave-one-family-out generalisation of the ink detector.

For each scene family of train/scenes.py, an ink detector is trained with the shipped
recipe (train/detector.py) on scenes that never show that family, exported and verified
like the shipped one (export/detector.py), and the reader with it is scored on the
family's held-out photos of bench.wild (MNIST *test* digits). The figure says how the
reader does on a condition no training scene had: what a new kind of page or light would
get. Slow: one detector per family (about 5 minutes each on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.wild import evaluate, scene_sets
from digitpipe.train.detector import DetectorConfig
from digitpipe.train.scenes import FAMILIES


def detector_without(family: str, folder: Path, data_dir: str, log, generic: bool = False) -> Path:
    """Train, export and verify the detector that never saw `family` (reused when present)."""
    from digitpipe.export.detector import build_parser as export_parser, export_detector
    from digitpipe.train.detector import save_detector, train_detector

    onnx_path = folder / f"without-{family}{'-generic' if generic else ''}.onnx"
    if onnx_path.is_file():
        return onnx_path
    cfg = DetectorConfig(exclude=(family,), data_dir=data_dir, out=str(onnx_path.with_suffix(".pt")), generic=generic)
    net, result = train_detector(cfg, log=log)
    save_detector(Path(cfg.out), net, cfg, result)
    report = export_detector(export_parser().parse_args(["--checkpoint", cfg.out, "--out", str(onnx_path),
                                                         "--data-dir", data_dir]), log=log)
    if not report["passed"]:
        raise RuntimeError(f"the detector without {family} failed verification ({report['report_path']})")
    return onnx_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lofo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="artifacts/digits.onnx", help="the classifier")
    p.add_argument("--count", type=int, default=300, help="photos per family (bench.wild's set)")
    p.add_argument("--folder", default="artifacts/lofo", type=Path, help="where the detectors are kept")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families to leave out in turn")
    p.add_argument("--data-dir", default="data", help="where MNIST is found or fetched to")
    p.add_argument("--generic", action=argparse.BooleanOptionalAction, default=DetectorConfig().generic,
                   help="train with train.detector --generic (the shipped recipe's default)")
    p.add_argument("--seed", type=int, default=2026, help="draws the photos (bench.wild's --seed)")
    p.add_argument("--out", default="artifacts/lofo.json", help="where the figures are written (JSON)")
    p.add_argument("--sequence", default="auto", metavar="ONNX|auto|none",
                   help="sequence reader of touching digits, as run-digit's --sequence (the sequence reader does "
                        "not learn the scene families: it reads the ink the detector left)")
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown or not families:
        p.error(f"--families {args.families!r}: {'unknown ' + ', '.join(unknown) if unknown else 'none named'}; "
                f"the families are {', '.join(FAMILIES)}")
    from digitpipe.runtime.sequence import sequence_path

    sequence = sequence_path(args.sequence, args.model)
    t = time.perf_counter()
    sets = scene_sets(args.count, args.seed)
    results = {}
    for family in families:
        detector = detector_without(family, args.folder, args.data_dir, generic=args.generic,
                                    log=lambda *a: print(*a, file=sys.stderr, flush=True))
        row = evaluate(args.model, args.count, only=f"scene:{family}", detector=str(detector), sets=sets,
                       sequence=str(sequence) if sequence else None)[f"scene:{family}"]
        results[family] = row
        print(f"{family}: left out {row['exact@0.55']:.1%}", file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("| scene family | photos | exact match, detector trained without the family (min-confidence 0.55) | 95% interval |")
    print("|---|---|---|---|")
    for family, row in results.items():
        lo, hi = row["interval"]
        print(f"| {family} | {row['count']} | {row['exact@0.55']:.1%} | {lo:.0%}-{hi:.0%} |")
    print(f"\n{time.perf_counter() - t:.0f} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
