"""The sequence reader: a small CRNN-style network that reads a run of touching digits whole, trained with CTC.

Touching digits have no column where a cut parts them cleanly, so cutting them apart and
classifying the pieces (runtime/digits.py) fails on a third of them. Text recognisers
read a word without cutting it (CRNN with a CTC loss); this network does the same for a
group of ink the finder found: convolutions over a strip of ink (fit_strip: the group's
height scaled to MNIST's 20 of 28 rows, 112 columns wide), the height folded away, a score
per digit and the CTC blank for every 4 columns.

Training strips are drawn, seeded, from MNIST *training* digits: 1-5 digits side by side,
each at its own scale, width and height, apart or overlapping by up to 40% of a digit,
the row slanted, strokes thickened or thinned, the ink soft or binarised as the finder's
threshold leaves it; and runs of letters, marks and doodles (train/negatives.py) that
read as nothing. Validation strips use MNIST test digits.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

from digitpipe.runtime.digits import fit_strip
from digitpipe.runtime.sequence import ctc_greedy

HEIGHT, WIDTH, STRIDE = 28, 112, 4  # the strip, and the columns per output step
FILL = 20 / 28  # MNIST's digit height in its tile
LABELS = tuple(str(d) for d in range(10))  # output 0 is the CTC blank, then these


@dataclass
class SequenceConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    widths: tuple[int, ...] = (16, 32, 64, 96)
    no_digit_share: float = 0.12  # strips of letters and marks, which read as nothing
    data_dir: str = "data"
    out: str = "artifacts/sequence.pt"
    threads: int = 0  # torch CPU threads (0: torch's default); training runs on CUDA when present
    val_strips: int = 1000

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SequenceNet(nn.Module):
    """N x 1 x 28 x 112 strips -> N x 11 x 1 x 28 logits (the blank, then the digits; one step
    per 4 columns). Convolutions only: every ONNX consumer, cv2.dnn included, runs it."""

    def __init__(self, widths=SequenceConfig.widths, classes: int = len(LABELS) + 1):
        super().__init__()
        a, b, c, d = widths
        self.features = nn.Sequential(*_block(1, a), nn.MaxPool2d(2), *_block(a, b), nn.MaxPool2d(2),
                                      *_block(b, c), *_block(c, c))
        self.head = nn.Sequential(
            nn.Conv2d(c, d, (HEIGHT // 4, 1), bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True),  # the height folded
            nn.Conv2d(d, d, (1, 5), padding=(0, 2), bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True),  # +-2 steps
            nn.Dropout(0.1), nn.Conv2d(d, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def ink_box(tile: np.ndarray, floor: int = 20) -> np.ndarray:
    ys, xs = np.nonzero(tile > floor)
    return tile if len(xs) == 0 else tile[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def write_row(cells: list[np.ndarray], rng: np.random.Generator, gap=(-0.4, 0.08)) -> np.ndarray:
    """Light-on-dark crops written left to right at about 40 px high, each at its own scale,
    width and height; gap: the space to the next one, a share of the height (negative: they overlap)."""
    base = 40
    # A lone digit reaches the sequence reader only when it is wide (the finder offers it
    # as ink that may be several digits): it is drawn up to 1.8x its width.
    stretch = (1.0, 1.8) if len(cells) == 1 else (0.85, 1.2)
    parts = []
    for c in cells:
        s = base / max(20, c.shape[0]) * rng.uniform(0.85, 1.15)
        parts.append(cv2.resize(c, None, fx=s * rng.uniform(*stretch), fy=s, interpolation=cv2.INTER_LINEAR))
    tall = max(p.shape[0] for p in parts)
    canvas = np.zeros((tall + 20, sum(p.shape[1] for p in parts) + 10 + 2 * len(parts)), np.uint8)
    x = 5
    for p in parts:
        ph, pw = p.shape
        y = int(np.clip((tall - ph) / 2 + rng.normal(0, 0.06 * tall) + 10, 0, canvas.shape[0] - ph))
        if x + pw > canvas.shape[1]:
            canvas = np.pad(canvas, ((0, 0), (0, x + pw - canvas.shape[1])))
        np.maximum(canvas[y : y + ph, x : x + pw], p, out=canvas[y : y + ph, x : x + pw])
        x = max(x + 2, x + pw + int(round(base * rng.uniform(*gap))))
    return canvas


def as_found(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A row of ink as the finder may hand it over: slanted, strokes thicker or thinner, and
    half the time cut at a threshold and stretched as runtime/digits.py's stretch_ink does."""
    h, w = ink.shape
    shear = rng.uniform(-0.3, 0.3)
    ink = cv2.warpAffine(np.pad(ink, ((0, 0), (20, 20))), np.float32([[1, shear, 20 - shear * h / 2], [0, 1, 0]]),
                         (w + 40, h))
    r = rng.random()
    if r < 0.2:
        ink = cv2.dilate(ink, np.ones((3, 3), np.uint8))
    elif r < 0.3:
        ink = cv2.erode(ink, np.ones((2, 2), np.uint8))
    if rng.random() < 0.5:
        t = rng.uniform(40, 120)
        ink = np.where(ink > t, np.clip((ink - t / 2) * (255 / (255 - t / 2)), 0, 255), 0).astype(np.uint8)
    return ink


