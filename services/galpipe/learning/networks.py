"""(torch) The morphology networks: EfficientNet-B0/B2/B3, ResNet-18, a small CNN; the GZ2 tail.

Every network maps ``(N, C, S, S)`` float32 images to GZ2 fractions: a convolutional backbone,
global average pooling, then the tail of the GZ2 literature -- dropout 0.5, dense 64 + ReLU,
dense 37 -- whose 37 outputs are logits; :meth:`MorphologyNetwork.forward` turns them into
tree-normalised fractions (:func:`galpipe.learning.tree.fractions_from_logits_torch`), so an
exported graph outputs fractions, and :meth:`MorphologyNetwork.forward_logits` gives the logits.

EfficientNet-B0, B2 and B3 (Tan & Le 2019; B2 and B3 are B0 scaled in width and depth) and
ResNet-18 (He et al. 2016) are written here in plain torch (torchvision cannot be installed
beside the CPU torch wheel) with torchvision's parameter names
(``features.N...``, ``layer1.0.conv1...``), so a torchvision ImageNet ``state_dict`` loads into
them through :func:`load_pretrained`. The architectures are the standard ones; on 40x40 px
inputs the last feature map is 2x2 (both downsample by 32), which global pooling absorbs.
``small_cnn`` (four convolutions, ~53k parameters) is for fast tests and the demo.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from galpipe.errors import InputError
from galpipe.learning.tree import fractions_from_logits_torch
from galpipe.science.gz2 import N_ANSWERS

__all__ = [
    "ARCHITECTURES",
    "MorphologyNetwork",
    "PretrainedReport",
    "build_network",
    "count_parameters",
    "load_pretrained",
    "predict_fractions",
]

#: The architectures :func:`build_network` knows.
ARCHITECTURES: tuple[str, ...] = (
    "efficientnet_b0",
    "efficientnet_b2",
    "efficientnet_b3",
    "resnet18",
    "small_cnn",
)

#: Dropout before the dense 64 of the tail, and its width: the GZ2 literature's tail.
TAIL_DROPOUT = 0.5
TAIL_WIDTH = 64


class MorphologyNetwork(nn.Module):
    """A backbone with the GZ2 tail; ``forward`` returns tree-normalised fractions.

    Subclasses define the backbone (:meth:`pooled_features`) and set ``first_conv_key``,
    the state-dict key of the first convolution's weight (the one :func:`load_pretrained`
    adapts to the channel count).

    Attributes
    ----------
    architecture : str
        One of :data:`ARCHITECTURES`.
    in_channels : int
        Channels C of the input images.
    head : torch.nn.Sequential
        The tail: dropout 0.5, dense 64, ReLU, dense 37 (logits). The only part trained
        while the backbone is frozen.
    """

    architecture: str
    first_conv_key: str

    def __init__(self, in_channels: int, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.n_outputs = n_outputs
        self.head = nn.Sequential(
            nn.Dropout(TAIL_DROPOUT),
            nn.Linear(n_features, TAIL_WIDTH),
            nn.ReLU(inplace=True),
            nn.Linear(TAIL_WIDTH, n_outputs),
        )

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` globally average-pooled backbone features of ``(N, C, S, S)`` images."""
        raise NotImplementedError

    def backbone_modules(self) -> list[nn.Module]:
        """The modules of the backbone: every child but the tail."""
        return [m for name, m in self.named_children() if name != "head"]

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, n_outputs)`` raw outputs (logits) of ``(N, C, S, S)`` images."""
        return self.head(self.pooled_features(x))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 37)`` tree-normalised GZ2 fractions of ``(N, C, S, S)`` images."""
        return fractions_from_logits_torch(self.forward_logits(x))


def _conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    activation: type[nn.Module] | None = nn.SiLU,
) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: conv (no bias) ``.0``, batch norm ``.1``, act ``.2``.

    ``activation`` None leaves the output linear (the projection of an MBConv block).
    """
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride,
            padding=(kernel - 1) // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# EfficientNet-B0


class _SqueezeExcitation(nn.Module):
    """Channel attention: pool, 1x1 conv down (SiLU), 1x1 conv up (sigmoid), rescale."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation = nn.SiLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


class _StochasticDepth(nn.Module):
    """Drops the residual branch of whole samples with probability ``p`` while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        keep = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device)
        return x * keep.bernoulli_(survival) / survival


class _MBConv(nn.Module):
    """Mobile inverted bottleneck: expand 1x1, depthwise kxk, squeeze-excitation, project 1x1."""

    def __init__(
        self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int, drop: float
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_ch == out_ch
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(in_ch, hidden, 1))
        layers += [
            _conv_bn_act(hidden, hidden, kernel, stride, groups=hidden),
            _SqueezeExcitation(hidden, max(1, in_ch // 4)),
            _conv_bn_act(hidden, out_ch, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = _StochasticDepth(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.stochastic_depth(out) + x
        return out  # type: ignore[no-any-return]


#: The B0 stages: (expand ratio, kernel, stride, input channels, output channels, blocks).
_B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def _divisible_by_8(channels: float) -> int:
    """torchvision's ``_make_divisible(v, 8)``: the nearest multiple of 8, never 10 % below."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


