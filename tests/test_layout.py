"""The dependency rule of the layout: runtime/ imports nothing of the training side."""
import ast
from pathlib import Path

from tests.conftest import ROOT

FORBIDDEN = {"torch", "torchvision", "train", "export", "onnx"}


def imported_roots(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_runtime_never_imports_the_training_side():
    files = sorted((ROOT / "runtime").glob("*.py"))
    assert len(files) > 5
    offenders = {f.name: sorted(set(imported_roots(f)) & FORBIDDEN) for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


# Training reads image folders with the runtime's own reading and resizing, and normalises
# its generated non-digit ink with the runtime's digit normalisation, so that the images a
# model learns from are prepared exactly as the deployed runtime prepares photos; its
# dataset specs describe that preparation with the metadata contract's own Preprocess.
TRAIN_MAY_USE = {"runtime.errors", "runtime.imageio", "runtime.preprocess", "runtime.digits", "runtime.metadata"}


def test_train_uses_only_the_runtime_image_preparation():
    for f in sorted((ROOT / "train").glob("*.py")):
        ours = {m for m in imported_modules(f) if m.split(".")[0] in {"export", "runtime"}}
        assert ours <= TRAIN_MAY_USE, f.name