def _no_digit_cells(rng: np.random.Generator) -> list[np.ndarray]:
    from digitpipe.train import negatives

    makers = (negatives.capitals, negatives.glyphs, negatives.marks, negatives.tangles, negatives.hatching,
              negatives.shapes, negatives.framed)
    cells = [ink_box(cv2.resize(makers[int(rng.integers(len(makers)))](rng), (40, 40), interpolation=cv2.INTER_AREA))
             for _ in range(int(rng.integers(1, 4)))]
    return [c for c in cells if c.size > 4] or [np.full((5, 5), 255, np.uint8)]


def draw_strip(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray, no_digit_share: float,
               counts=(1, 1, 2, 2, 3, 3, 4, 5), gap=(-0.4, 0.08)) -> tuple[np.ndarray, list[int]]:
    """(a uint8 HEIGHT x WIDTH strip, its digits as CTC targets 1..10; none for a no-digit strip)."""
    if rng.random() < no_digit_share:
        ink, target = write_row(_no_digit_cells(rng), rng, (-0.3, 0.05)), []
    else:
        idx = rng.integers(len(digits), size=int(rng.choice(counts)))
        ink, target = write_row([ink_box(digits[i]) for i in idx], rng, gap), [int(labels[i]) + 1 for i in idx]
    return fit_strip(ink_box(as_found(ink, rng), 0), WIDTH, HEIGHT, FILL)[0], target


def draw_batch(rng, digits, labels, count: int, no_digit_share: float, **kw):
    """(N x 1 x H x W float strips / 255, the targets concatenated, each target's length)."""
    strips, targets, lengths = [], [], []
    for _ in range(count):
        strip, target = draw_strip(rng, digits, labels, no_digit_share, **kw)
        strips.append(strip)
        targets += target
        lengths.append(len(target))
    x = torch.from_numpy(np.stack(strips)[:, None]).float() / 255.0
    return x, torch.tensor(targets, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)


