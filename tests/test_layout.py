"""The dependency rule of the layout: runtime/ imports nothing of the training side."""
import ast
from pathlib import Path

from tests.conftest import ROOT

FORBIDDEN = ("torch", "torchvision", "onnx", "digitpipe.train", "digitpipe.export")


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_runtime_never_imports_the_training_side():
    files = sorted((ROOT / "runtime").glob("*.py")) + [ROOT / "digitpipe" / "__init__.py"]
    assert len(files) > 5
    offenders = {f.name: sorted(m for m in imported_modules(f) if forbidden(m)) for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_every_import_of_our_own_code_goes_through_digitpipe():
    """A bare `import runtime` works from the repository root and nowhere else."""
    for folder in ("runtime", "train", "export", "bench", "tests", "digitpipe"):
        for f in sorted((ROOT / folder).glob("*.py")):
            bare = {m for m in imported_modules(f) if m.split(".")[0] in {"runtime", "train", "export"}}
            assert not bare, f"{folder}/{f.name}: {sorted(bare)}"


# Training reads image folders with the runtime's own reading and resizing, and normalises
# its generated non-digit ink with the runtime's digit normalisation, so that the images a
# model learns from are prepared exactly as the deployed runtime prepares photos; its
# dataset specs describe that preparation with the metadata contract's own Preprocess. The
# sequence reader's validation decodes with the runtime's own CTC decoding, so that its figure
# is the deployed reader's.
TRAIN_MAY_USE = {f"digitpipe.runtime.{m}" for m in ("errors", "imageio", "preprocess", "digits", "metadata", "sequence")}


def test_train_uses_only_the_runtime_image_preparation():
    for f in sorted((ROOT / "train").glob("*.py")):
        ours = {m for m in imported_modules(f) if m.startswith(("digitpipe.export", "digitpipe.runtime"))}
        assert ours <= TRAIN_MAY_USE, f.name
