"""``cpm-lab import-caffe``: caffemodels with the official release's layer names and shapes (random
weights, written by ``cpm_lab.caffe.write_caffemodel``, whose bytes are checked against the
``protobuf`` library) become checkpoints whose every tensor, and whose forward pass, equal the Caffe
weights loaded directly with the channels in LSP order; every encoding Caffe writes reads the same;
files that are not such a caffemodel are refused in one line naming the layer and the shapes."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from cpm_lab.caffe import encode_caffemodel, parse_caffemodel, read_caffemodel, write_caffemodel
from cpm_lab.caffe_import import import_caffemodel, prototxt_convolutions
from cpm_lab.cli import COMMANDS, main
from cpm_lab.inference import load_model, stage_outputs
from cpm_lab.models.cpm import CPM, CPMConfig, preset_config
from cpm_lab.train import read_checkpoint

#: testing/src/run_benchmark.m: the release's channel j (1-based) is LSP joint ORDER_TO_LSP[j].
ORDER_TO_LSP = [14, 13, 9, 8, 7, 10, 11, 12, 3, 2, 1, 4, 5, 6]
#: LSP channel i (background last) = the release's channel FROM_OFFICIAL[i].
FROM_OFFICIAL = [ORDER_TO_LSP.index(i + 1) for i in range(14)] + [14]
#: Every shape of the paper architecture, scaled down so that a file takes milliseconds.
SMALL = preset_config("paper", num_stages=3, trunk_channels=6, trunk_kernel=3, feature_channels=4,
                      feature_kernel=3, stage1_channels=8, stage1_kernel=3, stage_channels=5, stage_kernel=3)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def official_layers(c: CPMConfig, seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """(name, [weights, bias]) of the release's convolutions for config ``c`` (names as in
    model/_trained_FLIC/pose_deploy.prototxt, generalised to T stages by training/genProto.py),
    He-scaled random weights so that beliefs stay O(1) through every stage; two weightless layers
    as in a real file."""
    rng = np.random.default_rng(seed)
    out = c.num_parts + 1

    def conv(name, cin, cout, k):
        w = (rng.standard_normal((cout, cin, k, k), dtype=np.float32) * math.sqrt(2 / (cin * k * k)))
        return name, [w, rng.normal(0, 0.1, cout).astype(np.float32)]

    tc, tk, fc, fk = c.trunk_channels, c.trunk_kernel, c.feature_channels, c.feature_kernel
    layers = [("image", []), ("pool_center_lower", []),
              conv("conv1_stage1", 3, tc, tk), conv("conv2_stage1", tc, tc, tk), conv("conv3_stage1", tc, tc, tk),
              conv("conv4_stage1", tc, fc, fk), conv("conv5_stage1", fc, c.stage1_channels, c.stage1_kernel),
              conv("conv6_stage1", c.stage1_channels, c.stage1_channels, 1),
              conv("conv7_stage1", c.stage1_channels, out, 1)]
    sc, sk = c.stage_channels, c.stage_kernel
    for t in range(2, c.num_stages + 1):
        if t == 2:
            layers += [conv("conv1_stage2", 3, tc, tk), conv("conv2_stage2", tc, tc, tk),
                       conv("conv3_stage2", tc, tc, tk)]
        layers += [conv("conv4_stage2" if t == 2 else f"conv1_stage{t}", tc, fc, fk),
                   conv(f"Mconv1_stage{t}", fc + out + 1, sc, sk), conv(f"Mconv2_stage{t}", sc, sc, sk),
                   conv(f"Mconv3_stage{t}", sc, sc, sk), conv(f"Mconv4_stage{t}", sc, sc, 1),
                   conv(f"Mconv5_stage{t}", sc, out, 1)]
    return layers


def load_directly(c: CPMConfig, layers) -> CPM:
    """A CPM with the Caffe blobs copied into its convolutions as they are (release channel order)."""
    blobs = dict(layers)
    model = CPM(c).eval()

    def convs(module):
        return [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    pairs = list(zip(convs(model.stage1), [f"conv{i}_stage1" for i in range(1, 8)]))
    pairs += zip(convs(model.trunk), ["conv1_stage2", "conv2_stage2", "conv3_stage2"])
    for t in range(2, c.num_stages + 1):
        pairs += zip(convs(model.features[t - 2]), ["conv4_stage2" if t == 2 else f"conv1_stage{t}"])
        pairs += zip(convs(model.stages[t - 2]), [f"Mconv{i}_stage{t}" for i in range(1, 6)])
    assert len(pairs) == 10 + 6 * (c.num_stages - 1)
    with torch.no_grad():
        for module, name in pairs:
            module.weight.copy_(torch.from_numpy(blobs[name][0]))
            module.bias.copy_(torch.from_numpy(blobs[name][1]))
    return model


def in_lsp_order(c: CPMConfig, direct: CPM) -> dict[str, torch.Tensor]:
    """``direct``'s weights with belief outputs (and the beliefs Mconv1 reads) in LSP order."""
    state = {k: v.clone() for k, v in direct.state_dict().items()}
    f = c.feature_channels
    heads = ["stage1.17"] + [f"stages.{i}.8" for i in range(c.num_stages - 1)]
    for prefix in heads:
        state[f"{prefix}.weight"] = state[f"{prefix}.weight"][FROM_OFFICIAL]
        state[f"{prefix}.bias"] = state[f"{prefix}.bias"][FROM_OFFICIAL]
    concat = list(range(f)) + [f + i for i in FROM_OFFICIAL] + [f + 15]
    for i in range(c.num_stages - 1):
        state[f"stages.{i}.0.weight"] = state[f"stages.{i}.0.weight"][:, concat]
    return state


