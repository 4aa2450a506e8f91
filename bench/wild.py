"""python -m bench.wild: exact-match reading on a held-out "in the wild" set.

Generated here from data the model never trained on, seeded, in memory:
  mnist   single MNIST *test* digits photographed: scale, place, rotation, blur, light, noise, JPEG
  uci     scikit-learn's UCI optical digits (8x8 scans by other writers), photographed the same way
  printed digits in OpenCV's Hershey fonts and the TrueType fonts found here, photographed
  numbers 3-5 digit numbers of MNIST test digits
  touching 2-4 digit numbers whose digits touch or overlap
  blank   pages with no digit (blank, shadows, paper texture): must read ""
  not-digits  letters, a doodled face, scribbles: must read "" (this sets --min-confidence)
  faces   the 100 photographed faces of scikit-image's LFW sample, enlarged: must read ""
  photos  scikit-image's sample photographs (people, a cat, coins, gravel, a rocket, a page
          of text, ...), whole and cropped: must read ""
and the everyday scene families of train/scenes.py, 1-4 MNIST test digits each: ruled
notebook paper, squared paper, form boxes, a hard-edged shadow, dim light, glare, coloured
ink on coloured paper, the page at an angle on a desk (each kind "scene:<family>"); and the
same pages past the families' range (each kind "beyond:<name>"): a shadow deeper than any the
families draw, a dimmer room, pencil-faint ink. No training scene reaches these; a rule fitted
to the families' range shows here.
The model's "no digit" class was trained on other generated families (train/negatives.py);
none of these images.
Beside run-digit's reader, the classic approach (the whole frame resized to 28x28) runs on
the same photos.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from digitpipe.train.photos import HERSHEY, render_photo
from digitpipe.train.scenes import FAMILIES, LIGHT, compose_scene, dim, render_scene, shadow

# "beyond:<name>": compose_scene's conditions and arguments past train/scenes.py's ranges (the
# families: shaded side at 35-65% of the light taken, a dim room at 12-30% of it, ink 25-70 grey).
BEYOND = {
    "shadow": (("shadow",), {"light": LIGHT | {"shadow": partial(shadow, depth=(0.65, 0.8))}}),
    "dim": (("dim",), {"light": LIGHT | {"dim": partial(dim, light=(0.06, 0.12))}}),
    "faint": ((), {"ink_shade": (110, 150)}),
}



def degrade(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small rotation of the whole shot and some defocus, as a hand-held phone gives."""
    h, w = photo.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-12, 12), 1.0)
    photo = cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    sigma = rng.uniform(0, 1.5)
    return cv2.GaussianBlur(photo, (0, 0), sigma) if sigma > 0.3 else photo


def printed_tile(digit: str, rng: np.random.Generator, ttf_fonts: list[str]) -> np.ndarray:
    """A light-on-dark image of one printed digit in a random font."""
    canvas = np.zeros((200, 200), np.uint8)
    choice = int(rng.integers(len(HERSHEY) + len(ttf_fonts)))
    if choice < len(HERSHEY):
        thickness = int(rng.integers(3, 12))
        cv2.putText(canvas, digit, (40, 160), HERSHEY[choice], 5, 255, thickness, cv2.LINE_AA)
    else:
        from PIL import Image, ImageDraw, ImageFont

        img = Image.fromarray(canvas)
        ImageDraw.Draw(img).text((40, 10), digit, fill=255, font=ImageFont.truetype(ttf_fonts[choice - len(HERSHEY)], 150))
        canvas = np.asarray(img)
    return canvas


def blank_page(rng: np.random.Generator) -> np.ndarray:
    photo = render_photo([np.zeros((28, 28), np.uint8)], rng)  # the same paper, no ink
    kind = int(rng.integers(3))
    if kind == 1:  # a hard shadow across the page
        x = int(rng.integers(100, 540))
        photo[:, :x] = (photo[:, :x] * rng.uniform(0.5, 0.8)).astype(np.uint8)
    elif kind == 2:  # paper texture
        noise = cv2.GaussianBlur(rng.normal(0, 12, photo.shape[:2]).astype(np.float32), (0, 0), 3)
        photo = np.clip(photo + noise[..., None], 0, 255).astype(np.uint8)
    return photo


