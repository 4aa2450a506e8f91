"""The ink detector: a small fully convolutional network that marks where digits are written.

The hand-set finder (runtime/digits.py) binarises the whole frame, so printed rules, form
boxes, shadow edges, a desk or a mug read as ink. The detector is trained, as text
detectors are (DB, CRAFT), on generated scenes under wide randomisation: MNIST *training*
digits written on paper under any mix of the scene conditions of train/scenes.py (printed
rules, squared paper, form boxes, hard shadows, dim light, glare, coloured ink and paper,
the page on a desk), plus letters and doodles that must not be marked, chalk-like light
ink, blur and exposure. Its output is one logit per pixel of a small frame: "digit ink
here". The runtime keeps only the ink the detector marks (runtime/detector.py).

Leaving families out (`--exclude dim,desk`) trains the detector that the leave-one-family-
out measurement of bench.wild scores on the family it never saw.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from digitpipe.train.photos import HERSHEY
from digitpipe.train.scenes import FAMILIES, FURNITURE, compose_scene

WIDTH, HEIGHT = 160, 120  # the detector's input: a 640x480 frame at a quarter of its side
INK_COVERAGE = 0.2  # a pixel of the small frame is digit ink when this share of it is ink


@dataclass
class DetectorConfig:
    scenes: int = 2400  # generated training scenes (each also used mirrored)
    steps: int = 900
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    exclude: tuple[str, ...] = ()  # scene families never shown (leave-one-family-out)
    data_dir: str = "data"
    out: str = "artifacts/detector.pt"
    threads: int = 0  # torch CPU threads (0: torch's default); training runs on CUDA when present
    val_scenes: int = 200
    # Light and backgrounds that no scene family names (uneven_light, cluttered_background),
    # in 30% of the scenes each: generalisation by randomisation rather than by family
    # (docs/detector.md: the page on a desk left out, 19% without, 61% with).
    generic: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        return d


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InkNet(nn.Module):
    """A small U-Net: two strided stages for context (dilated at 1/4 size, so a printed
    rule is seen as a line across the page, not a stroke), back up to 1/2 size with the
    features there, and a transposed convolution to one logit per input pixel."""

    def __init__(self):
        super().__init__()
        self.down2 = nn.Sequential(_block(3, 16, stride=2), _block(16, 16))
        self.down4 = nn.Sequential(_block(16, 32, stride=2), _block(32, 32, dilation=2),
                                   _block(32, 32, dilation=4), _block(32, 32, dilation=8))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ReLU(inplace=True))
        self.merge2 = _block(32, 16)
        self.head = nn.ConvTranspose2d(16, 1, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.down2(x)
        quarter = self.down4(half)
        return self.head(self.merge2(torch.cat([self.up2(quarter), half], 1)))


def training_tiles(data_dir: str) -> np.ndarray:
    """MNIST *training* digits (the test digits are kept for evaluation)."""
    from torchvision.datasets import MNIST

    from digitpipe.train.mnist_source import ensure_mnist

    ensure_mnist(Path(data_dir), log=lambda *_: None)
    return MNIST(data_dir, train=True, download=False).data.numpy()


def distractor_tiles(count: int, seed: int, digits: np.ndarray) -> np.ndarray:
    """Ink that is no digit (letters, shapes, scribbles), light on dark, 28x28."""
    from digitpipe.train.negatives import FAMILIES as NEGATIVE_FAMILIES, negatives

    # Pairs of digits are digits to the detector: only the first families, which are not.
    tiles = negatives(count * (len(NEGATIVE_FAMILIES) + 1) // len(NEGATIVE_FAMILIES) + 1, seed, digits)
    keep = [k for k in range(len(tiles)) if k % (len(NEGATIVE_FAMILIES) + 1) != len(NEGATIVE_FAMILIES)]
    return tiles[keep][:count]


def random_conditions(rng: np.random.Generator, exclude=()) -> set[str]:
    """Any mix of the families' conditions: at most one kind of page furniture, each light
    condition, colour and the desk independently."""
    chosen = set()
    furniture = [f for f in FURNITURE if f not in exclude]
    if furniture and rng.random() < 0.6:
        chosen.add(furniture[int(rng.integers(len(furniture)))])
    for name in FAMILIES:
        if name not in FURNITURE and name not in exclude and rng.random() < 0.3:
            chosen.add(name)
    return chosen


def camera(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What differs between cameras: defocus, exposure and contrast."""
    if rng.random() < 0.4:
        photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.4:
        gain, offset = rng.uniform(0.6, 1.3), rng.uniform(-30, 30)
        photo = np.clip(photo.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    return photo


def printed_digit(rng: np.random.Generator) -> np.ndarray:
    """A printed digit in one of OpenCV's Hershey fonts, any weight, upright or slanted (light on dark)."""
    canvas = np.zeros((112, 112), np.uint8)
    cv2.putText(canvas, str(int(rng.integers(10))), (22, 90), HERSHEY[int(rng.integers(len(HERSHEY)))], 2.6, 255,
                int(rng.integers(2, 10)), cv2.LINE_AA)
    shear = np.float32([[1, rng.uniform(-0.25, 0.25), 0], [0, 1, 0]])
    return cv2.warpAffine(canvas, shear, (112, 112))


def uneven_light(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light no family names: a smooth random field times, half the time, a random polygon
    lit brighter or darker with an edge anywhere from hard to soft."""
    h, w = photo.shape[:2]
    field = cv2.resize(rng.uniform(0.55, 1.3, (3, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        patch = np.zeros((h, w), np.float32)
        points = (rng.uniform(-0.2, 1.2, (int(rng.integers(3, 7)), 2)) * [w, h]).astype(np.int32)
        cv2.fillPoly(patch, [cv2.convexHull(points)], 1.0)
        sigma = rng.uniform(0.3, 6.0)
        patch = cv2.GaussianBlur(patch, (0, 0), sigma)
        field = field * (1 + patch * (rng.uniform(0.35, 1.6) - 1))
    return np.clip(photo.astype(np.float32) * field[..., None], 0, 255).astype(np.uint8)


def printed_structure(page: np.ndarray, boxes, rng: np.random.Generator) -> None:
    """Print no family names: sets of parallel lines at any angle and spacing, tables, and
    boxes anywhere (some around the digits), in any colour and weight."""
    h, w = page.shape[:2]
    colour = tuple(float(c) for c in rng.uniform(0, 200, 3))
    thickness = int(rng.integers(1, 4))
    kind = int(rng.integers(3))
    if kind < 2:  # parallel lines, or (kind 1) a table: two sets at right angles
        angle, step = rng.uniform(-0.3, 0.3) + rng.choice([0, np.pi / 2]), rng.uniform(12, 140)
        for a in [angle, angle + np.pi / 2][: kind + 1]:
            d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
            for offset in np.arange(-w - h, w + h, step) + rng.uniform(0, step):
                centre = np.array([w / 2, h / 2]) + n * offset
                p0, p1 = centre - d * (w + h), centre + d * (w + h)
                cv2.line(page, tuple(int(v) for v in p0), tuple(int(v) for v in p1), colour, thickness, cv2.LINE_AA)
    else:
        rects = [(x - m, y - m, bw + 2 * m, bh + 2 * m) for (x, y, bw, bh) in boxes if rng.random() < 0.5
                 for m in [rng.uniform(-0.1, 0.4) * bh]]
        rects += [tuple(rng.uniform(0, 1, 4) * [w, h, w / 2, h / 2]) for _ in range(int(rng.integers(1, 6)))]
        for x, y, bw, bh in rects:
            cv2.rectangle(page, (int(x), int(y)), (int(x + bw), int(y + bh)), colour, thickness, cv2.LINE_AA)


def colour_curves(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour no family names: each channel through its own random tone curve (papers and
    inks of any hue, colour casts, a channel in which ink is lighter than paper), redrawn until
    typical ink (50) and paper (210) still differ in brightness by 50 of 255."""
    x = np.arange(256, dtype=np.float32) / 255
    luma = np.array([0.114, 0.587, 0.299])  # BGR
    for _ in range(20):
        lo, hi, gamma = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0.6, 1.6, 3)
        luts = [lo[c] + (hi[c] - lo[c]) * x ** gamma[c] for c in range(3)]
        ink, paper = (float(luma @ [lut[v] for lut in luts]) for v in (50, 210))
        if abs(paper - ink) >= 50:
            lut = np.stack(luts, axis=1).clip(0, 255).astype(np.uint8)[:, None, :]  # 256 x 1 x 3
            return cv2.LUT(photo, lut)
    return photo


def cluttered_background(photo: np.ndarray, ink: np.ndarray, rng: np.random.Generator):
    """The page shrunk and warped onto a background of random texture, colour and shapes
    (no family's desk): what is not the page must not be marked."""
    h, w = photo.shape[:2]
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), rng.uniform(1, 12))
    background = rng.uniform(20, 235, 3) + texture / max(float(texture.std()), 1e-6) * rng.uniform(5, 40)
    for _ in range(int(rng.integers(0, 6))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        a, b = (tuple(int(v) for v in rng.uniform(0, 1, 2) * [w, h]) for _ in range(2))
        shape = int(rng.integers(3))
        if shape == 0:
            cv2.line(background, a, b, colour, int(rng.integers(2, 14)), cv2.LINE_AA)
        elif shape == 1:
            cv2.circle(background, a, int(rng.integers(10, 120)), colour, int(rng.integers(-1, 12)) or 1, cv2.LINE_AA)
        else:
            cv2.rectangle(background, a, b, colour, int(rng.integers(-1, 10)) or 1)
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    scale, centre = rng.uniform(0.5, 0.9), np.float32([w, h]) * rng.uniform(0.35, 0.65, 2)
    target = (corners - [w / 2, h / 2]) * scale + centre + rng.normal(0, 0.05 * w, (4, 2))
    m = cv2.getPerspectiveTransform(corners, target.astype(np.float32))
    page = cv2.warpPerspective(photo.astype(np.float32), m, (w, h))
    inside = cv2.warpPerspective(np.ones((h, w), np.float32), m, (w, h))[..., None]
    scene = np.clip(background * (1 - inside) + page * inside, 0, 255).astype(np.uint8)
    return scene, cv2.warpPerspective(ink, m, (w, h))


def training_scene(rng: np.random.Generator, digits: np.ndarray, others: np.ndarray, exclude=(), generic: bool = False):
    """(BGR photo at the detector's size, uint8; digit ink mask at that size, bool): handwritten
    digits, or (a quarter of the scenes) printed ones."""
    count = int(rng.integers(0, 6))
    if rng.random() < 0.25:
        tiles = [printed_digit(rng) for _ in range(count)]
    else:
        tiles = [digits[int(i)] for i in rng.integers(len(digits), size=count)]
    distract = [others[int(i)] for i in rng.integers(len(others), size=int(rng.integers(1, 4)))] \
        if rng.random() < 0.35 else []
    light_ink = "colour" not in exclude and rng.random() < 0.1
    tiles = tiles or [np.zeros((28, 28), np.uint8)]  # a page with nothing to read: a tile without ink
    printed = [printed_structure] if generic and rng.random() < 0.3 else []
    photo, ink = compose_scene(random_conditions(rng, exclude), tiles, rng, jpeg_quality=int(rng.integers(40, 95)),
                               with_ink=True, others=distract, light_ink=light_ink, digit_height=(0.08, 0.5),
                               furniture=printed)
    if generic and rng.random() < 0.3:
        photo = colour_curves(photo, rng)
    if generic and rng.random() < 0.3:
        photo = uneven_light(photo, rng)
    if generic and rng.random() < 0.3:
        photo, ink = cluttered_background(photo, ink, rng)
    photo = camera(photo, rng)
    small = cv2.resize(photo, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    target = cv2.resize((ink > 0.3).astype(np.float32), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA) > INK_COVERAGE
    return small, target


def make_scenes(count: int, seed: int, digits: np.ndarray, others: np.ndarray, exclude=(), generic: bool = False):
    rng = np.random.default_rng(seed)
    pairs = [training_scene(rng, digits, others, exclude, generic) for _ in range(count)]
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    return x, y


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 BGR N x 3 x H x W -> the network's input: pixels / 255 (metadata: mean 0, std 1)."""
    return x.float() / 255.0


@dataclass
class DetectorResult:
    iou: float  # on the held-out generated scenes
    precision: float
    recall: float
    seconds: float
    history: list = field(default_factory=list)


def mask_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """IoU, precision and recall of the thresholded mask (logit > 0) on scenes."""
    device = next(net.parameters()).device
    with torch.no_grad():
        pred = torch.cat([(net(to_input(x[i : i + 64].to(device))) > 0).cpu() for i in range(0, len(x), 64)])
    tp = (pred & y).sum().item()
    fp = (pred & ~y).sum().item()
    fn = (~pred & y).sum().item()
    return tp / max(tp + fp + fn, 1), tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def train_detector(cfg: DetectorConfig, log=print) -> tuple[nn.Module, DetectorResult]:
    unknown = set(cfg.exclude) - set(FAMILIES)
    if unknown:
        raise ValueError(f"--exclude: unknown scene families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    digits = training_tiles(cfg.data_dir)
    others = distractor_tiles(2000, cfg.seed, digits)
    x, y = make_scenes(cfg.scenes, cfg.seed, digits, others, cfg.exclude, cfg.generic)
    vx, vy = make_scenes(cfg.val_scenes, cfg.seed + 1, digits, others, cfg.exclude, cfg.generic)
    log(f"detector: {cfg.scenes} training scenes generated in {time.perf_counter() - t0:.0f} s "
        f"({100 * y.float().mean():.1f}% digit ink)" + (f", without {', '.join(cfg.exclude)}" if cfg.exclude else ""))
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = InkNet().to(device)
    opt = torch.optim.AdamW(net.parameters(), cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    order = torch.Generator().manual_seed(cfg.seed)
    pos_weight = torch.tensor(4.0, device=device)  # ink is ~3% of the pixels: missing it costs more than a stray mark
    history = []
    net.train()
    for step in range(cfg.steps):
        i = torch.randint(0, len(x), (cfg.batch_size,), generator=order)
        xb, yb = to_input(x[i].to(device)), y[i].to(device).float()
        if torch.rand(1, generator=order).item() < 0.5:  # mirrored: digits are not, the scene's structure is
            xb, yb = xb.flip(3), yb.flip(3)
        loss = F.binary_cross_entropy_with_logits(net(xb), yb, pos_weight=pos_weight)
        if not torch.isfinite(loss):
            raise RuntimeError(f"detector training diverged at step {step} (loss {loss.item()})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 5)})
            log(f"detector: step {step + 1}/{cfg.steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    net.eval()
    iou, precision, recall = mask_scores(net, vx, vy)
    net = net.cpu()  # checkpoints and export work on the CPU
    result = DetectorResult(iou, precision, recall, time.perf_counter() - t0, history)
    log(f"detector: held-out scenes: IoU {iou:.3f}, precision {precision:.3f}, recall {recall:.3f} "
        f"({result.seconds:.0f} s in all)")
    return net, result


def save_detector(path: Path, net: nn.Module, cfg: DetectorConfig, result: DetectorResult) -> str:
    from digitpipe.train.checkpoint import save

    return save(Path(path), {"kind": "ink-detector", "model_state": net.state_dict(), "config": cfg.to_dict(),
                             "input": [3, HEIGHT, WIDTH], "result": asdict(result)})


def load_detector(path: Path) -> tuple[nn.Module, dict]:
    from digitpipe.train.checkpoint import CheckpointError, load

    ckpt = load(Path(path))
    if ckpt.get("kind") != "ink-detector":
        raise CheckpointError(f"{path}: not an ink detector checkpoint")
    net = InkNet()
    net.load_state_dict(ckpt["model_state"])
    return net.eval(), ckpt


def build_parser():
    import argparse

    d = DetectorConfig()
    p = argparse.ArgumentParser(prog="digitpipe-train-detector", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenes", type=int, default=d.scenes, help="generated training scenes (each also used mirrored)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="scenes per step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the scenes, the weights and the order")
    p.add_argument("--exclude", default="", metavar="FAMILIES",
                   help=f"comma-separated scene families never to show ({', '.join(FAMILIES)}): leave-one-family-out")
    p.add_argument("--generic", action=argparse.BooleanOptionalAction, default=d.generic,
                   help="also randomise print, colour, light and backgrounds that no scene family names (30%% of scenes each)")
    p.add_argument("--data-dir", default=d.data_dir, help="where MNIST is found or fetched to")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=d.out, help="checkpoint to write (atomically, when training finished)")
    return p


def main(argv=None) -> int:
    import sys

    from digitpipe.runtime.errors import first_line

    args = build_parser().parse_args(argv)
    exclude = tuple(f for f in args.exclude.split(",") if f)
    cfg = DetectorConfig(scenes=args.scenes, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         exclude=exclude, data_dir=args.data_dir, out=args.out, threads=args.threads,
                         generic=args.generic)
    if min(cfg.scenes, cfg.steps, cfg.batch_size) < 1:
        print("error: --scenes, --steps and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        net, result = train_detector(cfg, log=lambda *a: print(*a, flush=True))
        save_detector(Path(cfg.out), net, cfg, result)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {cfg.out} is unchanged", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {first_line(exc)}; {cfg.out} is unchanged", file=sys.stderr)
        return 2
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
