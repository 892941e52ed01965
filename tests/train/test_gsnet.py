"""GSConv, MSE and the ResNet18 variants of seed 002: shapes, behaviour and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from linevision.train import classifier_export, gsnet  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("cin", "cout", "stride"), [(64, 64, 1), (64, 128, 2), (3, 8, 1)])
def test_gsconv_shapes(cin, cout, stride) -> None:
    conv = gsnet.GSConv(cin, cout, stride).eval()
    with torch.no_grad():
        y = conv(torch.randn(2, cin, 16, 12))
    assert y.shape == (2, cout, 16 // stride, 12 // stride)


def test_gsconv_interleaves_dense_and_depthwise_halves() -> None:
    assert gsnet.shuffle_order(8, 2) == [0, 4, 1, 5, 2, 6, 3, 7]
    conv = gsnet.GSConv(4, 8).eval()
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        dense = conv.dense(x)
        y = conv(x)
    assert torch.equal(y[:, 0::2], dense)
    assert torch.equal(y[:, 1::2], conv.depthwise(dense))
    assert conv.depthwise[0].groups == 4


def test_gsconv_needs_even_output_channels() -> None:
    with pytest.raises(ValueError, match="even"):
        gsnet.GSConv(4, 7)


@pytest.mark.parametrize("channels", [64, 512])
def test_mse_reweights_channels_with_8_heads(channels) -> None:
    mse = gsnet.MultiHeadSE(channels).eval()
    assert mse.heads == 8
    x = torch.rand(3, channels, 7, 5)
    with torch.no_grad():
        y = mse(x)
    assert y.shape == x.shape
    ratio = y / x
    per_channel = ratio.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel), atol=1e-5)
    assert float(ratio.min()) > 0.0
    assert float(ratio.max()) < 1.0


def test_fresh_mse_is_a_plain_se_and_attention_then_mixes_channels() -> None:
    mse = gsnet.MultiHeadSE(64).eval()
    squeeze = torch.rand(2, 64)
    with torch.no_grad():
        assert torch.equal(mse.attend(squeeze), squeeze)
        torch.nn.init.normal_(mse.proj.weight)
        mixed = mse.attend(squeeze)
    assert mixed.shape == squeeze.shape
    assert not torch.allclose(mixed, squeeze)


@pytest.mark.parametrize("arch", list(gsnet.ARCHITECTURES))
def test_block_and_network_shapes(arch) -> None:
    use_gs, use_mse = gsnet.ARCHITECTURES[arch]
    block = gsnet.BasicBlock(64, 128, 2, gsconv=use_gs, mse=use_mse).eval()
    model = gsnet.build(arch, 5).eval()
    with torch.inference_mode():
        assert block(torch.randn(2, 64, 28, 28)).shape == (2, 128, 14, 14)
        assert model(torch.randn(2, 1, 224, 224)).shape == (2, 5)


def test_space_to_depth_stem_halves_the_stage_resolution() -> None:
    standard = gsnet.build("resnet18_gsconv_mse", 5).eval()
    s2d = gsnet.build("resnet18_gsconv_mse", 5, stem="s2d").eval()
    x = torch.randn(1, 1, 224, 224)
    with torch.inference_mode():
        assert standard.stem(x).shape == (1, 64, 56, 56)
        assert s2d.stem(x).shape == (1, 64, 28, 28)
        assert s2d(x).shape == (1, 5)
    extra = gsnet.parameter_count(s2d) - gsnet.parameter_count(standard)
    assert extra == 3 * 64 * 7 * 7
    with pytest.raises(ValueError, match="unknown stem"):
        gsnet.build("resnet18", 5, stem="patchify")


def test_gsconv_halves_the_parameters() -> None:
    counts = {a: gsnet.parameter_count(gsnet.build(a, 5)) for a in gsnet.ARCHITECTURES}
    assert 11.0e6 < counts["resnet18"] < 11.3e6
    assert counts["resnet18_gsconv"] < 0.55 * counts["resnet18"]
    assert counts["resnet18_gsconv"] < counts["resnet18_gsconv_mse"] < 6.5e6
    with pytest.raises(ValueError, match="unknown architecture"):
        gsnet.build("resnet50", 5)


def test_onnx_export_has_a_dynamic_batch_and_matches_torch(tmp_path) -> None:
    model = gsnet.build("resnet18_gsconv_mse", 5).eval()
    path = tmp_path / "m.onnx"
    classifier_export.export(model, path, channels=1, size=224)
    x = np.random.default_rng(0).standard_normal((3, 1, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    for n in (1, 3):
        got = classifier_export.onnx_logits(path, x[:n], threads=1)
        assert got.shape == (n, 5)
        assert np.abs(got - expected[:n]).max() < 1e-3