def not_a_digit_tile(rng: np.random.Generator) -> np.ndarray:
    """Ink that is no digit: a letter, a doodled face, or a scribble (light on dark)."""
    canvas = np.zeros((200, 200), np.uint8)
    kind = int(rng.integers(3))
    if kind == 0:
        letter = "ABCDEFGHKMNPRTUVWXYZ"[int(rng.integers(20))]
        cv2.putText(canvas, letter, (30, 170), HERSHEY[int(rng.integers(len(HERSHEY)))], 5, 255, int(rng.integers(4, 12)), cv2.LINE_AA)
    elif kind == 1:
        cv2.circle(canvas, (100, 100), 80, 255, 6, cv2.LINE_AA)
        cv2.circle(canvas, (70, 80), 10, 255, -1, cv2.LINE_AA)
        cv2.circle(canvas, (130, 80), 10, 255, -1, cv2.LINE_AA)
        cv2.ellipse(canvas, (100, 120), (40, 25), 0, 20, 160, 255, 6, cv2.LINE_AA)
    else:
        points = rng.integers(20, 180, (int(rng.integers(5, 12)), 2)).astype(np.int32)
        cv2.polylines(canvas, [points], False, 255, int(rng.integers(4, 10)), cv2.LINE_AA)
    return canvas


def real_photos() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(faces, photographs) without a digit, from scikit-image's bundled data."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    faces = [(f * 255).astype(np.uint8) for f in np.load(folder / "lfw_subset.npy")[:100]]  # the rest are not faces
    # text.png (handwritten formulas) holds digits; the chessboards are drawn, not photographed.
    names = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg")
                   and p.name != "text.png" and not p.name.startswith("chessboard"))
    photos = [img for img in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in names) if img is not None]
    return faces, photos


def photo_view(photo: np.ndarray, rng: np.random.Generator, side: int = 640, crop: bool = True) -> np.ndarray:
    """The whole photo or (crop) a random crop of at least half of it, scaled to side px on
    its longer side, as JPEG."""
    h, w = photo.shape[:2]
    if crop and rng.random() < 0.7:
        ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        photo = photo[y : y + ch, x : x + cw]
    f = side / max(photo.shape[:2])
    photo = cv2.resize(photo, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    ok, jpg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR)


DRAWN = ("mnist", "uci", "printed", "numbers", "touching", "blank", "not-digits")  # drawn one of each per step
KINDS = (*DRAWN, "faces", "photos", *(f"scene:{f}" for f in FAMILIES), *(f"beyond:{b}" for b in BEYOND))


def wild_set(count: int, seed: int = 2026) -> dict[str, list[tuple[np.ndarray, str]]]:
    from sklearn.datasets import load_digits

    from bench.make_photo import mnist_test_tiles

    rng = np.random.default_rng(seed)
    images, labels = mnist_test_tiles()
    uci = load_digits()
    uci_tiles = np.clip(uci.images * 16, 0, 255).astype(np.uint8)
    ttf = sorted(glob.glob("/usr/share/fonts/truetype/*/*.ttf"))[:12]
    sets: dict[str, list] = {k: [] for k in DRAWN}
    for _ in range(count):
        i = int(rng.integers(len(images)))
        sets["mnist"].append((degrade(render_photo([images[i]], rng), rng), str(labels[i])))
        j = int(rng.integers(len(uci_tiles)))
        tile = cv2.resize(uci_tiles[j], (32, 32), interpolation=cv2.INTER_CUBIC)
        sets["uci"].append((degrade(render_photo([tile], rng), rng), str(uci.target[j])))
        d = str(int(rng.integers(10)))
        sets["printed"].append((degrade(render_photo([printed_tile(d, rng, ttf)], rng), rng), d))
        idx = rng.choice(len(images), int(rng.integers(3, 6)), replace=False)
        sets["numbers"].append((degrade(render_photo([images[k] for k in idx], rng), rng), "".join(str(labels[k]) for k in idx)))
        idx = rng.choice(len(images), int(rng.integers(2, 5)), replace=False)
        touching = render_photo([images[k] for k in idx], rng, gap=(-0.15, -0.03))
        sets["touching"].append((degrade(touching, rng), "".join(str(labels[k]) for k in idx)))
        sets["blank"].append((blank_page(rng), ""))
        sets["not-digits"].append((degrade(render_photo([not_a_digit_tile(rng)], rng), rng), ""))
    faces, photos = real_photos()
    sets["faces"] = [(photo_view(cv2.cvtColor(faces[k % len(faces)], cv2.COLOR_GRAY2BGR), rng, int(rng.integers(200, 481)), crop=False), "")
                     for k in range(min(count, len(faces)))]
    sets["photos"] = [(photo_view(photos[k % len(photos)], rng), "") for k in range(count)]
    return sets | scene_sets(count, seed, (images, labels)) | beyond_sets(count, seed, (images, labels))