def assert_one_line_error(code, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ the paper model
@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The paper preset's 6-stage LSP model as the release writes it (31.2M random weights, modern
    ``layer`` encoding, packed floats), imported once through the CLI."""
    folder = tmp_path_factory.mktemp("paper")
    config = preset_config("paper")
    layers = official_layers(config)
    model = write_caffemodel(folder / "pose_iter_395000.caffemodel", layers)
    out = folder / "cpm_lsp.pt"
    code = main(["import-caffe", model, "--out", str(out)])
    assert code == 0
    return config, layers, out


def test_cli_writes_a_checkpoint_load_model_reads(paper):
    config, _, out = paper
    ckpt = read_checkpoint(out)  # content hash and finite weights checked
    assert ckpt["model_config"] == preset_config("paper", input_convention="caffe").to_dict()
    assert ckpt["source"]["caffemodel"] == "pose_iter_395000.caffemodel" and len(ckpt["source"]["sha256"]) == 64
    assert "import-caffe" in COMMANDS
    model = load_model(out, device="cpu")
    assert model.config.input_convention == "caffe" and model.config.num_stages == 6
    assert sum(p.numel() for p in model.parameters()) == 31_219_866


def test_every_tensor_equals_its_caffe_blob_in_lsp_order(paper):
    config, layers, out = paper
    expected = in_lsp_order(config, load_directly(config, layers))
    got = read_checkpoint(out)["model"]
    assert list(got) == list(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_forward_equals_the_directly_loaded_weights(paper):
    config, layers, out = paper
    direct = load_directly(config, layers)
    imported = load_model(out, device="cpu")
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours, theirs = stage_outputs(imported, images), stage_outputs(direct, images)
    assert len(ours) == 6
    for t, (a, b) in enumerate(zip(ours, theirs), start=1):
        assert a.abs().max() > 0.1, t  # weights that carry signal through every stage
        torch.testing.assert_close(a, b[:, FROM_OFFICIAL], rtol=1e-4, atol=1e-5, msg=f"stage {t}")
    assert not torch.allclose(ours[-1], theirs[-1], rtol=1e-4, atol=1e-5)  # the reordering matters


# ------------------------------------------------------------------------------------------------ encodings
ENCODINGS = {
    "layer, packed": dict(),
    "layer, unpacked": dict(packed=False),
    "layer, double_data": dict(double=True),
    "layer, unpacked double_data": dict(double=True, packed=False),
    "V1 layers, 4-D shapes, packed": dict(legacy=True, legacy_shape=True),
    "V1 layers, 4-D shapes, unpacked": dict(legacy=True, legacy_shape=True, packed=False),
}


@pytest.mark.parametrize("options", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_every_encoding_imports_the_same_weights(tmp_path, options):
    layers = official_layers(SMALL, seed=3)
    path = write_caffemodel(tmp_path / "m.caffemodel", layers, **options)
    net = read_caffemodel(path)
    assert net.encoding == ("layers" if options.get("legacy") else "layer")
    assert [layer.name for layer in net.layers] == [name for name, _ in layers]
    for layer, (_, blobs) in zip(net.layers, layers):
        assert len(layer.blobs) == len(blobs)
        for got, want in zip(layer.blobs, blobs):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got.reshape(want.shape), want)  # legacy bias: 1x1x1xN
    done = import_caffemodel(path, tmp_path / "m.pt", config=SMALL)
    assert done.config.num_stages == 3 and done.ignored == []
    direct = load_directly(SMALL, layers)
    got = read_checkpoint(tmp_path / "m.pt")["model"]
    for key, want in in_lsp_order(SMALL, direct).items():
        assert torch.equal(got[key], want), key
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for a, b in zip(stage_outputs(load_model(tmp_path / "m.pt", device="cpu"), images), stage_outputs(direct, images)):
        torch.testing.assert_close(a, b[:, FROM_OFFICIAL], rtol=1e-4, atol=1e-5)


def test_hand_encoded_bytes_decode():
    """A NetParameter spelled out byte by byte from caffe.proto's field numbers."""
    blob = (b"\x3a\x04" + b"\x0a\x02\x02\x03"          # shape (7) { dim (1) packed: [2, 3] }
            + b"\x2a\x18" + np.arange(6, dtype="<f4").tobytes())  # data (5), packed, 24 bytes
    layer = b"\x0a\x02ab" + b"\x12\x04Conv" + b"\x3a" + bytes([len(blob)]) + blob
    net = parse_caffemodel(b"\x0a\x01n" + b"\xa2\x06" + bytes([len(layer)]) + layer)  # layer = field 100
    assert net.name == "n" and net.layers[0].name == "ab" and net.layers[0].type == "Conv"
    np.testing.assert_array_equal(net.layers[0].blobs[0], np.arange(6, dtype=np.float32).reshape(2, 3))
    # V1: layers (2) { name (4), type (5) = 4, blobs (6) { num..width (1-4) = 1,1,1,2; data (5) unpacked } }
    v1_blob = (b"\x08\x01\x10\x01\x18\x01\x20\x02"
               + b"\x2d" + np.float32(1.5).tobytes() + b"\x2d" + np.float32(-2).tobytes())
    v1 = b"\x22\x01c" + b"\x28\x04" + b"\x32" + bytes([len(v1_blob)]) + v1_blob
    net = parse_caffemodel(b"\x12" + bytes([len(v1)]) + v1)
    assert (net.encoding, net.layers[0].name, net.layers[0].type) == ("layers", "c", "Convolution")
    np.testing.assert_array_equal(net.layers[0].blobs[0], np.array([[[[1.5, -2.0]]]], dtype=np.float32))


