"""Caffe ``.caffemodel`` weights, read and written with a small protobuf wire-format codec: no Caffe,
no ``protobuf`` package, no compiled ``caffe.proto``.

A ``.caffemodel`` is one serialized ``caffe.NetParameter`` message. Of BVLC/caffe's
``src/caffe/proto/caffe.proto`` only these fields are read; every other field is skipped by its wire
type (0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit):

===================================  ======  =====================================================
message.field                        number  encoding
===================================  ======  =====================================================
NetParameter.name                    1       string
NetParameter.layer                   100     LayerParameter (the current format)
NetParameter.layers                  2       V1LayerParameter (the legacy format, before 2015)
LayerParameter.name / .type          1 / 2   string / string (e.g. ``"Convolution"``)
LayerParameter.blobs                 7       BlobProto, in order (a convolution: weights, bias)
V1LayerParameter.name / .type        4 / 5   string / enum varint (4 = CONVOLUTION)
V1LayerParameter.blobs               6       BlobProto
BlobProto.shape                      7       BlobShape: ``dim`` = 1, repeated int64, packed or not
BlobProto.num/channels/height/width  1-4     int64 varints: the legacy 4-D shape
BlobProto.data                       5       repeated float32, packed (what Caffe writes) or not
BlobProto.double_data                8       repeated float64, packed or not; read as float32
===================================  ======  =====================================================

``BlobProto.diff`` (6, gradients) is skipped. A blob's shape is ``shape.dim`` when present, else the
legacy ``(num, channels, height, width)`` when any of them is (Caffe's rule; missing ones are 0),
else one dimension of the value count. ``write_caffemodel`` writes the same subset (used to build
test files); both encodings, packed and unpacked values, and both shape forms can be produced.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

#: V1LayerParameter.LayerType values given names here (the rest are reported as "V1:<number>").
V1_TYPES = {3: "Concat", 4: "Convolution", 6: "Dropout", 14: "InnerProduct", 17: "Pooling", 18: "ReLU",
            33: "Slice"}


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type and parameter blobs (float32 arrays in Caffe's
    shapes; a convolution's are weights (out, in, kh, kw) and bias (out,))."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class CaffeNet:
    """A caffemodel's layers in file order; ``encoding`` is ``"layer"`` (current) or ``"layers"`` (V1)."""

    name: str
    layers: list[CaffeLayer]
    encoding: str


class _Malformed(Exception):
    """Bytes that do not follow the protobuf wire format (or the fields' expected types)."""


# ------------------------------------------------------------------------------------------------ reading
def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Malformed(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message's fields: an int for varints, the byte
    offset for fixed 32/64-bit values, (start, stop) for length-delimited ones."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at byte {at}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1 or wire == 5:
            value, pos = pos, pos + (8 if wire == 1 else 4)
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + size), pos + size
        else:
            raise _Malformed(f"wire type {wire} (field {number}) at byte {at}")
        if pos > end:
            raise _Malformed(f"field {number} at byte {at} runs past the end of its message")
        yield number, wire, value


