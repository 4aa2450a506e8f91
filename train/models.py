"""Network definitions, rebuilt from a plain config dict stored in every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from digitpipe.runtime.errors import first_line


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 28
    widths: tuple[int, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**{**d, "widths": tuple(d.get("widths", ()))})


# Written into every new checkpoint's config, so a checkpoint rebuilds the same network
# even if these defaults change.
DEFAULT_WIDTHS = {"digitnet": (24, 48, 96), "cifarnet": (32, 64, 128), "mlp": (100,)}


def conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitNet(nn.Module):
    """The default digit model: conv-BN-ReLU blocks, two poolings, global average pooling.

    Cheap at 28x28 (one 5x5 stem at full resolution, the rest at 14x14 and 7x7), so a
    2-core CPU passes 99% within its first epoch. Flatten uses a fixed reshape, which every
    ONNX consumer (cv2.dnn included) handles.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w1, w2, w3 = cfg.widths or DEFAULT_WIDTHS["digitnet"]
        self.features = nn.Sequential(
            conv_bn(cfg.in_channels, w1, 5),
            nn.MaxPool2d(2),  # 14x14
            conv_bn(w1, w2),
            conv_bn(w2, w2),
            nn.MaxPool2d(2),  # 7x7
            conv_bn(w2, w3),
            conv_bn(w3, w3),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(w3, cfg.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ClassicCNN(nn.Module):
    """The two-conv network of pytorch/examples mnist/main.py, kept as the baseline."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        side = (cfg.input_size - 4) // 2
        self.net = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, cfg.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    """The 784-100-10 multilayer perceptron of the first tutorials."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        (hidden,) = cfg.widths or DEFAULT_WIDTHS["mlp"]
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(cfg.in_channels * cfg.input_size**2, hidden), nn.ReLU(),
                                 nn.Linear(hidden, cfg.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CifarCNN(nn.Module):
    """The three-conv CIFAR-10 tutorial network: conv-ReLU-pool x3, then dropout and two linear layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w1, w2, w3 = cfg.widths or DEFAULT_WIDTHS["cifarnet"]
        side = cfg.input_size // 2 // 2 // 2
        self.net = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(w3 * side * side, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, cfg.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


RESNETS = ("resnet18", "resnet34", "resnet50")


def build_resnet(cfg: ModelConfig) -> nn.Module:
    """torchvision's ResNet with a new head; a 3x3 stride-1 stem without max-pool for small inputs."""
    import torchvision

    model = getattr(torchvision.models, cfg.arch)(weights=None)
    if cfg.input_size < 64:
        model.conv1 = nn.Conv2d(cfg.in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif cfg.in_channels != 3:
        model.conv1 = nn.Conv2d(cfg.in_channels, 64, 7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, cfg.num_classes)
    return model


def load_pretrained(model: nn.Module, path: str) -> list[str]:
    """Load ImageNet weights (a torchvision state_dict file) into everything but the head.

    Layers whose shape differs (a small stem, a gray first conv: its RGB filters are summed)
    are adapted or left as initialised; returns the names of the tensors not loaded."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing, truncated, not a torch file: one clear line
        raise ValueError(f"{path}: not a readable weights file ({first_line(exc)[:120]})") from None
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise ValueError(f"{path}: not a torchvision ResNet state_dict")
    own = model.state_dict()
    skipped = []
    for name, tensor in state.items():
        if name.startswith("fc.") or name not in own:
            continue
        if name == "conv1.weight" and tensor.shape[1] == 3 and own[name].shape[1] == 1 and tensor.shape[2:] == own[name].shape[2:]:
            tensor = tensor.sum(dim=1, keepdim=True)
        if tensor.shape != own[name].shape:
            skipped.append(name)
            continue
        own[name] = tensor
    model.load_state_dict(own)
    return skipped


def backbone_parameters(model: nn.Module):
    """Everything but the classification head: what a frozen-backbone stage holds still."""
    head = model.fc if hasattr(model, "fc") else None
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    return [p for p in model.parameters() if id(p) not in head_ids]


ARCHS = {"digitnet": DigitNet, "classic": ClassicCNN, "mlp": MLP, "cifarnet": CifarCNN,
         **{name: build_resnet for name in RESNETS}}


def build_model(cfg: ModelConfig) -> nn.Module:
    try:
        return ARCHS[cfg.arch](cfg)
    except KeyError:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose from {', '.join(ARCHS)}") from None
