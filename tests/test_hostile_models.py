"""Models are input too: broken or hostile ONNX files through the real run-digit entry point.

Each case runs run-digit in a child process under a memory limit (RLIMIT_AS: run-digit's
own peak on this machine plus HEADROOM) and must end
with a documented exit code, at most one line on stderr, no traceback and no files left
behind. The cases come from a fuzzer (hypothesis) that mutates a real model file, the
stand-in digit model: metadata fields replaced by arbitrary JSON, graph inputs and outputs
renamed or reshaped, nodes replaced by unknown operators, bytes truncated or flipped; plus
memory bombs declared in the file and built by the graph at inference.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from digitpipe.runtime.cli import EXIT_INPUT_FAILED, EXIT_MODEL_FAILED, EXIT_OK, EXIT_USAGE
from tests.conftest import ROOT, STAND_IN_LABELS

pytestmark = pytest.mark.slow
HEADROOM = 2 << 30  # address space a case may use beyond run-digit's own peak (the bombs ask for 3.6-40 GB)
EXIT_CODES = {EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE, EXIT_MODEL_FAILED}
BACKENDS = ("onnxruntime", "opencv")
CHILD = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
         "import runtime.cli as c; sys.exit(c.main(sys.argv[1:]))")
PEAK = ("import re, sys, runtime.cli as c; rc = c.main(sys.argv[1:]); "
        "print(re.search(r'VmPeak:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr); sys.exit(rc)")


def run_limited(model: Path, image: Path, *args: str, cwd: Path, limit: int):
    done = subprocess.run([sys.executable, "-c", CHILD.format(limit=limit), "--no-window", "--model", str(model),
                           "--image", str(image), *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return done.returncode, done.stdout, done.stderr


def assert_clean(code: int, err: str, folder: Path, before: set, what) -> None:
    """A documented exit code, one line (none on success), no traceback, nothing left behind."""
    lines = err.strip().splitlines()
    assert code in EXIT_CODES, (what, code, err[-2000:])
    assert "Traceback" not in err and len(lines) == (0 if code == EXIT_OK else 1), (what, err[-2000:])
    if code != EXIT_OK:
        assert lines[0].startswith("run-digit: "), (what, lines)
    assert set(os.listdir(folder)) == before, (what, set(os.listdir(folder)) ^ before)


class Base(NamedTuple):
    proto: onnx.ModelProto  # the stand-in model, for the mutations to start from
    photo: Path  # a photo it reads
    limit: int  # the children's address-space limit


@pytest.fixture(scope="module")
def base(stand_in_model, mnist_test, tmp_path_factory) -> Base:
    """The limit is run-digit's own peak on this machine plus HEADROOM: thread pools reserve
    address space per core, so a fixed limit would pass here and fail on a bigger machine."""
    from digitpipe.train.photos import render_photo

    folder = tmp_path_factory.mktemp("hostile-models")
    photo = folder / "photo.png"
    cv2.imwrite(str(photo), render_photo([mnist_test[0][0]], np.random.default_rng(0)))
    peaks = []
    for backend in BACKENDS:
        done = subprocess.run([sys.executable, "-c", PEAK, "--no-window", "--backend", backend, "--model", stand_in_model,
                               "--image", str(photo)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == EXIT_OK, done.stderr[-1500:]
        peaks.append(int(done.stderr.split()[-1]) * 1024)
    return Base(onnx.load(stand_in_model), photo, max(peaks) + HEADROOM)


def copy_of(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def check_mutant(proto_or_bytes, base: Base, what, backend: str = "onnxruntime") -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="digitpipe-fuzz-") as tmp:
        folder = Path(tmp)
        model = folder / "mutant.onnx"
        data = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
        model.write_bytes(data)
        before = set(os.listdir(folder))
        code, out, err = run_limited(model, base.photo, "--backend", backend, cwd=folder, limit=base.limit)
        assert_clean(code, err, folder, before, what)
        return code, err


def test_the_unmutated_model_reads_under_the_limit(base):
    for backend in BACKENDS:
        code, err = check_mutant(base.proto, base, "unmutated", backend)
        assert code == EXIT_OK, err


# -- the fuzzer -------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                    max_leaves=20)
DEEP = st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n)
KEYS = st.sampled_from(["digitpipe", "labels", "input", "output", "preprocess", "provenance"])
FUZZ = settings(max_examples=int(os.environ.get("DIGITPIPE_FUZZ_EXAMPLES", "12")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def with_metadata(proto, key: str, value: str):
    out = copy_of(proto)
    for p in out.metadata_props:
        if p.key == key:
            p.value = value
    return out


@FUZZ
@given(key=KEYS, value=st.one_of(JSON.map(json.dumps), DEEP, st.text(max_size=50)), backend=st.sampled_from(BACKENDS))
def test_fuzzed_metadata(base, key, value, backend):
    proto = base.proto
    check_mutant(with_metadata(proto, key, value), base, (key, value[:200]), backend)


@FUZZ
@given(which=st.sampled_from(["input", "output"]), name=st.none() | st.text(max_size=30),
       dims=st.none() | st.lists(st.integers(-2, 2**40) | st.text(max_size=5), max_size=6),
       backend=st.sampled_from(BACKENDS))
def test_fuzzed_graph_inputs_and_outputs(base, which, name, dims, backend):
    proto = base.proto
    mutant = copy_of(proto)
    value = (mutant.graph.input if which == "input" else mutant.graph.output)[0]
    if name is not None:
        value.name = name
    if dims is not None:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d
    check_mutant(mutant, base, (which, name, dims), backend)


@FUZZ
@given(node=st.integers(0, 1000), op=st.text(min_size=1, max_size=12), domain=st.sampled_from(["", "ai.onnx", "com.evil"]),
       backend=st.sampled_from(BACKENDS))
def test_fuzzed_unknown_operators(base, node, op, domain, backend):
    proto = base.proto
    mutant = copy_of(proto)
    target = mutant.graph.node[node % len(mutant.graph.node)]
    target.op_type, target.domain = op, domain
    check_mutant(mutant, base, (node, op, domain), backend)


@FUZZ
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=8),
       backend=st.sampled_from(BACKENDS))
def test_fuzzed_bytes(base, cut, flips, backend):
    proto = base.proto
    data = bytearray(proto.SerializeToString())
    for where, mask in flips:
        data[int(where * (len(data) - 1))] ^= mask
    check_mutant(bytes(data[: max(1, int(cut * len(data)))] if cut < 0.999 else data), base, (cut, flips), backend)


# -- cases found before the fuzzer, kept as named tests -------------------------------

def test_deeply_nested_metadata_is_refused_in_one_line(base):
    proto = base.proto
    code, err = check_mutant(with_metadata(proto, "labels", "[" * 100_000 + "]" * 100_000), base, "deep")
    assert code == EXIT_USAGE and "nested too deeply" in err


def test_metadata_naming_what_the_graph_lacks(base):
    proto = base.proto
    output = json.loads(next(p.value for p in proto.metadata_props if p.key == "output"))
    code, err = check_mutant(with_metadata(proto, "output", json.dumps({**output, "name": "scores"})), base, "output")
    assert code == EXIT_USAGE and "the graph has no output 'scores'" in err
    labels = json.dumps(list(STAND_IN_LABELS[:-1]))  # one label fewer than the graph's scores
    output_without_reject = json.dumps({k: v for k, v in output.items() if k != "reject"})
    fewer = with_metadata(with_metadata(proto, "labels", labels), "output", output_without_reject)
    code, err = check_mutant(fewer, base, "labels")
    assert code == EXIT_USAGE and "gives 11 scores per input, but there are 10 labels" in err


def enormous_input_model(side: int = 30_000):
    """A graph and metadata that agree on a side x side input (3.6 GB as one float blob)."""
    from digitpipe.runtime.metadata import ModelInfo, Preprocess, to_props

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, side, side])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    pool = helper.make_node("GlobalAveragePool", ["input"], ["pooled"])
    flat = helper.make_node("Flatten", ["pooled"], ["flat"])
    both = helper.make_node("Concat", ["flat", "flat"], ["logits"], axis=1)
    model = helper.make_model(helper.make_graph([pool, flat, both], "huge", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    info = ModelInfo(labels=("a", "b"), input_name="input", input_shape=("batch", 1, side, side), output_name="logits",
                     preprocess=Preprocess(width=side, height=side, mean=(0.5,), std=(0.5,), fit="resize"))
    for key, value in to_props(info).items():
        model.metadata_props.add(key=key, value=value)
    return model


def test_an_enormous_declared_input_is_refused_before_anything_is_built(base):
    code, err = check_mutant(enormous_input_model(), base, "enormous")
    assert code == EXIT_USAGE and "over the limit of 4194304 (--max-model-pixels)" in err


def inference_bomb(proto):
    """The stand-in with its output fed through a node that allocates 40 GB at inference."""
    bomb = copy_of(proto)
    graph = bomb.graph
    last = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{o}_inner" if o == last else o for o in node.output]
    shape = helper.make_tensor("bomb_shape", TensorProto.INT64, [2], [100_000, 100_000])
    graph.initializer.append(shape)
    graph.node.extend([
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], keepdims=0),
        helper.make_node("Add", [f"{last}_inner", "bomb_sum"], [last]),
    ])
    return bomb


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_memory_bomb_at_inference_fails_within_the_limit(base, backend):
    proto = base.proto
    code, err = check_mutant(inference_bomb(proto), base, "bomb", backend)
    assert code in (EXIT_USAGE, EXIT_MODEL_FAILED), err  # refused at load, or failed at its first run


def test_an_inference_failure_ends_a_video_with_what_was_read(base, tmp_path, capsys, monkeypatch):
    """In a stream the frames read before stand; a backend failure ends it in one line, exit 3."""
    from digitpipe.runtime.backends import OnnxRuntimeBackend
    from digitpipe.runtime.cli import main
    from tests.test_cli_fast import write_video

    model = tmp_path / "m.onnx"
    model.write_bytes(base.proto.SerializeToString())
    video = write_video(tmp_path / "clip.avi", [cv2.imread(str(base.photo))] * 6)
    runs, real = [], OnnxRuntimeBackend.run

    def fails_on_the_fourth_frame(self, blob):
        runs.append(len(blob))
        if len(runs) == 4:  # what onnxruntime raises when an allocation fails
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation\nsecond line")
        return real(self, blob)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", fails_on_the_fourth_frame)
    code = main(["--no-window", "--json", "--model", str(model), "--video", str(video)])
    out, err = capsys.readouterr()
    assert code == EXIT_MODEL_FAILED
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r.get("frame") for r in lines] == [0, 1, 2, None] and "error" in lines[-1]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "stopped at frame 3" in err and "onnxruntime failed at inference (" in err and "bad allocation" in err


# -- the training side's tools on damaged files -----------------------------------------

def damaged_models(proto) -> dict:
    """Named damaged copies of a model, as bytes: the cases above, for the other entry points."""
    unknown = copy_of(proto)
    unknown.graph.node[0].op_type = "NoSuchOperator"
    data = proto.SerializeToString()
    return {"deeply nested labels": with_metadata(proto, "labels", "[" * 50_000 + "]" * 50_000).SerializeToString(),
            "unknown operator": unknown.SerializeToString(), "truncated": data[: len(data) // 2],
            "enormous input": enormous_input_model().SerializeToString(),
            "no metadata": _without_metadata(proto)}


def _without_metadata(proto) -> bytes:
    bare = copy_of(proto)
    del bare.metadata_props[:]
    return bare.SerializeToString()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained MLP checkpoint: digitpipe-check refuses the file before any PyTorch work."""
    from digitpipe.train import checkpoint
    from digitpipe.train.datasets import MNIST, with_reject_class
    from digitpipe.train.models import ModelConfig, build_model

    cfg = ModelConfig("mlp", num_classes=11)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    checkpoint.save(path, {"model_state": build_model(cfg).state_dict(), "model_config": cfg.to_dict(),
                           "dataset": with_reject_class(MNIST).to_dict()})
    return path


