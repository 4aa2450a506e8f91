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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from digitpipe.train import real_photos
from digitpipe.train.detector_scenes import HEIGHT, WIDTH, draw_scenes
from digitpipe.train.scenes import FAMILIES


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
    # Real photographs (train.real_photos) as backgrounds and as scenes with no ink, where installed.
    real_photos: bool = True
    # The network also sees each pixel against its local paper (LocalPaper): ink in deep shade
    # stands out from its paper as ink in full light does (docs/detector.md: the frame against
    # its local paper; a hard shadow left out of training, 86 -> 91%).
    local_paper: bool = True
    # Hard negatives mined in the loss, as DB's detector does: every ink pixel and the 3x as
    # many hardest non-ink pixels of the batch, so the blank paper that fills most of a scene
    # stops diluting a desk's edge or a box's side (docs/detector.md, "Hard negatives in the loss"; 0
    # counts every pixel). Mining starts after the first third of the steps: from the first
    # step, marking every pixel is where a run can stay (a 150-step run at seed 3: IoU 0.07).
    hard_negatives: float = 3.0
    mine_after: float = 0.33

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        return d


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LocalPaper(nn.Module):
    """Each pixel beside its local paper: the paper is a grey-scale closing (max, then min, over
    `width` pixels; separable, as a rectangle's max is), which removes dark strokes narrower than
    `width` and keeps a shadow's edge; the ratio pixel / paper is the same under any light, and
    1 over anything wider than a stroke, however dark (a black patch is no ink). Fixed, not
    learned, and inside the ONNX file, so the runtime needs nothing new."""

    def __init__(self, width: int = 7, floor: float = 0.05):
        super().__init__()
        self.width, self.floor = width, floor  # floor, added to both: no ratio blows up over black

    def _max(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.width, self.width // 2
        if torch.onnx.is_in_onnx_export():  # one MaxPool node per pass for the runtimes
            return F.max_pool2d(F.max_pool2d(x, (1, k), 1, (0, p)), (k, 1), 1, (p, 0))
        # The same maximum over shifted copies: PyTorch's CPU max-pool at stride 1 made a
        # training step 1.46x slower; this, 4x faster than it, leaves the step near the cost it had.
        for dim in (3, 2):
            padded = F.pad(x, (p, p, 0, 0) if dim == 3 else (0, 0, p, p), value=float("-inf"))
            n = x.shape[dim]
            x = padded.narrow(dim, 0, n)
            for i in range(1, k):
                x = torch.maximum(x, padded.narrow(dim, i, n))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paper = -self._max(-self._max(x))
        return torch.cat([x, (x + self.floor) / (paper + self.floor)], 1)


class InkNet(nn.Module):
    """A small U-Net: two strided stages for context (dilated at 1/4 size, so a printed
    rule is seen as a line across the page, not a stroke), back up to 1/2 size with the
    features there, and a transposed convolution to one logit per input pixel. With
    `local_paper`, the first stage also sees the frame against its local paper (LocalPaper)."""

    def __init__(self, local_paper: bool = False):
        super().__init__()
        self.paper = LocalPaper() if local_paper else nn.Identity()
        self.down2 = nn.Sequential(_block(6 if local_paper else 3, 16, stride=2), _block(16, 16))
        self.down4 = nn.Sequential(_block(16, 32, stride=2), _block(32, 32, dilation=2),
                                   _block(32, 32, dilation=4), _block(32, 32, dilation=8))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ReLU(inplace=True))
        self.merge2 = _block(32, 16)
        self.head = nn.ConvTranspose2d(16, 1, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.down2(self.paper(x))
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


def make_scenes(count: int, seed: int, digits: np.ndarray, others: np.ndarray, exclude=(), generic: bool = False,
                real=()):
    """draw_scenes as tensors: N x 3 x H x W uint8 photos, N x 1 x H x W bool ink masks."""
    photos, ink = draw_scenes(count, seed, digits, others, exclude, generic, photos=real)
    return torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(ink)[:, None]


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


POS_WEIGHT = 4.0  # ink is ~3% of the pixels: missing it costs more than a stray mark


def ink_loss(logits: torch.Tensor, ink: torch.Tensor, hard_negatives: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy per pixel, the ink weighted POS_WEIGHT. With hard_negatives N > 0,
    only every ink pixel and the N x as many non-ink pixels the net is most wrong about count:
    the easy blank paper that fills most of a scene stops diluting a box's side or a desk's edge."""
    pos_weight = torch.tensor(POS_WEIGHT, device=logits.device)
    if hard_negatives <= 0:
        return F.binary_cross_entropy_with_logits(logits, ink, pos_weight=pos_weight)
    per_pixel = F.binary_cross_entropy_with_logits(logits, ink, pos_weight=pos_weight, reduction="none").flatten()
    positive = ink.flatten() > 0.5
    n_ink = int(positive.sum())  # one read back from the device a step
    negatives = per_pixel[~positive]
    k = min(negatives.numel(), max(1, int(hard_negatives * n_ink)))
    return (per_pixel[positive].sum() + negatives.topk(k).values.sum()) / (n_ink + k)


def train_detector(cfg: DetectorConfig, log=print) -> tuple[nn.Module, DetectorResult]:
    unknown = set(cfg.exclude) - set(FAMILIES)
    if unknown:
        raise ValueError(f"--exclude: unknown scene families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    digits = training_tiles(cfg.data_dir)
    others = distractor_tiles(2000, cfg.seed, digits)
    real = real_photos.load_photos() if cfg.generic and cfg.real_photos else []
    log(f"detector: {len(real)} real photographs as backgrounds" if real else
        "detector: no real photographs installed (python -m digitpipe.train.real_photos install): generated backgrounds only")
    x, y = make_scenes(cfg.scenes, cfg.seed, digits, others, cfg.exclude, cfg.generic, real)
    vx, vy = make_scenes(cfg.val_scenes, cfg.seed + 1, digits, others, cfg.exclude, cfg.generic, real)
    log(f"detector: {cfg.scenes} training scenes generated in {time.perf_counter() - t0:.0f} s "
        f"({100 * y.float().mean():.1f}% digit ink)" + (f", without {', '.join(cfg.exclude)}" if cfg.exclude else ""))
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # channels_last, as the classifier trains: a step 136-143 ms instead of 179-186 on two CPU cores
    net = InkNet(cfg.local_paper).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    order = torch.Generator().manual_seed(cfg.seed)
    history = []
    net.train()
    for step in range(cfg.steps):
        i = torch.randint(0, len(x), (cfg.batch_size,), generator=order)
        xb, yb = to_input(x[i].to(device)).contiguous(memory_format=torch.channels_last), y[i].to(device).float()
        if torch.rand(1, generator=order).item() < 0.5:  # mirrored: digits are not, the scene's structure is
            xb, yb = xb.flip(3), yb.flip(3)
        loss = ink_loss(net(xb), yb, cfg.hard_negatives if step >= cfg.mine_after * cfg.steps else 0.0)
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
    net = InkNet(ckpt.get("config", {}).get("local_paper", False))
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
    p.add_argument("--real-photos", action=argparse.BooleanOptionalAction, default=d.real_photos,
                   help="with --generic, real photographs where installed (python -m digitpipe.train.real_photos "
                        "install) as backgrounds, and 10%% of scenes a photograph with no digit")
    p.add_argument("--local-paper", action=argparse.BooleanOptionalAction, default=d.local_paper,
                   help="the network also sees each pixel against its local paper (a closing wider than a stroke)")
    p.add_argument("--hard-negatives", type=float, default=d.hard_negatives, metavar="N",
                   help="the loss counts every ink pixel and the N x as many hardest non-ink pixels (0: every pixel; "
                        "with the ink weighted 4, 1 marks everything)")
    p.add_argument("--mine-after", type=float, default=d.mine_after, metavar="FRACTION",
                   help="train this fraction of the steps on every pixel before mining hard negatives")
    p.add_argument("--data-dir", default=d.data_dir, help="where MNIST is found or fetched to")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=d.out, help="checkpoint to write (atomically, when training finished)")
    return p


def main(argv=None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    exclude = tuple(f for f in args.exclude.split(",") if f)
    cfg = DetectorConfig(scenes=args.scenes, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         exclude=exclude, data_dir=args.data_dir, out=args.out, threads=args.threads,
                         generic=args.generic, real_photos=args.real_photos, local_paper=args.local_paper,
                         hard_negatives=args.hard_negatives, mine_after=args.mine_after)
    if cfg.hard_negatives < 0 or not 0 <= cfg.mine_after <= 1:
        print("error: --hard-negatives must be 0 or more, --mine-after between 0 and 1", file=sys.stderr)
        return 2
    if min(cfg.scenes, cfg.steps, cfg.batch_size) < 1:
        print("error: --scenes, --steps and --batch-size must be at least 1", file=sys.stderr)
        return 2
    from digitpipe.train.checkpoint import train_and_save

    return train_and_save(lambda: train_detector(cfg, log=lambda *a: print(*a, flush=True)),
                          lambda net, result: save_detector(Path(cfg.out), net, cfg, result), cfg.out)


if __name__ == "__main__":
    raise SystemExit(main())
