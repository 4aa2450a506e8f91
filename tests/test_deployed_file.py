"""The deployed files: INT8 copy, export report, dataset-level check, hash check at run time."""
import json
import shutil

import onnx
import pytest

from digitpipe.export import check as check_cli
from digitpipe.export import cli as export_cli
from digitpipe.export import verify
from digitpipe.runtime.cli import EXIT_OK, EXIT_USAGE
from digitpipe.runtime.cli import main as run_digit
from digitpipe.runtime.model import Model
from tests.conftest import DATA_DIR, write_png

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8(exported):
    path, report = exported
    assert "int8" in report, "make export writes the INT8 copy by default"
    return path.with_name("digits.int8.onnx"), report["int8"]


def parity(pytorch: float, *runtimes: float) -> dict:
    """Dataset parity figures as export and `make check` see them (1,000 images)."""
    return {"pytorch_test_accuracy": pytorch,
            "comparisons": [verify.Comparison(f"test images: r{i}", 1000, 0.0, 1.0, 0, a) for i, a in enumerate(runtimes)]}


def test_one_accuracy_rule_with_exact_points():
    assert verify.points(0.989, 0.987) == 0.2  # a drop of exactly the allowance passes
    assert verify.accuracy_gap(parity(0.989, 0.987, 0.989), int8=True) == 0.2 <= verify.allowed_gap(int8=True)
    # INT8: clearly inside, clearly outside, and scoring higher than PyTorch is no drop
    assert verify.accuracy_gap(parity(0.990, 0.9895, 0.990), int8=True) == 0.05
    assert verify.accuracy_gap(parity(0.990, 0.985, 0.990), int8=True) == 0.5 > verify.allowed_gap(int8=True)
    assert verify.accuracy_gap(parity(0.990, 0.993, 0.992), int8=True) == -0.2
    # A float file must match PyTorch either way
    assert verify.accuracy_gap(parity(0.990, 0.993, 0.990), int8=False) == 0.3 > verify.allowed_gap(int8=False)


@pytest.mark.parametrize("score, passes", [(+0.3, True), (-0.1, True), (-0.5, False)])
def test_export_and_check_judge_an_int8_file_alike(int8, trained, monkeypatch, capsys, score, passes):
    """An INT8 file that scores higher than PyTorch installs, and then passes `make check` too."""
    path, report = int8
    ckpt, _ = trained
    ref = report["pytorch_test_accuracy"]
    figures = parity(ref, ref + score / 100, ref)
    figures["preprocess_max_abs_diff"] = 0.0
    monkeypatch.setattr(verify, "dataset_parity", lambda *a, **k: figures)
    monkeypatch.setattr(check_cli, "dataset_parity", lambda *a, **k: figures)
    runtimes = verify.open_runtimes(path)
    assert verify.verify_int8(path, runtimes, None, None, None)["passed"] is passes
    code = check_cli.main(["--model", str(path), "--checkpoint", str(ckpt), "--data-dir", str(DATA_DIR), "--images", "10"])
    out, err = capsys.readouterr()
    assert code == (0 if passes else 1), err
    assert "drop below PyTorch" in out and ("accuracy drops by 0.500 points" in err) is not passes


def test_int8_copy_is_verified_on_accuracy_and_smaller(int8, exported):
    path, report = int8
    float_path, float_report = exported
    assert report["passed"] and report["kind"] == "int8"
    assert path.stat().st_size == report["onnx_bytes"] < 0.35 * float_path.stat().st_size
    ref = report["pytorch_test_accuracy"]
    drops = [verify.points(ref, c["accuracy"]) for c in report["comparisons"]]
    assert report["accuracy_drop_points"] == pytest.approx(max(drops)) and max(drops) <= verify.INT8_MAX_DROP
    assert [c["name"] for c in report["comparisons"]] == ["test images: onnxruntime", "test images: opencv"]
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QLinearConv", "QuantizeLinear"} <= ops  # really quantized, in the format cv2.dnn loads
    prov = Model(path, backend="opencv").info.provenance
    assert prov["quantization"]["format"] == "QOperator" and prov["checkpoint_sha256"] == float_report["checkpoint_sha256"]
    for runtime, figures in report["latency"].items():
        assert figures["batch1_p50_ms"] > 0 and figures["images_per_s"] > 0, runtime


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_run_digit_reads_with_the_int8_file(int8, mnist_test, tmp_path, capsys, backend):
    path, _ = int8
    images, labels = mnist_test
    files = [write_png(tmp_path / f"{i}.png", images[i]) for i in range(50)]
    code = run_digit(["--no-window", "--json", "--model", str(path), "--backend", backend, "--image", *map(str, files)])
    texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_OK
    assert sum(t == str(labels[i]) for i, t in enumerate(texts)) >= 45  # the file scores ~98.7% on MNIST


