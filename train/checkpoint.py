"""Checkpoints: plain dicts of tensors and primitives, safe to load with weights_only=True."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from digitpipe.runtime.errors import first_line
from digitpipe.train.files import atomic_write_bytes
from digitpipe.train.models import ModelConfig, build_model

FORMAT = "digitpipe-checkpoint/1"


class CheckpointError(RuntimeError):
    pass


def save(path: Path, payload: dict) -> str:
    """Write atomically; return the sha256 of the written bytes."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    data = buf.getvalue()
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (train one with `make train`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a digitpipe checkpoint")
    return ckpt


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    return model.eval()


def train_and_save(train, save, out: str) -> int:
    """A training script's main: train() -> (net, result), then save(net, result) writes the
    checkpoint `out` atomically. Interrupted or failed, it says so in one line and `out` stays
    as it was. Returns the exit code."""
    import sys

    from digitpipe.runtime.errors import first_line

    try:
        net, result = train()
        save(net, result)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {out} is unchanged", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {first_line(exc)}; {out} is unchanged", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