class EfficientNet(MorphologyNetwork):
    """EfficientNet with the GZ2 tail; torchvision's ``features.N`` names.

    ``features.0`` is the stem (3x3 stride 2), ``features.1..7`` the seven MBConv stages of
    :data:`_B0_STAGES` with their channels scaled by ``width`` (to multiples of 8) and their
    blocks by ``depth`` (rounded up), ``features.8`` the 1x1 convolution to 4 times the last
    stage's channels: Tan & Le's compound scaling, as torchvision builds B0-B7. Stochastic
    depth rises linearly over the blocks to ``stochastic_depth`` (torchvision: 0.2).
    """

    first_conv_key = "features.0.0.weight"
    width = 1.0
    depth = 1.0

    def __init__(
        self, in_channels: int, n_outputs: int = N_ANSWERS, stochastic_depth: float = 0.2
    ) -> None:
        stages = [
            (
                expand,
                kernel,
                stride,
                _divisible_by_8(in_ch * self.width),
                _divisible_by_8(out_ch * self.width),
                math.ceil(blocks * self.depth),
            )
            for expand, kernel, stride, in_ch, out_ch, blocks in _B0_STAGES
        ]
        last = 4 * stages[-1][4]
        super().__init__(in_channels, last, n_outputs)
        total = sum(stage[-1] for stage in stages)
        layers: list[nn.Module] = [_conv_bn_act(in_channels, stages[0][3], 3, 2)]
        block_id = 0
        for expand, kernel, stride, in_ch, out_ch, blocks in stages:
            stage: list[nn.Module] = []
            for i in range(blocks):
                drop = stochastic_depth * block_id / total
                stage.append(
                    _MBConv(
                        in_ch if i == 0 else out_ch,
                        out_ch,
                        expand,
                        kernel,
                        stride if i == 0 else 1,
                        drop,
                    )
                )
                block_id += 1
            layers.append(nn.Sequential(*stage))
        layers.append(_conv_bn_act(stages[-1][4], last, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


class EfficientNetB0(EfficientNet):
    """EfficientNet-B0 (width 1.0, depth 1.0): 1280 features."""

    architecture = "efficientnet_b0"


class EfficientNetB2(EfficientNet):
    """EfficientNet-B2 (width 1.1, depth 1.2): 1408 features, about 1.7 times B0's parameters."""

    architecture = "efficientnet_b2"
    width = 1.1
    depth = 1.2


class EfficientNetB3(EfficientNet):
    """EfficientNet-B3 (width 1.2, depth 1.4): 1536 features, about 2.3 times B0's parameters."""

    architecture = "efficientnet_b3"
    width = 1.2
    depth = 1.4


# ---------------------------------------------------------------------------------------------
# ResNet-18


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (1x1 projection where the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # type: ignore[no-any-return]


class ResNet18(MorphologyNetwork):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) with the GZ2 tail; torchvision's names."""

    architecture = "resnet18"
    first_conv_key = "conv1.weight"

    def __init__(self, in_channels: int, n_outputs: int = N_ANSWERS) -> None:
        super().__init__(in_channels, 512, n_outputs)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        widths = (64, 128, 256, 512)
        in_ch = 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(_BasicBlock(in_ch, width, stride), _BasicBlock(width, width, 1)),
            )
            in_ch = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)


# ---------------------------------------------------------------------------------------------
# The small CNN


class SmallCNN(MorphologyNetwork):
    """Four 3x3 conv + batch norm + ReLU layers (16, 32, 48, 64 channels; three stride 2)."""

    architecture = "small_cnn"
    first_conv_key = "features.0.0.weight"
    widths = (16, 32, 48, 64)

    def __init__(self, in_channels: int, n_outputs: int = N_ANSWERS) -> None:
        super().__init__(in_channels, self.widths[-1], n_outputs)
        layers: list[nn.Module] = []
        previous = in_channels
        for i, width in enumerate(self.widths):
            layers.append(_conv_bn_act(previous, width, 3, 1 if i == 0 else 2, activation=nn.ReLU))
            previous = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: He (fan-out) convolutions, unit batch norms, small dense."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / float(np.sqrt(m.out_features))
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


_BUILDERS: dict[str, type[EfficientNet] | type[ResNet18] | type[SmallCNN]] = {
    "efficientnet_b0": EfficientNetB0,
    "efficientnet_b2": EfficientNetB2,
    "efficientnet_b3": EfficientNetB3,
    "resnet18": ResNet18,
    "small_cnn": SmallCNN,
}


