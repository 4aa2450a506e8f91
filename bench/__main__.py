"""make bench: start-up, latency, throughput and video speed, each beside its baseline.

Every figure is a median over repeated runs after warm-up, with min and max; ratios are
computed run by run (ours / baseline measured back to back), so machine noise hits both.
Needs artifacts/digits.pt and artifacts/digits.onnx (make train export).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from digitpipe.runtime.digits import FinderSettings

ROOT = Path(__file__).resolve().parents[1]


def stats(values) -> dict:
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1], "n": len(values)}


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q))


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


def cold_start(model: Path, ckpt: Path, image: Path, repeats: int) -> dict:
    """run-digit on one image vs the bare imports vs a PyTorch predictor, interleaved."""
    py = sys.executable
    cmds = {
        "floor: import cv2, onnxruntime, numpy": [py, "-c", "import cv2, onnxruntime, numpy"],
        "run-digit --image (onnxruntime)": [py, "-m", "digitpipe.runtime", "--no-window", "--model", str(model), "--image", str(image)],
        "run-digit --image (opencv)": [py, "-m", "digitpipe.runtime", "--no-window", "--backend", "opencv", "--model", str(model), "--image", str(image)],
        "pytorch predictor (checkpoint)": [py, "-m", "bench.torch_predict", str(ckpt), str(image)],
    }
    # A pip-installed runtime ships compiled bytecode; an editable checkout under
    # PYTHONDONTWRITEBYTECODE would recompile runtime/ on every start instead.
    subprocess.run([py, "-m", "compileall", "-q", str(ROOT / "runtime")], check=True)
    for cmd in cmds.values():  # warm the file cache
        wall(cmd)
    times = {k: [] for k in cmds}
    for _ in range(repeats):
        for k, cmd in cmds.items():
            times[k].append(wall(cmd))
    floor = times["floor: import cv2, onnxruntime, numpy"]
    return {k: {**stats(v), "ratio_to_floor": stats([a / b for a, b in zip(v, floor)])} for k, v in times.items()}


def load_contenders(model: Path, ckpt: Path):
    """(PyTorch model, dataset spec, {runtime: Model}) for side-by-side timing; the INT8 copy too when present."""
    from digitpipe.export.quantize import int8_path
    from digitpipe.runtime.model import Model
    from digitpipe.train import checkpoint
    from digitpipe.train.datasets import DatasetSpec

    ck = checkpoint.load(ckpt)
    int8 = int8_path(model)
    files = {"": model, " int8": int8} if int8.is_file() else {"": model}
    runners = {f"{backend}{kind}": Model(path, backend=backend, device="cpu")
               for kind, path in files.items() for backend in ("onnxruntime", "opencv")}
    return checkpoint.model_from_checkpoint(ck), DatasetSpec.from_dict(ck["dataset"]), runners


def warm_latency(model: Path, ckpt: Path, tile: np.ndarray, repeats: int) -> dict:
    """One image end to end in a warm process: tile -> blob -> logits -> label."""
    import torch

    from digitpipe.train.data import normalize

    net, spec, runners = load_contenders(model, ckpt)

    def torch_once():
        with torch.inference_mode():
            x = normalize(torch.from_numpy(tile)[None, None], spec)
            return int(net(x).argmax())

    fns = {f"{name}": (lambda m=m: int(m.classify([tile])[0][0])) for name, m in runners.items()}
    fns["pytorch eager"] = torch_once
    out = {}
    for name, fn in fns.items():
        for _ in range(50):
            fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        out[name] = {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "min_ms": min(times)}
    return out


def throughput(model: Path, ckpt: Path, images: np.ndarray, repeats: int, batch: int = 1000) -> dict:
    import torch

    from digitpipe.train.data import normalize

    net, spec, runners = load_contenders(model, ckpt)
    tiles = list(images)

    def run_runtime(m):
        for i in range(0, len(tiles), batch):
            m.logits(m.blob(tiles[i : i + batch]))

    def run_torch():
        with torch.inference_mode():
            x = torch.from_numpy(images)[:, None]
            for i in range(0, len(x), batch):
                net(normalize(x[i : i + batch], spec))

    fns = {name: (lambda m=m: run_runtime(m)) for name, m in runners.items()}
    fns["pytorch eager"] = run_torch
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(len(tiles) / (time.perf_counter() - t))
    base = times["pytorch eager"]
    return {k: {**stats(v), "ratio_to_pytorch": statistics.median(a / b for a, b in zip(v, base))} for k, v in times.items()}


def video_setups(model: Path) -> list[tuple[str, str, Path, Path | None, Path | None, FinderSettings]]:
    """(backend, name, classifier, detector or None, sequence reader or None, finder settings)
    for each way of reading video that the files beside the model allow: the ink detector, its
    INT8 copy (with the INT8 classifier when there is one: the INT8 path), each with the sequence
    reader when there is one (and the ink detector without it, and without the finder's check
    for ink that runs on beyond its mark, for their cost), and the finder's rules alone."""
    from digitpipe.export.quantize import int8_path
    from digitpipe.runtime.detector import DETECTOR_INT8_NAME, DETECTOR_NAME
    from digitpipe.runtime.sequence import SEQUENCE_NAME

    sequence = model.with_name(SEQUENCE_NAME) if model.with_name(SEQUENCE_NAME).is_file() else None
    shipped = FinderSettings()
    ways = []
    if model.with_name(DETECTOR_NAME).is_file():
        ways.append(("ink detector", model, model.with_name(DETECTOR_NAME), sequence, shipped))
        if sequence:
            ways.append(("ink detector, no sequence reader", model, model.with_name(DETECTOR_NAME), None, shipped))
        ways.append(("ink detector, no run-on check", model, model.with_name(DETECTOR_NAME), sequence,
                     dataclasses.replace(shipped, run_on=0.0)))
    if model.with_name(DETECTOR_INT8_NAME).is_file():
        int8 = int8_path(model)
        ways.append(("INT8 classifier and detector", int8, model.with_name(DETECTOR_INT8_NAME), sequence, shipped)
                    if int8.is_file() else ("INT8 detector", model, model.with_name(DETECTOR_INT8_NAME), sequence, shipped))
    ways.append(("rules alone", model, None, None, shipped))
    return [(backend, *way) for backend in ("onnxruntime", "opencv") for way in ways]


