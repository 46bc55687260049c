"""The networks: shapes, the tree, torchvision's layout and the loading of pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from galpipe.errors import InputError
from galpipe.learning.networks import (
    ARCHITECTURES,
    MorphologyNetwork,
    build_network,
    count_parameters,
    load_pretrained,
)
from galpipe.science.gz2 import N_ANSWERS, check_fractions


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_network_outputs_fractions_obeying_the_tree(architecture: str, channels: int) -> None:
    torch.manual_seed(0)
    model = build_network(architecture, channels).eval()
    images = torch.randn(2, channels, 40, 40)
    with torch.no_grad():
        fractions = model(images)
        logits = model.forward_logits(images)
    assert fractions.shape == (2, N_ANSWERS)
    assert logits.shape == (2, N_ANSWERS)
    check_fractions(fractions.double().numpy(), atol=1e-5)
    assert model.architecture == architecture
    assert model.in_channels == channels


# torchvision's parameter counts with their 1000-class ImageNet heads (its documentation):
# the backbones here must be the same networks.
TORCHVISION_PARAMETERS = {
    "efficientnet_b0": (5_288_548, 1280 * 1000 + 1000),
    "efficientnet_b2": (9_109_994, 1408 * 1000 + 1000),
    "efficientnet_b3": (12_233_232, 1536 * 1000 + 1000),
    "resnet18": (11_689_512, 512 * 1000 + 1000),
}


@pytest.mark.parametrize("architecture", sorted(TORCHVISION_PARAMETERS))
def test_backbones_have_torchvisions_parameter_count(architecture: str) -> None:
    model = build_network(architecture, 3)
    total, imagenet_head = TORCHVISION_PARAMETERS[architecture]
    tail = sum(p.numel() for p in model.head.parameters())
    assert count_parameters(model) - tail == total - imagenet_head


@pytest.mark.parametrize(
    ("architecture", "keys"),
    [
        (
            "efficientnet_b0",
            [
                "features.0.0.weight",
                "features.1.0.block.1.fc1.weight",
                "features.2.0.block.0.1.running_mean",
                "features.6.3.block.3.1.bias",
                "features.8.0.weight",
            ],
        ),
        (
            "resnet18",
            [
                "conv1.weight",
                "bn1.running_var",
                "layer1.0.conv1.weight",
                "layer4.1.bn2.weight",
                "layer2.0.downsample.0.weight",
            ],
        ),
    ],
)
def test_parameter_names_are_torchvisions(architecture: str, keys: list[str]) -> None:
    state = build_network(architecture, 3).state_dict()
    assert set(keys) <= set(state)


def test_small_cnn_is_small() -> None:
    assert 30_000 < count_parameters(build_network("small_cnn", 4)) < 80_000


def test_unknown_architecture_and_bad_channels_are_refused() -> None:
    with pytest.raises(
        InputError,
        match=r"'vgg16'.*efficientnet_b0, efficientnet_b2, efficientnet_b3, resnet18, small_cnn",
    ):
        build_network("vgg16", 3)
    with pytest.raises(InputError, match="in_channels must be a positive integer, got 0"):
        build_network("small_cnn", 0)


def _imagenet_like_file(model: MorphologyNetwork, path: Path) -> dict[str, torch.Tensor]:
    """The backbone's weights, randomised, with an ImageNet classifier instead of our tail."""
    torch.manual_seed(1)
    state = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
        if not k.startswith("head.")
    }
    state["classifier.1.weight"] = torch.randn(1000, 64)
    torch.save(state, path)
    return state


def test_pretrained_weights_load_with_the_first_conv_adapted(tmp_path: Path) -> None:
    path = tmp_path / "imagenet.pt"
    source = _imagenet_like_file(build_network("small_cnn", 3), path)
    model = build_network("small_cnn", 4)
    head_before = model.head[1].weight.clone()

    report = load_pretrained(model, path)

    assert report.adapted == ("features.0.0.weight",)
    assert report.unexpected == ("classifier.1.weight",)
    assert set(report.missing) == {k for k in model.state_dict() if k.startswith("head.")}
    assert report.mismatched == ()
    assert len(report.matched) == len(source) - 2
    state = model.state_dict()
    for key in report.matched:
        assert torch.equal(state[key], source[key]), key
    weight = state["features.0.0.weight"]
    assert weight.shape[1] == 4
    torch.testing.assert_close(weight[:, :3], source["features.0.0.weight"] * 0.75)
    torch.testing.assert_close(weight[:, 3], source["features.0.0.weight"][:, 0] * 0.75)
    assert torch.equal(model.head[1].weight, head_before)  # the tail keeps its initialisation
    assert "1 adapted" in report.summary()


def test_adapted_first_conv_sees_a_duplicated_image_as_the_original(tmp_path: Path) -> None:
    path = tmp_path / "rgb.pt"
    rgb = build_network("efficientnet_b0", 3).eval()
    torch.save(rgb.state_dict(), path)
    six = build_network("efficientnet_b0", 6).eval()

    report = load_pretrained(six, path)

    assert report.adapted == ("features.0.0.weight",)
    assert report.missing == report.unexpected == report.mismatched == ()
    images = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(six(torch.cat([images, images], 1)), rgb(images))


def test_mismatched_shapes_are_reported_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    state = build_network("small_cnn", 3).state_dict()
    state["features.1.0.weight"] = torch.randn(7, 16, 3, 3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = build_network("small_cnn", 3)
    before = model.state_dict()["features.1.0.weight"].clone()

    report = load_pretrained(model, path)

    assert report.mismatched == ("features.1.0.weight: file (7, 16, 3, 3) vs model (32, 16, 3, 3)",)
    assert torch.equal(model.state_dict()["features.1.0.weight"], before)
    assert report.adapted == ()


def test_weights_of_another_network_or_no_weights_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pt"
    backbone = {
        k: v for k, v in build_network("resnet18", 3).state_dict().items() if "head" not in k
    }
    torch.save(backbone, other)
    with pytest.raises(InputError, match=r"resnet\.pt: none of its .* keys fits the small_cnn"):
        load_pretrained(build_network("small_cnn", 3), other)
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(InputError, match=r"list\.pt: not a state dict"):
        load_pretrained(build_network("small_cnn", 3), not_weights)
    garbled = tmp_path / "garbled.pt"
    garbled.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"garbled\.pt: cannot read pretrained weights"):
        load_pretrained(build_network("small_cnn", 3), garbled)
    with pytest.raises(InputError, match=r"missing\.pt: cannot read pretrained weights"):
        load_pretrained(build_network("small_cnn", 3), tmp_path / "missing.pt")