def _string(buf: bytes, wire: int, value) -> str:
    if wire != 2:
        raise _Malformed(f"a string field has wire type {wire}")
    try:
        return buf[value[0]:value[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a name is not UTF-8 text") from None


def _numbers(buf: bytes, wire: int, value, dtype: str) -> np.ndarray:
    """A packed run (wire type 2) or one value (wire type 5 for float32, 1 for float64)."""
    size = np.dtype(dtype).itemsize
    if wire == 2:
        start, stop = value
        if (stop - start) % size:
            raise _Malformed(f"packed {dtype} data of {stop - start} bytes")
        return np.frombuffer(buf, dtype=dtype, count=(stop - start) // size, offset=start)
    if wire != (5 if size == 4 else 1):
        raise _Malformed(f"{dtype} value with wire type {wire}")
    return np.frombuffer(buf, dtype=dtype, count=1, offset=value)


def _dims(buf: bytes, start: int, end: int) -> list[int]:
    dims: list[int] = []
    for number, wire, value in _fields(buf, start, end):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed
            pos, stop = value
            while pos < stop:
                dim, pos = _varint(buf, pos, stop)
                dims.append(dim)
    return dims


def _blob(buf: bytes, start: int, end: int) -> np.ndarray:
    dims, legacy = None, {}
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for number, wire, value in _fields(buf, start, end):
        if number == 7 and wire == 2:
            dims = _dims(buf, *value)
        elif number == 5:
            floats.append(_numbers(buf, wire, value, "<f4"))
        elif number == 8:
            doubles.append(_numbers(buf, wire, value, "<f8"))
        elif 1 <= number <= 4 and wire == 0:
            legacy[number] = value
    parts = floats or doubles
    data = (np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.zeros(0)).astype(np.float32)
    if dims is None:
        dims = [legacy.get(i, 0) for i in (1, 2, 3, 4)] if legacy else [data.size]
    if int(np.prod(dims, dtype=np.int64)) != data.size:
        raise _Malformed(f"a blob of shape {tuple(dims)} holds {data.size} values")
    return data.reshape(dims)


def _layer(buf: bytes, start: int, end: int, legacy: bool) -> CaffeLayer:
    name_no, type_no, blobs_no = (4, 5, 6) if legacy else (1, 2, 7)
    layer = CaffeLayer(name="", type="")
    for number, wire, value in _fields(buf, start, end):
        if number == name_no:
            layer.name = _string(buf, wire, value)
        elif number == type_no:
            layer.type = V1_TYPES.get(value, f"V1:{value}") if legacy and wire == 0 else _string(buf, wire, value)
        elif number == blobs_no:
            if wire != 2:
                raise _Malformed(f"a blob with wire type {wire}")
            layer.blobs.append(_blob(buf, *value))
    return layer


_TEXT_START = re.compile(rb"\s*(#|name\s*:|input\s*:|input_dim\s*:|input_shape\s*\{|layers?\s*\{)")


def parse_caffemodel(buf: bytes) -> CaffeNet:
    """The layers of a serialized NetParameter (see the module docstring); ValueError for bytes that
    are not one, saying where they stop being one."""
    net = CaffeNet(name="", layers=[], encoding="layer")
    encodings = set()
    try:
        for number, wire, value in _fields(buf, 0, len(buf)):
            if number == 1 and wire == 2:
                net.name = _string(buf, wire, value)
            elif number in (100, 2):
                if wire != 2:
                    raise _Malformed(f"NetParameter field {number} has wire type {wire}")
                legacy = number == 2
                encodings.add("layers" if legacy else "layer")
                net.layers.append(_layer(buf, *value, legacy=legacy))
    except _Malformed as exc:
        why = str(exc)
    else:
        why = "" if net.layers else "it holds no layers"
    if why:
        if _TEXT_START.match(buf[:200]):
            why = "it looks like a text .prototxt (a network description, without weights)"
        raise ValueError(f"not a Caffe .caffemodel (a binary NetParameter): {why}")
    net.encoding = "+".join(sorted(encodings))
    return net


def read_caffemodel(path: str | os.PathLike) -> CaffeNet:
    """The layers of the caffemodel at ``path``. FileNotFoundError / IsADirectoryError for a missing
    file or a folder; ValueError naming the file for anything that is not a caffemodel."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"caffemodel path {path!r} is a directory, not a .caffemodel file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"caffemodel file {path!r} does not exist")
    with open(path, "rb") as f:
        buf = f.read()
    try:
        return parse_caffemodel(buf)
    except ValueError as exc:
        raise ValueError(f"{path!r} is {exc}") from None


# ------------------------------------------------------------------------------------------------ writing
def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(payload)) + payload


def _enc_blob(array: np.ndarray, packed: bool, double: bool, legacy_shape: bool) -> bytes:
    if legacy_shape:
        if array.ndim > 4:
            raise ValueError(f"the legacy 4-D blob shape cannot hold shape {array.shape}")
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        head = b"".join(_key(i, 0) + _enc_varint(d) for i, d in zip((1, 2, 3, 4), dims))
    else:
        dims_bytes = [_enc_varint(d) for d in array.shape]
        shape = (_delimited(1, b"".join(dims_bytes)) if packed
                 else b"".join(_key(1, 0) + d for d in dims_bytes))
        head = _delimited(7, shape)
    number, wire, dtype = (8, 1, "<f8") if double else (5, 5, "<f4")
    values = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    if packed:
        return head + _delimited(number, values.tobytes())
    records = np.empty(values.size, dtype=[("key", "u1"), ("value", dtype)])  # one field per value
    records["key"], records["value"] = number << 3 | wire, values
    return head + records.tobytes()


def encode_caffemodel(layers: Sequence[tuple[str, Sequence[np.ndarray]]], *, legacy: bool = False,
                      packed: bool = True, double: bool = False, legacy_shape: bool = False,
                      name: str = "", layer_type: str = "Convolution") -> bytes:
    """A serialized NetParameter holding ``layers`` ((name, blobs) pairs): in ``layer`` (field 100)
    or, with ``legacy``, V1 ``layers`` (field 2) messages; values packed or one field each, as
    float32 ``data`` or float64 ``double_data``; shapes as ``BlobShape`` or the legacy 4-D fields."""
    body = [_delimited(1, name.encode())] if name else []
    for layer_name, blobs in layers:
        blob_no = 6 if legacy else 7
        parts = [_delimited(4 if legacy else 1, layer_name.encode())]
        parts.append(_key(5, 0) + _enc_varint(4) if legacy else _delimited(2, layer_type.encode()))
        parts += [_delimited(blob_no, _enc_blob(np.asarray(b), packed, double, legacy_shape)) for b in blobs]
        body.append(_delimited(2 if legacy else 100, b"".join(parts)))
    return b"".join(body)


def write_caffemodel(path: str | os.PathLike, layers: Sequence[tuple[str, Sequence[np.ndarray]]],
                     **options) -> str:
    """Write ``encode_caffemodel(layers, **options)`` to ``path``; returns ``path``."""
    with open(path, "wb") as f:
        f.write(encode_caffemodel(layers, **options))
    return os.fspath(path)