def mnist_split(data_dir: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    from digitpipe.train.mnist_source import ensure_mnist

    ensure_mnist(Path(data_dir), log=lambda *_: None)
    ds = MNIST(data_dir, train=train, download=False)
    return ds.data.numpy(), ds.targets.numpy()


def validation_strips(count: int, seed: int, data_dir: str):
    """Strips of 2-4 MNIST *test* digits, touching or close (the training recipe's spacing), and their text."""
    digits, labels = mnist_split(data_dir, train=False)
    rng = np.random.default_rng(seed)
    strips, texts = [], []
    for _ in range(count):
        idx = rng.integers(len(digits), size=int(rng.integers(2, 5)))
        ink = as_found(write_row([ink_box(digits[i]) for i in idx], rng), rng)
        strips.append(fit_strip(ink_box(ink, 0), WIDTH, HEIGHT, FILL)[0])
        texts.append("".join(str(labels[i]) for i in idx))
    return np.stack(strips), texts


@dataclass
class SequenceResult:
    exact: float  # exact-match rate on the validation strips
    seconds: float
    history: list = field(default_factory=list)


def exact_match(net: nn.Module, strips: np.ndarray, texts: list[str]) -> float:
    device = next(net.parameters()).device
    x = torch.from_numpy(strips[:, None]).float() / 255.0
    with torch.no_grad():
        logits = torch.cat([net(x[i : i + 256].to(device)).cpu() for i in range(0, len(x), 256)]).numpy()
    read = [ctc_greedy(out[:, 0], LABELS, STRIDE).text for out in logits]  # as the runtime decodes
    return float(np.mean([a == b for a, b in zip(read, texts)]))


def train_sequence(cfg: SequenceConfig, log=print) -> tuple[nn.Module, SequenceResult]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    digits, labels = mnist_split(cfg.data_dir, train=True)
    val_x, val_text = validation_strips(cfg.val_strips, cfg.seed + 1, cfg.data_dir)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # channels_last, as the classifier trains: a step 47 ms instead of 72-83 on two CPU cores
    net = SequenceNet(cfg.widths).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    history = []
    net.train()
    for step in range(cfg.steps):
        x, targets, lengths = draw_batch(rng, digits, labels, cfg.batch_size, cfg.no_digit_share)
        out = net(x.to(device))[:, :, 0].permute(2, 0, 1).log_softmax(2)  # T x N x C, as CTCLoss takes it
        steps = torch.full((cfg.batch_size,), out.shape[0], dtype=torch.long)
        loss = ctc(out, targets.to(device), steps, lengths)
        if not torch.isfinite(loss):
            raise RuntimeError(f"sequence reader training diverged at step {step} (loss {loss.item()})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 5)})
            log(f"sequence: step {step + 1}/{cfg.steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    net.eval()
    exact = exact_match(net, val_x, val_text)
    net = net.cpu()
    result = SequenceResult(exact, time.perf_counter() - t0, history)
    log(f"sequence: {100 * exact:.1f}% of {len(val_text)} strips of 2-4 MNIST test digits read exactly "
        f"({result.seconds:.0f} s in all)")
    return net, result


def save_sequence(path: Path, net: nn.Module, cfg: SequenceConfig, result: SequenceResult) -> str:
    from digitpipe.train.checkpoint import save

    return save(Path(path), {"kind": "sequence-reader", "model_state": net.state_dict(), "config": cfg.to_dict(),
                             "input": [1, HEIGHT, WIDTH], "stride": STRIDE, "labels": list(LABELS),
                             "result": asdict(result)})


def load_sequence(path: Path) -> tuple[nn.Module, dict]:
    from digitpipe.train.checkpoint import CheckpointError, load

    ckpt = load(Path(path))
    if ckpt.get("kind") != "sequence-reader":
        raise CheckpointError(f"{path}: not a sequence reader checkpoint")
    net = SequenceNet(tuple(ckpt["config"]["widths"]))
    net.load_state_dict(ckpt["model_state"])
    return net.eval(), ckpt


def build_parser():
    import argparse

    d = SequenceConfig()
    p = argparse.ArgumentParser(prog="digitpipe-train-sequence", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=d.steps, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="strips per step (each drawn afresh)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the strips and the weights")
    p.add_argument("--widths", default=",".join(map(str, d.widths)), help="the four layer widths")
    p.add_argument("--no-digit-share", type=float, default=d.no_digit_share,
                   help="share of strips of letters and marks, which read as nothing")
    p.add_argument("--val-strips", type=int, default=d.val_strips, help="validation strips of MNIST test digits")
    p.add_argument("--data-dir", default=d.data_dir, help="where MNIST is found or fetched to")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=d.out, help="checkpoint to write (atomically, when training finished)")
    return p


def main(argv=None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    try:
        widths = tuple(int(v) for v in args.widths.split(","))
    except ValueError:
        widths = ()
    if len(widths) != 4 or min(widths) < 1:
        print(f"error: --widths {args.widths!r}: expected four positive integers, e.g. 16,32,64,96", file=sys.stderr)
        return 2
    cfg = SequenceConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, widths=widths,
                         no_digit_share=args.no_digit_share, val_strips=args.val_strips, data_dir=args.data_dir,
                         threads=args.threads, out=args.out)
    if min(cfg.steps, cfg.batch_size, cfg.val_strips) < 1 or not 0 <= cfg.no_digit_share < 1:
        print("error: --steps, --batch-size and --val-strips must be at least 1, --no-digit-share in [0, 1)",
              file=sys.stderr)
        return 2
    from digitpipe.train.checkpoint import train_and_save

    return train_and_save(lambda: train_sequence(cfg, log=lambda *a: print(*a, flush=True)),
                          lambda net, result: save_sequence(Path(cfg.out), net, cfg, result), cfg.out)


if __name__ == "__main__":
    raise SystemExit(main())
