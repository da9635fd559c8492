"""ONNX export (``cpm_lab.export``, ``cpm-lab export``): every stage of the exported file matches
torch within 1e-4 under onnxruntime, at two batch sizes and another image size (dynamic axes),
with the Caffe input normalisation inside the graph; the metadata; one-line CLI errors."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install \"cpm_lab[onnx]\")")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install \"cpm_lab[onnx]\")")

import onnx  # noqa: E402

from cpm_lab.cli import main  # noqa: E402
from cpm_lab.cli.export import DEFAULT_OPSET as CLI_DEFAULT_OPSET  # noqa: E402
from cpm_lab.export import DEFAULT_OPSET, export_onnx, onnx_session, verify_onnx  # noqa: E402
from cpm_lab.inference import center_maps, load_model, stage_outputs  # noqa: E402
from cpm_lab.models.cpm import CPM  # noqa: E402

TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def random_tiny(seed: int = 0, **overrides) -> CPM:
    """A tiny-preset CPM with random weights AND random BatchNorm statistics (so the folding of
    BatchNorm into the convolutions is exercised), in eval mode."""
    torch.manual_seed(seed)
    model = CPM.from_preset("tiny", **overrides)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def assert_parity(path, model, batches=(2, 3), size=None):
    """Every stage of the file (onnxruntime) equals the model's (torch) within TOLERANCE."""
    session = onnx_session(path)
    size = size or model.config.input_size
    for n in batches:
        gen = torch.Generator().manual_seed(n)
        x = torch.rand(n, 3, size, size, generator=gen)
        cmap = center_maps(model.codec, torch.rand(n, 2, generator=gen) * (size - 1), n, size, size)
        expected = stage_outputs(model, x, cmap)
        got = session.run(None, {"image": x.numpy(), "center_map": cmap.numpy()})
        assert len(got) == model.config.num_stages
        for t, (g, e) in enumerate(zip(got, expected), 1):
            assert g.shape == tuple(e.shape) == (n, model.config.num_parts + 1, size // 8, size // 8)
            assert np.abs(g - e.numpy()).max() < TOLERANCE, f"stage {t}, batch {n}, size {size}"


def test_random_tiny_model_matches_torch_and_keeps_its_mode(tmp_path):
    model = random_tiny().train()
    path = export_onnx(model, tmp_path / "tiny.onnx")
    assert model.training and all(m.training for m in model.modules())  # the model is left as it was
    model.eval()
    assert_parity(path, model)
    assert_parity(path, model, batches=(1,), size=96)  # height and width are dynamic too
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["image", "center_map"]
    assert [o.name for o in proto.graph.output] == ["stage1", "stage2", "stage3"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {op.op_type for op in proto.graph.node}.isdisjoint({"BatchNormalization", "Dropout"})
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["opset"] == str(DEFAULT_OPSET) == str(proto.opset_import[0].version)
    assert meta["input_convention"] == "rgb" and "[0, 1]" in meta["input_normalisation"]
    assert "opset 17" in proto.doc_string


def test_shipped_model_matches_torch(tmp_path):
    model = load_model("tiny-synthetic", device="cpu")
    path = export_onnx(model, tmp_path / "shipped.onnx")
    assert_parity(path, model)
    assert verify_onnx(path, model) < TOLERANCE


def test_caffe_input_convention_is_inside_the_graph(tmp_path):
    model = random_tiny(seed=1, input_convention="caffe")
    path = export_onnx(model, tmp_path / "caffe.onnx", opset=13)
    assert_parity(path, model)
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["input_convention"] == "caffe" and "BGR" in meta["input_normalisation"]
    # The same weights fed plain RGB give other beliefs, so the parity above needed the conversion.
    rgb = random_tiny(seed=1)
    rgb.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 128, 128)
    cmap = center_maps(model.codec, None, 1, 128, 128)
    assert (stage_outputs(model, x, cmap)[-1] - stage_outputs(rgb, x, cmap)[-1]).abs().max() > 100 * TOLERANCE


def test_cli_export_and_one_line_errors(tmp_path, capsys, monkeypatch):
    assert CLI_DEFAULT_OPSET == DEFAULT_OPSET
    out = tmp_path / "cpm.onnx"
    assert main(["export", "--onnx", str(out), "--checkpoint", "tiny-synthetic"]) == 0
    stdout = capsys.readouterr().out
    assert out.is_file() and "ONNX opset 17" in stdout and "input normalisation" in stdout
    assert "max |difference| over all stages" in stdout

    def one_line_error(argv, *needles):
        assert main(argv) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and all(n in lines[0] for n in needles), lines

    one_line_error(["export", "--onnx", str(out), "--checkpoint", str(tmp_path / "missing.pt")], "missing.pt")
    (tmp_path / "a-file").write_text("")
    one_line_error(["export", "--onnx", str(tmp_path / "a-file" / "cpm.onnx"), "--checkpoint", "tiny-synthetic"],
                   "cannot write to output directory", "a-file")
    one_line_error(["export", "--onnx", str(out), "--checkpoint", "tiny-synthetic", "--opset", "9"], "opset")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    one_line_error(["export", "--onnx", str(out), "--checkpoint", "tiny-synthetic"], "cpm_lab[onnx]")