def test_reports_in_markdown_beside_json(exported, int8):
    for path, report in (exported, int8):
        md = path.with_suffix(".report.md").read_text()
        assert report["onnx_sha256"] in md and "## Parity with PyTorch" in md and "## Latency" in md
        assert f"| PyTorch (training transform) | {report['pytorch_test_accuracy']:.2%} |" in md
    assert "## INT8 beside float32" in int8[0].with_suffix(".report.md").read_text()


def test_rejected_int8_leaves_the_previous_one(exported, trained, tmp_path, monkeypatch, capsys):
    """An INT8 file calibrated on a hundredth of the real activation range reads almost
    nothing right (about 88 points lost, the rule allows 0.2): refused, the previous one kept."""
    ckpt, _ = trained
    out = tmp_path / "digits.onnx"
    previous = tmp_path / "digits.int8.onnx"
    previous.write_bytes(b"the previous int8 file")
    real = export_cli.calibration_blob
    monkeypatch.setattr(export_cli, "calibration_blob", lambda images, spec: real(images, spec) * 0.01)
    code = export_cli.main(["--checkpoint", str(ckpt), "--out", str(out), "--data-dir", str(DATA_DIR),
                            "--verify-images", "300"])
    err = capsys.readouterr().err
    assert code == 1 and "digits.int8.onnx is unchanged" in err and len(err.strip().splitlines()) == 1
    assert previous.read_bytes() == b"the previous int8 file" and out.is_file()
    rejected = json.loads((tmp_path / "digits.int8.rejected.report.json").read_text())
    assert not rejected["passed"] and rejected["accuracy_drop_points"] > 10 * verify.INT8_MAX_DROP
    assert (tmp_path / "digits.int8.rejected.report.md").is_file()


def test_dataset_check_passes_for_the_export(exported, trained, capsys):
    path, _ = exported
    ckpt, _ = trained
    code = check_cli.main(["--model", str(path), "--checkpoint", str(ckpt), "--data-dir", str(DATA_DIR),
                           "--images", "500", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["passed"] and result["images"] == 500 and result["allowed_gap_points"] == 0.05
    for c in result["runtimes"]:
        assert c["differing_predictions"] == 0 and c["max_abs_logit_diff"] <= verify.ATOL
        assert c["accuracy"] == result["pytorch_test_accuracy"]


def test_dataset_check_fails_when_accuracy_moves(exported, trained, tmp_path, capsys):
    """A file whose preprocessing metadata is wrong reads worse than PyTorch: the check says so."""
    path, _ = exported
    ckpt, _ = trained
    proto = onnx.load(str(path))
    for p in proto.metadata_props:
        if p.key == "preprocess":
            pp = json.loads(p.value)
            pp["std"] = [1.5]
            p.value = json.dumps(pp)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    code = check_cli.main(["--model", str(bad), "--checkpoint", str(ckpt), "--data-dir", str(DATA_DIR), "--images", "300"])
    out, err = capsys.readouterr()
    assert code == 1 and "accuracy differs by" in err and "largest accuracy gap" in out


def test_dataset_check_refuses_a_foreign_checkpoint(exported, trained, tmp_path, capsys):
    path, _ = exported
    ckpt, _ = trained
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes() + b"\0")  # still loads; not the bytes the model came from
    code = check_cli.main(["--model", str(path), "--checkpoint", str(other), "--data-dir", str(DATA_DIR)])
    err = capsys.readouterr().err
    assert code == 2 and "was not exported from" in err and len(err.strip().splitlines()) == 1


def test_check_model_catches_changed_bytes(exported, mnist_test, tmp_path, capsys):
    path, _ = exported
    image = write_png(tmp_path / "d.png", mnist_test[0][0])
    model = tmp_path / "digits.onnx"
    shutil.copy(path, model)
    shutil.copy(path.with_suffix(".report.json"), tmp_path / "digits.report.json")
    assert run_digit(["--no-window", "--check-model", "--model", str(model), "--image", str(image)]) == EXIT_OK
    capsys.readouterr()

    data = bytearray(model.read_bytes())
    weights = max(onnx.load(str(model)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    data[data.find(weights) + len(weights) // 2] ^= 0x01  # one bit in a weight: the file still loads and runs
    model.write_bytes(bytes(data))
    assert run_digit(["--no-window", "--model", str(model), "--image", str(image)]) == EXIT_OK  # not asked to check
    capsys.readouterr()
    code = run_digit(["--no-window", "--check-model", "--model", str(model), "--image", str(image)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "changed since export" in err and len(err.strip().splitlines()) == 1

    (tmp_path / "digits.report.json").unlink()
    code = run_digit(["--no-window", "--check-model", "--model", str(model), "--image", str(image)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "no export report" in err
