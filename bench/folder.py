"""python -m bench.folder: training on a folder of photos, streamed vs decoded into memory.

  python -m bench.folder make DIR --count 20000      # 640x480 JPEGs: DIR/train/<class>/, DIR/val/<class>/
  python -m bench.folder run DIR --loading stream --workers 2

`run` starts `python -m digitpipe.train`'s engine in a child process for one epoch and reports, for
the child and its DataLoader workers together, the peak resident memory (PSS summed over
the process tree, sampled every 0.5 s), the seconds from start to the first optimisation step,
the epoch's wall time and its training images per second.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("disc", "square")
W, H = 640, 480


def photo(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A phone-sized photo of a red disc or a blue square on lit, noisy paper (BGR)."""
    yy, xx = np.mgrid[0:H:8, 0:W:8].astype(np.float32)
    light = 170 + 50 * np.cos(rng.uniform(0, 6.3) + xx / W * 3) * np.sin(yy / H * 2 + rng.uniform(0, 6.3))
    img = cv2.resize(light, (W, H), interpolation=cv2.INTER_LINEAR)[..., None] * rng.uniform(0.85, 1.0, 3)
    img = np.clip(img + rng.normal(0, 6, (H // 4, W // 4, 1)).repeat(4, 0).repeat(4, 1), 0, 255).astype(np.uint8)
    cx, cy, r = int(rng.integers(160, 480)), int(rng.integers(120, 360)), int(rng.integers(50, 110))
    if kind == "disc":
        cv2.circle(img, (cx, cy), r, (40, 40, 220), -1, cv2.LINE_AA)
    else:
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), (220, 60, 40), -1, cv2.LINE_AA)
    return img


def _write(job: tuple[str, str, int]) -> None:
    path, kind, seed = job
    cv2.imwrite(path, photo(kind, np.random.default_rng(seed)), [cv2.IMWRITE_JPEG_QUALITY, 90])


def make_folder(root: Path, count: int, val_share: float = 0.1, seed: int = 0) -> None:
    jobs = []
    for part, n in (("train", round(count * (1 - val_share))), ("val", round(count * val_share))):
        for k, kind in enumerate(CLASSES):
            folder = root / part / kind
            folder.mkdir(parents=True, exist_ok=True)
            share = n // len(CLASSES)
            stream = seed * 4 + ("train", "val").index(part) * 2 + k  # one seed sequence per folder
            jobs += [(str(folder / f"{i:06d}.jpg"), kind, stream * 10_000_000 + i) for i in range(share)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write, jobs, chunksize=64)


CHILD = """
import sys, time
t0 = time.perf_counter()
import digitpipe.train.engine as engine
real = engine.training_input
def first_step(*a, **k):
    if not getattr(first_step, "seen", False):
        first_step.seen = True
        print(f"FIRST_STEP {time.perf_counter() - t0:.2f}", file=sys.stderr, flush=True)
    return real(*a, **k)
engine.training_input = first_step
cfg = engine.TrainConfig(**__import__("json").loads(sys.argv[1]))
summary = engine.run(cfg, log=lambda *a: None)
print(f"EPOCH {summary['history'][0]['elapsed_s']:.2f}", file=sys.stderr, flush=True)
"""


def _tree_rss(pid: int) -> int:
    """Resident bytes of pid and all its descendants (proportional set size, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:  # PSS: pages shared with the parent after fork count once across the tree, not per worker
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        total += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
    return total


def run_epoch(folder: Path, loading: str, workers: int, image_size: int, arch: str, batch_size: int, out: Path) -> dict:
    cfg = dict(dataset=f"imagefolder:{folder}", loading=loading, workers=workers, image_size=image_size, arch=arch,
               epochs=1, batch_size=batch_size, ema=0.0, val_size=200, out=str(out / "m.pt"), run_dir=str(out / "run"))
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(child.pid))
        time.sleep(0.5)
    err = child.stderr.read()
    marks = dict(re.findall(r"(FIRST_STEP|EPOCH) ([0-9.]+)", err))  # amid tqdm's carriage returns
    if child.returncode != 0 or "EPOCH" not in marks:
        raise RuntimeError(f"training failed: {err.strip().splitlines()[-1] if err.strip() else child.returncode}")
    images = sum(1 for _ in (folder / "train").rglob("*.jpg")) - 200
    epoch = float(marks["EPOCH"])
    return {"loading": loading, "workers": workers, "image_size": image_size, "arch": arch,
            "peak_pss_gb": round(peak / 2**30, 3), "first_step_s": float(marks["FIRST_STEP"]),
            "epoch_s": round(epoch, 1), "images_per_s": round(images / epoch, 1),
            "wall_s": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.folder", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write a folder of generated photos",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("folder", type=Path)
    m.add_argument("--count", type=int, default=20000, help="photos in all (a tenth go to val/)")
    r = sub.add_parser("run", help="train one epoch on a folder and measure it",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("folder", type=Path)
    r.add_argument("--loading", default="stream", choices=["memory", "stream"],
                   help="decode the folder once into memory, or stream it from disk")
    r.add_argument("--workers", type=int, nargs="+", default=[2], help="one run per count (stream)")
    r.add_argument("--image-size", type=int, default=128, help="side the images are resized to")
    r.add_argument("--arch", default="cifarnet", help="the network trained (train.models)")
    r.add_argument("--batch-size", type=int, default=64, help="images per step")
    r.add_argument("--out", type=Path, default=Path("artifacts/bench-folder"),
                   help="where the epoch's checkpoint and run folder go (the figures are printed)")
    args = p.parse_args(argv)
    if args.command == "make":
        t = time.perf_counter()
        make_folder(args.folder, args.count)
        print(f"wrote {args.count} photos under {args.folder} in {time.perf_counter() - t:.0f} s")
        return 0
    for workers in args.workers if args.loading == "stream" else [0]:
        print(json.dumps(run_epoch(args.folder, args.loading, workers, args.image_size, args.arch, args.batch_size,
                                   args.out)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
