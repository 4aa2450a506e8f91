import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitpipe.runtime.errors import ModelError
from digitpipe.runtime.metadata import ModelInfo, Preprocess, from_props, to_props
from digitpipe.runtime.onnx_props import read_metadata_props

INFO = ModelInfo(labels=tuple("0123456789"), input_name="input", input_shape=("batch", 1, 28, 28),
                 output_name="logits", preprocess=Preprocess(width=28, height=28, mean=(0.1307,), std=(0.3081,), color="gray", fit="digit"),
                 provenance={"dataset": "mnist"})


def test_roundtrip():
    props = to_props(INFO)
    assert all(isinstance(v, str) for v in props.values())
    assert from_props(props) == INFO
    assert json.loads(props["preprocess"])["mean"] == [0.1307]


def test_reject_label_roundtrips_and_must_be_a_label():
    from dataclasses import replace

    info = replace(INFO, labels=INFO.labels + ("no digit",), reject="no digit")
    props = to_props(info)
    assert json.loads(props["output"])["reject"] == "no digit" and from_props(props) == info
    assert "reject" not in json.loads(to_props(INFO)["output"])  # older files read as before: no reject class
    props["output"] = json.dumps({"name": "logits", "kind": "logits", "reject": "nothing"})
    with pytest.raises(ModelError, match="reject 'nothing' is not one of the labels"):
        from_props(props)


def test_a_sequence_output_roundtrips_and_needs_a_stride_that_divides_the_width():
    from dataclasses import replace

    info = replace(INFO, input_shape=("batch", 1, 28, 112), output_name="sequence", kind="sequence", stride=4,
                   preprocess=Preprocess(width=112, height=28, mean=(0.0,), std=(1.0,), color="gray", fit="strip"))
    props = to_props(info)
    assert from_props(props) == info and from_props(props).output_shape == (11, 1, 28)
    assert "stride" not in json.loads(to_props(INFO)["output"])
    for stride in (None, 0, 3, 113, "4"):
        props["output"] = json.dumps({"name": "sequence", "kind": "sequence", "stride": stride})
        with pytest.raises(ModelError, match="stride that divides the input width"):
            from_props(props)


@pytest.mark.parametrize("key, value, message", [
    ("labels", "not json", "'labels' is not valid JSON"),
    ("labels", "{}", "'labels' must be a JSON list"),
    ("labels", "[]", "needs 1 to 100000 labels, has 0"),
    ("labels", json.dumps(["0", "1", "0"]), "a label repeats"),
    ("labels", json.dumps(["0", "x" * 101]), "printable text of 1-100 characters"),
    ("labels", json.dumps(["0", "two\nlines"]), "printable text"),
    ("labels", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("provenance", '{"a": ' + "[" * 17 + "]" * 17 + "}", "nested more than 16 levels"),
    ("provenance", json.dumps({"notes": "x" * 1_000_001}), "over the limit of 1000000"),
    ("provenance", '{"n": ' + "9" * 5000 + "}", "'provenance' is not valid JSON"),
    ("input", json.dumps({"name": "input", "shape": [1, True, 28, 28], "color": "gray"}), "input shape"),
    ("input", json.dumps({"name": "input", "shape": [100000, 1, 28, 28], "color": "gray"}), "batch a name or 1-256"),
    ("input", json.dumps({"name": "", "shape": [1, 1, 28, 28], "color": "gray"}), "need a name"),
    ("output", json.dumps({"name": ["logits"]}), "need a name"),
    ("preprocess", '{"size": [28, 28], "mean": [NaN], "std": [0.3]}', "one finite number per input channel"),
    ("preprocess", '{"size": [28, 28], "mean": [0.1], "std": [Infinity]}', "one finite number per input channel"),
    ("preprocess", json.dumps({"size": [28, 28], "mean": [0.1], "std": [0.3], "resize_shorter": 10**9}), "resize_shorter"),
    ("input", json.dumps({"name": "input", "shape": [1, 1, 28], "color": "gray"}), "input shape"),
    ("input", json.dumps({"name": "input", "shape": [1, 3, 28, 28], "color": "gray"}), "per input channel"),
    ("preprocess", json.dumps({"size": [28, 28], "mean": [0.1], "std": [0.0]}), "std values must lie between"),
    ("preprocess", json.dumps({"size": [32, 32], "mean": [0.1], "std": [0.3]}), "does not match the input shape"),
    ("preprocess", json.dumps({"size": [28, 28], "mean": [0.1], "std": [0.3], "fit": "magic"}), "fit must be"),
    ("digitpipe", "99", "schema '99'"),
])
def test_bad_metadata_names_the_problem(key, value, message):
    props = {**to_props(INFO), key: value}
    with pytest.raises(ModelError, match=message):
        from_props(props)


def test_missing_metadata_says_how_to_get_it():
    with pytest.raises(ModelError, match="make export"):
        from_props({})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["digitpipe", "labels", "input", "output", "preprocess", "provenance", "x"]),
                       st.one_of(st.just("1"), st.text(max_size=40),
                                 st.builds(json.dumps, st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                                                                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                                                                    max_leaves=12)))))
def test_any_metadata_parses_or_fails_cleanly(props):
    try:
        info = from_props(props)
    except ModelError:
        return
    assert isinstance(info, ModelInfo)


def test_props_read_from_a_real_onnx_file():
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph)
    onnx.helper.set_model_props(model, {"labels": '["a"]', "naïve": "ü"})
    assert read_metadata_props(model.SerializeToString()) == {"labels": '["a"]', "naïve": "ü"}


@pytest.mark.parametrize("data", [b"hello, I am text\n", b"\x08\x07", b"\xff" * 64, bytes(range(256))])
def test_non_onnx_bytes_are_refused(data):
    with pytest.raises(ModelError, match="not an ONNX model"):
        read_metadata_props(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_cleanly(data):
    try:
        read_metadata_props(data)
    except ModelError:
        pass


def test_schema_1_files_with_the_unused_ink_field_still_load():
    props = to_props(INFO)
    assert props["digitpipe"] == "2" and "ink" not in json.loads(props["preprocess"])
    old = dict(props, digitpipe="1", preprocess=json.dumps({**json.loads(props["preprocess"]), "ink": "light_on_dark"}))
    assert from_props(old) == from_props(props)
    with pytest.raises(ModelError, match="schema '3'"):
        from_props(dict(props, digitpipe="3"))


def test_a_checkpoint_spec_round_trips_and_older_flat_specs_still_load():
    from digitpipe.train.datasets import MNIST, SPECS, DatasetSpec, with_reject_class

    for spec in (*SPECS.values(), with_reject_class(MNIST)):
        assert DatasetSpec.from_dict(spec.to_dict()) == spec
    # the layout checkpoints had before the spec held the runtime's Preprocess ("ink" included)
    flat = {"name": "mnist", "labels": [str(d) for d in range(10)], "channels": 1, "size": 28, "mean": [0.1307],
            "std": [0.3081], "fit": "digit", "ink": "light_on_dark", "resize_shorter": 0, "augment": "digits",
            "source": "", "reject": ""}
    assert DatasetSpec.from_dict(flat) == MNIST


def test_a_file_that_names_no_fit_reads_like_the_default_preprocess():
    props = to_props(INFO)
    pre = json.loads(props["preprocess"])
    del pre["fit"]
    assert from_props(dict(props, preprocess=json.dumps(pre))).preprocess.fit == Preprocess(width=28, height=28, mean=(0.5,), std=(0.5,)).fit
