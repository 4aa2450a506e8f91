"""Export: what the file carries, and that a failed verification changes nothing."""
import json

import numpy as np
import onnx
import pytest
import torch

from digitpipe.export import cli as export_cli
from digitpipe.runtime.metadata import from_props
from digitpipe.runtime.model import Model
from tests.conftest import DATA_DIR, VERIFY_IMAGES

pytestmark = pytest.mark.slow


def test_exported_file_describes_itself(exported, trained):
    path, report = exported
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    info = from_props(props)
    assert info.labels == tuple(str(d) for d in range(10)) + ("no digit",) and info.reject == "no digit"
    assert info.preprocess.mean == (0.1307,) and info.preprocess.std == (0.3081,) and info.preprocess.fit == "digit"
    assert info.input_shape == ("batch", 1, 28, 28) and proto.opset_import[0].version == export_cli.DEFAULT_OPSET
    prov = json.loads(props["provenance"])
    ckpt_path, summary = trained
    assert prov["test_accuracy"] == summary["test_acc"] and len(prov["checkpoint_sha256"]) == 64
    assert {"torch", "onnx", "onnxruntime", "opencv"} <= set(prov["versions"])


def test_report_figures(exported):
    path, report = exported
    on_disk = json.loads(path.with_suffix(".report.json").read_text())
    assert on_disk["passed"] and on_disk["onnx_sha256"] == report["onnx_sha256"]
    names = [c["name"] for c in on_disk["comparisons"]]
    assert names == ["random tensors: onnxruntime", "random tensors: opencv", "test images: onnxruntime", "test images: opencv"]
    for c in on_disk["comparisons"]:
        assert c["max_abs_logit_diff"] <= 1e-4 and c["top1_agreement"] == 1.0
    assert on_disk["comparisons"][-1]["count"] == VERIFY_IMAGES
    assert abs(on_disk["comparisons"][-1]["accuracy"] - on_disk["pytorch_test_accuracy"]) < 1e-9
    assert on_disk["preprocess_max_abs_diff"] < 1e-5


@pytest.mark.parametrize("exporter", ["dynamo"])
def test_other_exporter_and_static_batch_verify(trained, tmp_path, exporter):
    ckpt, _ = trained
    out = tmp_path / "d.onnx"
    code = export_cli.main(["--checkpoint", str(ckpt), "--out", str(out), "--exporter", exporter, "--static-batch",
                            "--data-dir", str(DATA_DIR), "--verify-images", str(VERIFY_IMAGES)])
    assert code == 0
    model = Model(out, backend="opencv")
    assert model.info.fixed_batch == 1
    best, conf = model.classify([np.zeros((28, 28), np.uint8)] * 3)  # a batch of 3 runs one by one
    assert len(best) == 3


def test_failed_verification_keeps_the_previous_model(exported, trained, tmp_path, monkeypatch, capsys):
    """Metadata that disagrees with training (a wrong std) must be caught and refused."""
    good, _ = exported
    ckpt, _ = trained
    out = tmp_path / "digits.onnx"
    out.write_bytes(good.read_bytes())
    before = out.read_bytes()
    real_info = export_cli.model_info

    def wrong_std(*args, **kwargs):
        info = real_info(*args, **kwargs)
        pp = info.preprocess
        return type(info)(**{**info.__dict__, "preprocess": type(pp)(**{**pp.__dict__, "std": (0.5,)})})

    monkeypatch.setattr(export_cli, "model_info", wrong_std)
    code = export_cli.main(["--checkpoint", str(ckpt), "--out", str(out), "--data-dir", str(DATA_DIR), "--verify-images", "200"])
    err = capsys.readouterr().err
    assert code == 1 and "verification failed" in err and "unchanged" in err
    assert out.read_bytes() == before
    rejected = json.loads(out.with_suffix(".rejected.report.json").read_text())
    assert not rejected["passed"] and rejected["preprocess_max_abs_diff"] > 0.1
    assert not list(tmp_path.glob(".*candidate*"))


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    code = export_cli.main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "no such checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("arch", ["mlp", "classic", "cifarnet", "resnet18"])
def test_every_arch_verifies_with_both_exporters(arch, exporter, tmp_path):
    """The default exporter must verify on onnxruntime and cv2.dnn for every arch we ship; so must the other."""
    from digitpipe.train import checkpoint
    from digitpipe.train.datasets import MNIST
    from digitpipe.train.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch)
    model = build_model(cfg).eval()
    ckpt = tmp_path / f"{arch}.pt"
    checkpoint.save(ckpt, {"model_state": model.state_dict(), "model_config": cfg.to_dict(), "dataset": MNIST.to_dict()})
    out = tmp_path / f"{arch}.onnx"
    code = export_cli.main(["--checkpoint", str(ckpt), "--out", str(out), "--exporter", exporter, "--no-int8",
                            "--data-dir", str(DATA_DIR), "--verify-images", "100"])
    report = json.loads(out.with_suffix(".report.json").read_text()) if out.exists() else {}
    assert code == 0 and report["passed"], report