def scene_sets(count: int, seed: int = 2026, tiles=None) -> dict[str, list[tuple[np.ndarray, str]]]:
    """The "scene:<family>" kinds of wild_set alone (bench.lofo needs no others). tiles:
    (MNIST test images, labels) when the caller has them loaded."""
    draw = {f"scene:{family}": partial(render_scene, family) for family in FAMILIES}
    return _digit_scenes(draw, count, np.random.default_rng(seed + 1), tiles)  # its own stream: the other kinds stay as they were


def beyond_sets(count: int, seed: int = 2026, tiles=None) -> dict[str, list[tuple[np.ndarray, str]]]:
    """The "beyond:<name>" kinds of wild_set alone (BEYOND)."""
    draw = {f"beyond:{name}": partial(compose_scene, conditions, **kwargs) for name, (conditions, kwargs) in BEYOND.items()}
    return _digit_scenes(draw, count, np.random.default_rng(seed + 2), tiles)


def _digit_scenes(draw: dict, count: int, rng: np.random.Generator, tiles=None) -> dict[str, list[tuple[np.ndarray, str]]]:
    """count photos of each kind, kind: draw[kind](tiles, rng), of 1-4 MNIST test digits each."""
    from bench.make_photo import mnist_test_tiles

    images, labels = tiles if tiles is not None else mnist_test_tiles()
    sets = {}
    for kind, scene in draw.items():
        items = sets[kind] = []
        for _ in range(count):
            idx = rng.choice(len(images), int(rng.integers(1, 5)), replace=False)
            items.append((scene([images[k] for k in idx], rng), "".join(str(labels[k]) for k in idx)))
    return sets


def classic_read(model, photo: np.ndarray) -> str:
    """The classic approach: the whole frame, grayscale, inverted, resized to 28x28, read
    by a ten-class model (the "no digit" class, if any, is left out: the classic approach
    always names a digit)."""
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    tile = cv2.resize(255 - gray, (28, 28), interpolation=cv2.INTER_AREA)
    logits = model.logits(model.blob([tile]))[0]
    digits = [k for k, label in enumerate(model.labels) if label != model.info.reject]
    return model.labels[digits[int(np.argmax(logits[digits]))]]


def wilson(right: int, count: int) -> tuple[float, float]:
    """The 95% (Wilson score) interval of a rate measured as right of count: at 100 photos a
    kind, a figure of 90% may be anything from 83% to 94%, so smaller differences between two
    runs of bench.wild decide nothing (docs/measurements.md: how sure a figure is)."""
    from scipy.stats import binomtest  # scikit-learn's dependency, installed with the bench's

    if count == 0:
        return 0.0, 1.0
    ci = binomtest(right, count).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def evaluate(model_path: str, count: int, thresholds=(0.5, 0.55, 0.6, 0.65, 0.7, 0.8), gallery: Path | None = None,
             only: str = "", detector: str | None = None, sets: dict | None = None, seed: int = 2026,
             sequence: str | None = None) -> dict:
    """detector: an ink detector's ONNX file, or None for the finder's rules alone; sequence: a
    sequence reader's, or None to cut touching digits apart only. Each kind's
    row: its photo count, the exact-match rate at each threshold, "interval" (the 95% interval
    of the rate at run-digit's default threshold) and the classic reading's rate."""
    from digitpipe.runtime.detector import InkDetector
    from digitpipe.runtime.model import Model
    from digitpipe.runtime.reader import DEFAULT_MIN_CONFIDENCE, DigitReader
    from digitpipe.runtime.sequence import SequenceReader

    sets = {k: v for k, v in (sets or wild_set(count, seed)).items() if k.startswith(only)}
    model = Model(model_path, device="cpu")
    ink = InkDetector.load(detector, device="cpu") if detector else None
    touching = SequenceReader.load(sequence, device="cpu") if sequence else None
    reader = DigitReader(model, min_confidence=0.0, detector=ink, sequence=touching)  # thresholds: below, per column
    results = {}
    for kind, items in sets.items():
        readings = [(reader.read(photo), text) for photo, text in items]
        right = {t: [("".join(d.label for d in r.digits if d.confidence >= t) == text) for r, text in readings]
                 for t in {*thresholds, DEFAULT_MIN_CONFIDENCE}}
        row = {"count": len(items)} | {f"exact@{t}": float(np.mean(right[t])) for t in thresholds}
        row["interval"] = wilson(sum(right[DEFAULT_MIN_CONFIDENCE]), len(items))
        row["classic_exact"] = float(np.mean([classic_read(model, p) == text for p, text in items]))
        results[kind] = row
        if gallery is not None:
            write_failures(gallery / kind.replace(":", "-"), items, [r for r, _ in readings], DEFAULT_MIN_CONFIDENCE)
    return results