def build_network(
    architecture: str, in_channels: int, n_outputs: int = N_ANSWERS
) -> MorphologyNetwork:
    """A freshly initialised morphology network.

    Parameters
    ----------
    architecture : str
        One of :data:`ARCHITECTURES`.
    in_channels : int
        Channels C of the input images (3 for RGB, 4 for griz), >= 1.
    n_outputs : int, optional
        Outputs of the tail; 37 (the GZ2 answers) for a network whose ``forward`` applies the
        tree.

    Raises
    ------
    InputError
        If the architecture is unknown or a count is not a positive integer.
    """
    if architecture not in _BUILDERS:
        raise InputError(
            f"unknown network architecture {architecture!r}; choose one of "
            f"{', '.join(ARCHITECTURES)}"
        )
    for name, value in (("in_channels", in_channels), ("n_outputs", n_outputs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{architecture}: {name} must be a positive integer, got {value!r}")
    return _BUILDERS[architecture](in_channels, n_outputs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (weights and biases, not buffers)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def predict_fractions(
    model: nn.Module, images: npt.ArrayLike, batch_size: int = 256
) -> npt.NDArray[np.float64]:
    """``(N, 37)`` float64 fractions of float32 ``(N, C, S, S)`` images, in eval mode, batched.

    The model is run on the device of its parameters and left in the mode it had.
    """
    device = next(model.parameters()).device
    x = np.asarray(images, dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        out = [
            model(torch.from_numpy(x[i : i + batch_size]).to(device)).double().cpu().numpy()
            for i in range(0, x.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, N_ANSWERS))


# ---------------------------------------------------------------------------------------------
# Pretrained weights


@dataclass(frozen=True)
class PretrainedReport:
    """What :func:`load_pretrained` did with each key.

    Attributes
    ----------
    matched : tuple of str
        Keys loaded as they were.
    adapted : tuple of str
        Keys loaded after adapting the first convolution to the model's channel count.
    missing : tuple of str
        Keys of the model the file lacks (they keep their initial values: the tail, for one).
    unexpected : tuple of str
        Keys of the file the model lacks (an ImageNet classifier, for one).
    mismatched : tuple of str
        Keys of both whose shapes differ and cannot be adapted, as ``"key: file S vs model S"``.
    """

    matched: tuple[str, ...]
    adapted: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]

    def summary(self) -> str:
        """One line: the count of each kind of key."""
        return (
            f"{len(self.matched)} matched, {len(self.adapted)} adapted, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} mismatched"
        )


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv weight ``(O, C', k, k)`` for ``in_channels`` input channels.

    The file's input channels are repeated cyclically up to ``in_channels`` (RGB -> RGBR for
    4 bands) and scaled by ``C' / in_channels``, so the total weight over the input channels
    keeps its scale (timm's ``adapt_input_conv`` does the same). Where ``in_channels`` is a
    multiple of C', an input made of copies of a C'-channel image gives exactly the
    activations that image gave before.
    """
    source = weight.shape[1]
    repeat = -(-in_channels // source)
    adapted = weight.repeat(1, repeat, 1, 1)[:, :in_channels]
    return adapted * (source / in_channels)


def load_pretrained(model: MorphologyNetwork, state_dict_path: str | Path) -> PretrainedReport:
    """Load a (torchvision ImageNet) state dict into ``model`` as far as it fits.

    Keys present in both with equal shapes are loaded; the first convolution
    (``model.first_conv_key``) is adapted when only its input channels differ
    (:func:`_adapt_first_conv`); everything else is reported and left as it was. A
    ``module.`` prefix (a ``DataParallel`` save) is dropped, and a file holding
    ``{"state_dict": ...}`` or ``{"model": ...}`` is accepted.

    Parameters
    ----------
    model : MorphologyNetwork
        The network to load into, in place.
    state_dict_path : str or pathlib.Path
        A file written by ``torch.save(state_dict)``; loaded with ``weights_only=True``.

    Returns
    -------
    PretrainedReport
        The keys matched, adapted, missing, unexpected and mismatched.

    Raises
    ------
    InputError
        If the file cannot be read as a state dict, or not one of its keys fits the model.
    """
    path = Path(state_dict_path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise InputError(f"{path}: cannot read pretrained weights: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InputError(
            f"{path}: not a state dict (a mapping of parameter names to tensors), "
            f"got {type(loaded).__name__}"
        )
    source = {k.removeprefix("module."): v for k, v in loaded.items()}
    target = model.state_dict()
    merged = dict(target)
    matched: list[str] = []
    adapted: list[str] = []
    mismatched: list[str] = []
    for key, value in source.items():
        if key not in target:
            continue
        want = target[key].shape
        if value.shape == want:
            merged[key] = value.to(target[key].dtype)
            matched.append(key)
        elif (
            key == model.first_conv_key
            and value.ndim == 4
            and value.shape[0] == want[0]
            and value.shape[2:] == want[2:]
        ):
            merged[key] = _adapt_first_conv(value, want[1]).to(target[key].dtype)
            adapted.append(key)
        else:
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(want)}")
    if not matched and not adapted:
        raise InputError(
            f"{path}: none of its {len(source)} keys fits the {model.architecture} network "
            f"(first keys: {', '.join(list(source)[:3]) or 'none'}); is it a state dict of "
            "this architecture?"
        )
    model.load_state_dict(merged)
    return PretrainedReport(
        matched=tuple(matched),
        adapted=tuple(adapted),
        missing=tuple(k for k in target if k not in source),
        unexpected=tuple(k for k in source if k not in target),
        mismatched=tuple(mismatched),
    )