def _caffe_subset():
    """NetParameter, LayerParameter, V1LayerParameter, BlobProto and BlobShape with caffe.proto's
    field numbers, built at run time with the protobuf library (the V1 type enum as int32)."""
    pb = pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    del pb
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")

    def message(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, number, kind, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True
    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BlobShape", ("dim", 1, F.TYPE_INT64, rep, "", True))
    message("BlobProto", ("shape", 7, F.TYPE_MESSAGE, opt, ".caffe.BlobShape", False),
            ("data", 5, F.TYPE_FLOAT, rep, "", True), ("double_data", 8, F.TYPE_DOUBLE, rep, "", True),
            *[(n, i, F.TYPE_INT64, opt, "", False) for i, n in enumerate(("num", "channels", "height", "width"), 1)])
    message("LayerParameter", ("name", 1, F.TYPE_STRING, opt, "", False), ("type", 2, F.TYPE_STRING, opt, "", False),
            ("blobs", 7, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False))
    message("V1LayerParameter", ("name", 4, F.TYPE_STRING, opt, "", False), ("type", 5, F.TYPE_INT32, opt, "", False),
            ("blobs", 6, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False))
    message("NetParameter", ("name", 1, F.TYPE_STRING, opt, "", False),
            ("layer", 100, F.TYPE_MESSAGE, rep, ".caffe.LayerParameter", False),
            ("layers", 2, F.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))


def test_writer_and_reader_agree_with_the_protobuf_library():
    NetParameter = _caffe_subset()
    w, b = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 7, np.array([0.5, -1], dtype=np.float32)
    net = NetParameter()
    net.ParseFromString(encode_caffemodel([("conv", [w, b])], name="cpm"))
    assert net.name == "cpm" and net.layer[0].name == "conv" and net.layer[0].type == "Convolution"
    assert list(net.layer[0].blobs[0].shape.dim) == [2, 3, 2, 2]
    np.testing.assert_array_equal(np.array(net.layer[0].blobs[0].data, dtype=np.float32), w.reshape(-1))
    legacy = NetParameter()
    legacy.ParseFromString(encode_caffemodel([("conv", [w, b])], legacy=True, legacy_shape=True, packed=False))
    blob = legacy.layers[0].blobs[1]
    assert legacy.layers[0].type == 4 and (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 1, 2)
    # the library's own bytes (packed dims and data, double_data, V1 layers) through the reader
    made = NetParameter(name="x")
    layer = made.layer.add(name="conv", type="Convolution")
    layer.blobs.add(data=w.reshape(-1).tolist()).shape.dim.extend(w.shape)
    layer.blobs.add(double_data=b.tolist()).shape.dim.extend(b.shape)
    old = made.layers.add(name="old", type=4)
    old.blobs.add(num=1, channels=1, height=1, width=2, data=b.tolist())
    parsed = parse_caffemodel(made.SerializeToString())
    by_name = {x.name: x for x in parsed.layers}  # the library writes field 2 before field 100
    assert set(by_name) == {"conv", "old"} and parsed.encoding == "layer+layers"
    np.testing.assert_array_equal(by_name["conv"].blobs[0], w)
    np.testing.assert_array_equal(by_name["conv"].blobs[1], b)
    np.testing.assert_array_equal(by_name["old"].blobs[0], b.reshape(1, 1, 1, 2))


# ------------------------------------------------------------------------------------------------ refusals
def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


NOT_CAFFEMODELS = {
    "random bytes": (lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "at byte"),
    "a JPEG": (_jpeg, "at byte 0"),
    "a text prototxt": (lambda: b'input: "data"\ninput_dim: 1\nlayer {\n  name: "conv1_stage1"\n}\n',
                        "looks like a text .prototxt"),
    "an empty file": (lambda: b"", "holds no layers"),
}


@pytest.mark.parametrize("case", NOT_CAFFEMODELS.values(), ids=NOT_CAFFEMODELS.keys())
def test_a_file_that_is_no_caffemodel_is_one_line(tmp_path, capsys, case):
    content, why = case
    path = tmp_path / "x.caffemodel"
    path.write_bytes(content())
    code, _, err = run(capsys, "import-caffe", path, "--out", tmp_path / "x.pt")
    assert_one_line_error(code, err, f"{str(path)!r} is not a Caffe .caffemodel", why)
    assert not (tmp_path / "x.pt").exists()


def test_cli_names_the_layer_and_both_shapes(tmp_path, capsys):
    path = write_caffemodel(tmp_path / "small.caffemodel", official_layers(SMALL))
    code, _, err = run(capsys, "import-caffe", path, "--out", tmp_path / "x.pt")
    assert_one_line_error(code, err, "'conv1_stage1'", "(6, 3, 3, 3)", "(128, 3, 9, 9)")
    code, _, err = run(capsys, "import-caffe", tmp_path / "nothing.caffemodel", "--out", tmp_path / "x.pt")
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run(capsys, "import-caffe", path, "--out", tmp_path)
    assert_one_line_error(code, err, "is a directory")


def _edited(name, blobs=None, drop=False, seed=0):
    layers = official_layers(SMALL, seed)
    return [(n, blobs if n == name else b) for n, b in layers if not (drop and n == name)]


REFUSED = {
    "a layer with another shape": (
        _edited("Mconv2_stage3", [np.zeros((5, 4, 3, 3), np.float32), np.zeros(5, np.float32)]),
        ["'Mconv2_stage3'", "(5, 4, 3, 3)", "(5, 5, 3, 3)"]),
    "a missing layer": (_edited("Mconv4_stage2", drop=True), ["no layer 'Mconv4_stage2'"]),
    "FLIC's 9 parts": (_edited("conv7_stage1", [np.zeros((10, 8, 1, 1), np.float32), np.zeros(10, np.float32)]),
                       ["'conv7_stage1'", "(10, 8, 1, 1)", "(15, 8, 1, 1)", "9 parts + background", "FLIC"]),
    "NaN weights": (_edited("conv2_stage1", [np.full((6, 6, 3, 3), np.nan, np.float32), np.zeros(6, np.float32)]),
                    ["'conv2_stage1'", "NaN"]),
    "a VGG-based MPII model": ([("conv1_1", [np.zeros((64, 3, 3, 3), np.float32)]), ("conv4_7_CPM", [np.zeros(1)])],
                               ["VGG-based", "conv4_7_CPM"]),
    "another network": ([("conv1", [np.zeros((8, 3, 3, 3), np.float32)]), ("fc6", [np.zeros((10, 8))])],
                        ["no layer 'conv1_stage1'", "'conv1', 'fc6'"]),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_other_networks_are_refused_naming_the_layer(tmp_path, case):
    layers, needles = case
    path = write_caffemodel(tmp_path / "m.caffemodel", layers)
    with pytest.raises(ValueError) as info:
        import_caffemodel(path, tmp_path / "m.pt", config=SMALL)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert not (tmp_path / "m.pt").exists()


def deploy_prototxt(layers) -> str:
    """A deploy prototxt in the release's text format for (name, blobs) convolutions."""
    text = ['input: "data"\ninput_dim: 1\ninput_dim: 4\ninput_dim: 368\ninput_dim: 368']
    for name, blobs in layers:
        if blobs:
            out, _, k, _ = blobs[0].shape
            text.append(f'layer {{\n  name: "{name}"\n  type: "Convolution"\n  param {{\n    lr_mult: 1\n  }}\n'
                        f'  convolution_param {{\n    num_output: {out}\n    pad: {k // 2}\n    kernel_size: {k}\n'
                        f'  }}\n}}\nlayer {{\n  name: "relu_{name}"\n  type: "ReLU"\n}}')
    return "\n".join(text) + "\n"


def test_prototxt_is_cross_checked(tmp_path):
    layers = official_layers(SMALL)
    path = write_caffemodel(tmp_path / "m.caffemodel", layers)
    good = tmp_path / "pose_deploy.prototxt"
    good.write_text(deploy_prototxt(layers))
    assert len(prototxt_convolutions(good.read_text())) == 10 + 6 * 2
    import_caffemodel(path, tmp_path / "m.pt", prototxt=good, config=SMALL)
    for edit, needle in ((lambda t: t.replace("num_output: 5\n", "num_output: 7\n", 1), "num_output 7"),
                         (lambda t: t.replace('"Mconv3_stage3"', '"Mconv3_stage9"'), "'Mconv3_stage3'"),
                         (lambda t: t + 'layer {\n  name: "conv1_1"\n  type: "Convolution"\n  convolution_param {\n'
                                        '    num_output: 64\n    kernel_size: 3\n  }\n}\n', "'conv1_1'")):
        bad = tmp_path / "bad.prototxt"
        bad.write_text(edit(good.read_text()))
        with pytest.raises(ValueError, match="bad.prototxt") as info:
            import_caffemodel(path, tmp_path / "m2.pt", prototxt=bad, config=SMALL)
        assert needle in str(info.value), str(info.value)
