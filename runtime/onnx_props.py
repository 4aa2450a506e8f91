"""Read an ONNX file's metadata_props and graph inputs straight from its protobuf bytes.

The runtime needs the metadata before it picks a backend, and the `onnx` package is a
training-side dependency, so this walks the few protobuf fields it needs itself:
ModelProto: ir_version = 1, graph = 7, metadata_props = 14 (key = 1, value = 2);
GraphProto: input = 11, output = 12 (ValueInfoProto: name = 1, type = 2 -> tensor_type = 1
-> shape = 2 -> dim = 1 (dim_value = 1, dim_param = 2)).
"""
from __future__ import annotations

from digitpipe.runtime.errors import ModelError

_IR_VERSION, _GRAPH, _METADATA_PROPS = 1, 7, 14
_GRAPH_INPUT, _GRAPH_OUTPUT = 11, 12


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield (field_number, wire_type, value) for one message; value is bytes for wire type 2."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf) or field == 0:
            raise ValueError("truncated message")
        yield field, wire, value


def read_metadata_props(model_bytes: bytes) -> dict[str, str]:
    """metadata_props of an ONNX ModelProto; ModelError if the bytes are not one."""
    return read_model_summary(model_bytes)[0]


def read_model_summary(model_bytes: bytes) -> tuple[dict[str, str], dict[str, tuple], dict[str, tuple]]:
    """(metadata_props, {input name: shape}, {output name: shape}); a dimension is an int or a name."""
    props: dict[str, str] = {}
    inputs: dict[str, tuple] = {}
    outputs: dict[str, tuple] = {}
    seen_ir = seen_graph = False
    try:
        for field, wire, value in _fields(memoryview(model_bytes)):
            if field == _IR_VERSION and wire == 0:
                seen_ir = True
            elif field == _GRAPH and wire == 2:
                seen_graph = True
                inputs = dict(_graph_values(value, _GRAPH_INPUT))
                outputs = dict(_graph_values(value, _GRAPH_OUTPUT))
            elif field == _METADATA_PROPS and wire == 2:
                entry = {f: bytes(v).decode("utf-8") for f, w, v in _fields(value) if w == 2}
                props[entry.get(1, "")] = entry.get(2, "")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"not an ONNX model ({exc})") from None
    if not (seen_ir and seen_graph):
        raise ModelError("not an ONNX model (no ir_version or graph)")
    return props, inputs, outputs


def _graph_values(graph: memoryview, which: int) -> list[tuple[str, tuple]]:
    """(name, shape) of each graph input (which=11) or output (which=12)."""
    values = []
    for field, wire, value in _fields(graph):
        if field != which or wire != 2:
            continue
        name, shape = "", ()
        for f, w, v in _fields(value):
            if f == 1 and w == 2:
                name = bytes(v).decode("utf-8")
            elif f == 2 and w == 2:
                shape = _tensor_shape(v)
        values.append((name, shape))
    return values


def _tensor_shape(type_proto: memoryview) -> tuple:
    dims = []
    for f, w, tensor in _fields(type_proto):
        if f != 1 or w != 2:  # tensor_type
            continue
        for f2, w2, shape in _fields(tensor):
            if f2 != 2 or w2 != 2:  # shape
                continue
            for f3, w3, dim in _fields(shape):
                if f3 != 1 or w3 != 2:
                    continue
                value = "?"
                for f4, w4, v in _fields(dim):
                    if f4 == 1 and w4 == 0:
                        value = v
                    elif f4 == 2 and w4 == 2:
                        value = bytes(v).decode("utf-8")
                dims.append(value)
    return tuple(dims)