def video_fps(model: Path, images: np.ndarray, labels: np.ndarray, frames: int, repeats: int) -> dict:
    """640x480 frames of 1-4 digit numbers through DigitReader.read one at a time, through
    read_stream (the next frame's ink detector beside this frame's reading, as run-digit --video
    and --camera read), and read_stream on the frames decoded from a video file; with the ink
    detector and sequence reader beside the model (when there are) and with the finder's rules alone."""
    from digitpipe.runtime.detector import InkDetector
    from digitpipe.runtime.sequence import SequenceReader
    from digitpipe.runtime.sources import open_video
    from digitpipe.train.photos import render_photo
    from digitpipe.runtime.model import Model
    from digitpipe.runtime.reader import DigitReader

    rng = np.random.default_rng(0)
    clips = []
    for _ in range(frames):
        idx = rng.choice(len(images), int(rng.integers(1, 5)), replace=False)
        clips.append(render_photo([images[i] for i in idx], rng))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
        for f in clips:
            writer.write(f)
        writer.release()
        for backend, name, classifier, detector, sequence, finder in video_setups(model):
            ink = InkDetector.load(detector, backend, "cpu") if detector else None
            touching = SequenceReader.load(sequence, backend, "cpu") if sequence else None
            reader = DigitReader(Model(classifier, backend=backend, device="cpu"), finder=finder, detector=ink,
                                 sequence=touching)
            for f in clips[:20]:
                reader.read(f)
            fps, fps_stream, fps_decode, locate, infer = [], [], [], [], []
            for _ in range(repeats):
                t = time.perf_counter()
                for f in clips:
                    r = reader.read(f)
                    locate.append(r.ms["locate"])
                    infer.append(r.ms["infer"])
                fps.append(len(clips) / (time.perf_counter() - t))
                t = time.perf_counter()
                for _ in reader.read_stream(clips):  # as run-digit --video reads: the next detector beside
                    pass
                fps_stream.append(len(clips) / (time.perf_counter() - t))
                t = time.perf_counter()
                n = sum(1 for _ in reader.read_stream(open_video(str(video))))
                fps_decode.append(n / (time.perf_counter() - t))
            out[f"{backend}, {name}"] = {
                "fps_in_memory": stats(fps), "fps_stream": stats(fps_stream), "fps_with_decoding": stats(fps_decode),
                "locate_ms_p50": percentile(locate, 50), "infer_ms_p50": percentile(infer, 50)}
    return out