def test_digitpipe_check_refuses_damaged_files_in_one_line(base, tiny_checkpoint, tmp_path, capsys):
    from digitpipe.export.check import main as check

    proto = base.proto
    for name, data in damaged_models(proto).items():
        model = tmp_path / f"{name}.onnx"
        model.write_bytes(data)
        code = check(["--model", str(model), "--checkpoint", str(tiny_checkpoint), "--images", "10"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (name, err)
        assert "Traceback" not in err and str(model) in err, (name, err)


def test_export_verification_refuses_damaged_bytes_and_keeps_the_installed_file(base, tmp_path):
    """What export installs goes through the runtime first: bytes it refuses leave nothing behind."""
    from digitpipe.export.cli import install
    from digitpipe.runtime.errors import ModelError

    proto = base.proto
    out = tmp_path / "digits.onnx"
    out.write_bytes(b"the last good model")
    for name, data in damaged_models(proto).items():
        with pytest.raises(ModelError) as refused:
            install(data, out, lambda path, runtimes: pytest.fail("verified a refused file"), {})
        assert "\n" not in str(refused.value), name
        assert out.read_bytes() == b"the last good model" and sorted(os.listdir(tmp_path)) == ["digits.onnx"], name


def test_export_says_in_one_line_when_the_runtime_refuses_what_it_wrote(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import digitpipe.export.cli as export_cli
    from tests.conftest import DATA_DIR

    real = export_cli.attach_metadata
    monkeypatch.setattr(export_cli, "attach_metadata",
                        lambda proto, info: with_metadata(real(proto, info), "labels", "[" * 50_000 + "]" * 50_000))
    out = tmp_path / "digits.onnx"
    out.write_bytes(b"the last good model")
    code = export_cli.main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--data-dir", str(DATA_DIR),
                            "--verify-images", "10", "--no-int8"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "nested too deeply" in err, err
    assert "previous models are unchanged" in err and out.read_bytes() == b"the last good model"
    assert sorted(os.listdir(tmp_path)) == ["digits.onnx"]