def write_failures(folder: Path, items, readings, threshold: float) -> int:
    """Each photo read wrong at the default threshold, with the boxes found and a caption
    "truth | read", as numbered JPEGs a person can flip through."""
    from digitpipe.runtime.display import annotate, label
    from digitpipe.runtime.reader import Reading

    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for n, ((photo, truth), reading) in enumerate(zip(items, readings)):
        shown = Reading([d for d in reading.digits if d.confidence >= threshold], reading.ms)
        if shown.text == truth:
            continue
        frame = annotate(photo, shown)
        label(frame, f"truth: {truth or 'none'}   read: {shown.text or 'none'}", (8, frame.shape[0] - 10), 0.7, 2)
        cv2.imwrite(str(folder / f"{n:04d}-truth-{truth or 'none'}-read-{shown.text or 'none'}.jpg"), frame)
        written += 1
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wild", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="artifacts/digits.onnx", help="the classifier")
    p.add_argument("--count", type=int, default=300, help="photos per kind")
    p.add_argument("--seed", type=int, default=2026,
                   help="draws the photos; another seed gives another set of the same kinds, to check a change on fresh photos")
    p.add_argument("--out", default="artifacts/wild.json", help="where the figures are written (JSON)")
    p.add_argument("--save-examples", metavar="DIR", help="also write the first 5 photos of each kind here")
    p.add_argument("--gallery", metavar="DIR", type=Path,
                   help="write every photo read wrong (at the default --min-confidence) to DIR/<kind>/, with the "
                        "boxes found and the reading against the truth")
    p.add_argument("--only", metavar="PREFIX", default="", help="evaluate only kinds starting with this (e.g. scene:)")
    p.add_argument("--detector", default="auto", metavar="ONNX|auto|none",
                   help="ink detector before the finder, as run-digit's --detector: auto uses detector.onnx beside --model")
    p.add_argument("--sequence", default="auto", metavar="ONNX|auto|none",
                   help="sequence reader of touching digits, as run-digit's --sequence: auto uses sequence.onnx beside --model")
    args = p.parse_args(argv)
    if not any(k.startswith(args.only) for k in KINDS):
        p.error(f"--only {args.only!r} names no kind; the kinds are {', '.join(KINDS)}")
    from digitpipe.runtime.detector import detector_path
    from digitpipe.runtime.sequence import sequence_path

    found = detector_path(args.detector, args.model)
    detector = str(found) if found else None
    found = sequence_path(args.sequence, args.model)
    sequence = str(found) if found else None
    print(f"reading with {'the ink detector ' + detector if detector else 'the finder rules alone'}"
          f"{', the sequence reader ' + sequence if sequence else ', touching digits cut apart only'}", file=sys.stderr)
    t = time.perf_counter()
    results = evaluate(args.model, args.count, gallery=args.gallery, only=args.only, detector=detector, seed=args.seed,
                       sequence=sequence)
    if args.save_examples:
        Path(args.save_examples).mkdir(parents=True, exist_ok=True)
        for kind, items in wild_set(5).items():
            for n, (photo, text) in enumerate(items):
                cv2.imwrite(str(Path(args.save_examples) / f"{kind}-{n}-{text or 'none'}.jpg"), photo)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    thresholds = [k for k in next(iter(results.values())) if k.startswith("exact@")]
    print("| kind | photos | " + " | ".join(f"run-digit, min-confidence {k[6:]}" for k in thresholds)
          + " | 95% interval at the default | classic (frame -> 28x28) |")
    print("|---" * (len(thresholds) + 4) + "|")
    for kind, row in results.items():
        lo, hi = row["interval"]
        print(f"| {kind} | {row['count']} | " + " | ".join(f"{row[k]:.1%}" for k in thresholds)
              + f" | {lo:.0%}-{hi:.0%} | {row['classic_exact']:.1%} |")
    print(f"\n{time.perf_counter() - t:.0f} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