CLASSIC = "classic: two-conv CNN, Adam 1e-3, batch 64, no augmentation, 5 epochs"


def training(data_dir: str = "data") -> dict:
    """Wall time until the test accuracy first reaches 99.0%: the classic recipe vs ours.

    One run of each (they take minutes); the test set is scored after every epoch with the
    training clock stopped.
    """
    from digitpipe.train.data import load_dataset
    from digitpipe.train.datasets import MNIST
    from digitpipe.train.engine import TrainConfig, accuracy, pick_device, predict, run

    _, test = load_dataset(MNIST, Path(data_dir), log=lambda *_: None)
    device = pick_device("auto")
    test = test.to(device)
    recipes = {
        CLASSIC: dict(arch="classic", optimizer="adam", schedule="constant", lr=1e-3, weight_decay=0.0,
                      label_smoothing=0.0, ema=0.0, batch_size=64, epochs=5, augment=False, reject_class=False),
        "default: make train (digitnet, AdamW one-cycle, EMA, augmentation, 'no digit' class, 8 epochs)": {},
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(recipes.items()):
            curve = []

            def score(epoch, model, elapsed, curve=curve):
                curve.append({"epoch": epoch, "elapsed_s": elapsed, "test_acc": accuracy(*predict(model, test, MNIST, device))})
                print(f"  {name[:7]} epoch {epoch}: test {curve[-1]['test_acc']:.4f} at {elapsed:.0f} s", file=sys.stderr)

            cfg = TrainConfig(data_dir=data_dir, out=f"{tmp}/{i}.pt", run_dir=f"{tmp}/{i}", **overrides)
            run(cfg, log=lambda *_: None, on_epoch=score)
            reached = next((c["elapsed_s"] for c in curve if c["test_acc"] >= 0.99), None)
            out[name] = {"curve": curve, "time_to_99_s": reached, "total_s": curve[-1]["elapsed_s"],
                         "final_test_acc": curve[-1]["test_acc"]}
    classic_total = out[CLASSIC]["total_s"]
    for v in out.values():  # the yardstick: time to 99.0% over the classic recipe's whole run
        v["time_to_99_over_classic_total"] = v["time_to_99_s"] / classic_total if v["time_to_99_s"] else None
    return out


def finder_scale(model: Path, images: np.ndarray, labels: np.ndarray, count: int = 300) -> dict:
    """Exact-match reading and FPS on generated photos for several detection resolutions."""
    from digitpipe.train.photos import render_photo
    from digitpipe.runtime.digits import FinderSettings
    from digitpipe.runtime.model import Model
    from digitpipe.runtime.reader import DigitReader

    rng = np.random.default_rng(123)
    photos = []
    for _ in range(count):
        idx = rng.choice(len(images), int(rng.integers(1, 5)), replace=False)
        photo = render_photo([images[i] for i in idx], rng, digit_height=rng.uniform(0.08, 0.5) * 480)
        photos.append((photo, "".join(str(labels[i]) for i in idx)))
    net = Model(model, device="cpu")
    out = {}
    for side in (320, 480, 640):
        reader = DigitReader(net, finder=FinderSettings(work_side=side))
        for photo, _ in photos[:20]:
            reader.read(photo)
        t = time.perf_counter()
        right = sum(reader.read(photo).text == text for photo, text in photos)
        out[str(side)] = {"exact_match": right / count, "fps": count / (time.perf_counter() - t), "photos": count}
    return out


def machine() -> dict:
    import onnxruntime
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": str(torch.__version__), "onnxruntime": onnxruntime.__version__,
            "opencv": cv2.__version__, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="artifacts/digits.onnx", help="the classifier to time")
    p.add_argument("--checkpoint", default="artifacts/digits.pt",
                   help="its checkpoint: the PyTorch baseline of the cold-start, latency and throughput rows")
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions of each measurement")
    p.add_argument("--out", default="artifacts/bench.json", help="where the figures are written (JSON)")
    p.add_argument("--only", nargs="*", default=["cold", "latency", "throughput", "video", "finder", "training"],
                   help="which benchmarks; training alone takes about 12 minutes here")
    args = p.parse_args(argv)
    model, ckpt = Path(args.model), Path(args.checkpoint)
    # The PyTorch checkpoint is the baseline of the cold-start, latency and throughput rows only.
    needed = [model] + ([ckpt] if {"cold", "latency", "throughput"} & set(args.only) else [])
    missing = [str(f) for f in needed if not f.is_file()]
    if missing:
        print(f"error: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed; run `make train export` first",
              file=sys.stderr)
        return 2
    from bench.make_photo import mnist_test_tiles
    from digitpipe.train.photos import render_photo

    images, labels = mnist_test_tiles()
    results = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "one.png"
        cv2.imwrite(str(photo), render_photo([images[0]], np.random.default_rng(0)))
        if "cold" in args.only:
            results["cold_start_s"] = cold_start(model, ckpt, photo, args.repeats)
    if "latency" in args.only:
        results["warm_latency"] = warm_latency(model, ckpt, images[0], 100 * args.repeats)
    if "throughput" in args.only:
        results["throughput_images_per_s"] = throughput(model, ckpt, images, args.repeats)
    if "video" in args.only:
        results["video_640x480"] = video_fps(model, images, labels, 150, max(3, args.repeats // 2))
    if "finder" in args.only:
        results["finder_work_side"] = finder_scale(model, images, labels)
    if "training" in args.only:
        results["training_time_to_99"] = training()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"\nwrote {args.out}")
    return 0


def _ratio(r) -> str:
    return f"{r:.2f}" if r is not None else "-"


def _reached(v: dict) -> str:
    return f"{v['time_to_99_s']:.0f} s" if v["time_to_99_s"] is not None else "not reached"


# (result key, column headings after the name, one row's cells)
TABLES = [
    ("cold_start_s", "cold start, one image | median s | min | max | x floor (median)",
     lambda v: f"{v['median']:.3f} | {v['min']:.3f} | {v['max']:.3f} | {v['ratio_to_floor']['median']:.2f}"),
    ("warm_latency", "warm single image (28x28 tile) | p50 ms | p99 ms",
     lambda v: f"{v['p50_ms']:.3f} | {v['p99_ms']:.3f}"),
    ("throughput_images_per_s", "10k MNIST test images, batch 1000 | median img/s | min | max | x pytorch",
     lambda v: f"{v['median']:.0f} | {v['min']:.0f} | {v['max']:.0f} | {v['ratio_to_pytorch']:.2f}"),
    ("video_640x480", "640x480 video, whole reading pipeline | FPS a frame at a time | FPS streamed (run-digit) | "
     "FPS streamed incl. decoding | locate ms p50 | infer ms p50",
     lambda v: f"{v['fps_in_memory']['median']:.0f} | {v['fps_stream']['median']:.0f} | {v['fps_with_decoding']['median']:.0f} | "
               f"{v['locate_ms_p50']:.2f} | {v['infer_ms_p50']:.2f}"),
    ("finder_work_side", "detection resolution (long side) | exact match, 300 photos of 1-4 digits | FPS",
     lambda v: f"{v['exact_match']:.1%} | {v['fps']:.0f}"),
    ("training_time_to_99", "training recipe | time to 99.0% test | x classic total | total | final test acc",
     lambda v: f"{_reached(v)} | {_ratio(v['time_to_99_over_classic_total'])} | {v['total_s']:.0f} s | "
               f"{v['final_test_acc']:.2%}"),
]


def format_table(r: dict) -> str:
    lines = [f"machine: {r['machine']}"]
    for key, heading, row in TABLES:
        if key in r:
            lines += ["", f"| {heading} |", "|---" * (heading.count("|") + 1) + "|"]
            lines += [f"| {name} | {row(v)} |" for name, v in r[key].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
