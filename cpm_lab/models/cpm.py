"""Convolutional Pose Machines (Wei, Ramakrishna, Kanade, Sheikh; CVPR 2016, arXiv:1602.00134).

The whole model in one file. Stage 1 maps the image to beliefs through its own convolutional
network. Stages t >= 2 share one image-feature trunk x'; each has its own small feature layer on
that trunk, concatenates it with the previous stage's beliefs and the pooled Gaussian centre map,
and refines the beliefs with large-kernel convolutions, so the receptive field grows with every
stage and later stages learn spatial context between parts.

Preset ``"paper"`` reproduces the official LSP release (368x368 input, 6 stages, 14 parts +
background, 31,219,866 parameters) with its training conventions: Gaussian std-0.01 init, dropout
in stage 1 and the Caffe input (BGR, x/256 - 0.5); ``"small"`` and ``"tiny"`` keep the structure
with fewer channels and smaller kernels for CPU training, He init and RGB input in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn

from .. import skeleton
from ..targets import CodecConfig, center_map, default_centers
from ..utils import check_fields


@dataclass(frozen=True)
class Block:
    """One step of a CPM's wiring (``CPM.wiring``): ``module`` applied to its inputs (several are
    concatenated along channels, in order); its output is known as ``name``.

    ``stage`` is the 1-based stage that owns the module; ``group`` prefixes the names of its
    layers in the diagnostics (``"stage1"``, ``"trunk"``, ``"center"``, ``"stage3"``).
    """

    name: str
    stage: int
    group: str
    module: nn.Module
    inputs: tuple[str, ...]


#: Weight initialisations (``CPMConfig.init``).
INITS = ("he", "gaussian", "lecun")
#: What the first convolution sees (``CPMConfig.input_convention``).
INPUT_CONVENTIONS = ("rgb", "caffe")


@dataclass(frozen=True)
class CPMConfig:
    """Architecture and target geometry of a CPM; see ``PRESETS`` for named values.

    Channel counts are output channels; kernels are square and odd ("same" padding). The output
    stride is fixed at 8 by three 3x3/2 max-pools.

    Conventions of the official release, off by default (the defaults are also what a checkpoint
    saved before these fields existed gets from ``from_dict``); preset ``"paper"`` turns them on:

    * ``init``: ``"he"`` = He-normal weights for the ReLU convs and N(0, ``init_std``) for each
      stage's last (belief) 1x1 conv; ``"gaussian"`` = N(0, ``init_std``) for EVERY conv weight
      (the official ``weight_filler gaussian std 0.01``); ``"lecun"`` = N(0, 1/fan_in) for every
      conv weight (fan_in = in_channels x k x k). At the official 9x9 convs on 128 channels
      1/sqrt(fan_in) = 0.0098, so "lecun" is the official init carried over to narrower layers:
      each ReLU layer halves the signal's variance, as in the paper's network, whatever the
      width (``init_std`` is unused). Conv biases start at 0 in every case.
    * ``dropout``: probability of an ``nn.Dropout`` after the ReLU of stage 1's
      ``stage1_kernel`` conv and of its 1x1 conv (both ``stage1_channels`` wide), active in train
      mode only (official: 0.5). At 0 no module is inserted, so state-dict keys are unchanged.
    * ``input_convention``: callers always pass RGB images in [0, 1]. ``"rgb"`` feeds them to
      the first conv unchanged; ``"caffe"`` feeds what the official code feeds its network:
      channels in BGR order and pixel value v in 0..255 as v/256 - 0.5, i.e. x * 255/256 - 0.5
      (grey 0.5, the official padding colour, maps to -1/512, about 0). See ``CPM.network_input``.
    """

    name: str = "paper"
    num_parts: int = skeleton.NUM_JOINTS
    num_stages: int = 6
    input_size: int = 368
    sigma: float = 7.0              # part Gaussian std, input pixels
    center_sigma: float = 21.0      # centre-map Gaussian std, input pixels
    trunk_channels: int = 128       # the conv-pool blocks (stage 1 and the shared trunk)
    trunk_kernel: int = 9
    feature_channels: int = 32      # each stage's own conv on its trunk
    feature_kernel: int = 5
    stage1_channels: int = 512      # stage-1 head: conv(k) then conv1, both this wide
    stage1_kernel: int = 9
    stage_channels: int = 128       # stages >= 2: `stage_convs` convs of `stage_kernel`, then conv1
    stage_kernel: int = 11
    stage_convs: int = 3
    batch_norm: bool = False
    init: str = "he"                # see the class docstring
    init_std: float = 0.01          # std of the N(0, std) weight init
    dropout: float = 0.0            # stage-1 dropout probability (0 = no module)
    input_convention: str = "rgb"   # "rgb" or "caffe" (BGR, x * 255/256 - 0.5)

    stride = 8  # three 3x3/2 max-pools with Caffe's ceil rounding

    def __post_init__(self):
        if self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages}")
        if self.num_parts < 1:
            raise ValueError(f"num_parts must be >= 1, got {self.num_parts}")
        for f in ("trunk_kernel", "feature_kernel", "stage1_kernel", "stage_kernel"):
            if getattr(self, f) % 2 == 0:
                raise ValueError(f"{f} must be odd for 'same' padding, got {getattr(self, f)}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not (math.isfinite(self.init_std) and self.init_std > 0):
            raise ValueError(f"init_std must be a positive number, got {self.init_std!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        if self.input_convention not in INPUT_CONVENTIONS:
            raise ValueError(f"input_convention must be one of {INPUT_CONVENTIONS}, got {self.input_convention!r}")
        self.codec  # validates input_size against the stride

    @property
    def codec(self) -> CodecConfig:
        """The target/belief geometry this model is trained with."""
        return CodecConfig(input_size=self.input_size, stride=self.stride, sigma=self.sigma,
                           center_sigma=self.center_sigma, num_parts=self.num_parts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CPMConfig":
        """The config saved by ``to_dict``; fields it lacks (an older checkpoint) get their defaults."""
        return cls(**check_fields(cls, d))


#: Named presets. "paper" is the official LSP model; the others keep its structure.
PRESETS: dict[str, CPMConfig] = {
    "paper": CPMConfig(init="gaussian", dropout=0.5, input_convention="caffe"),
    "small": CPMConfig(name="small", input_size=256, sigma=6.0, center_sigma=16.0,
                       trunk_channels=64, trunk_kernel=5, feature_channels=32, feature_kernel=3,
                       stage1_channels=256, stage1_kernel=5, stage_channels=64, stage_kernel=7),
    # tiny: trained from scratch in minutes on a CPU. sigma = 8 px = one belief cell (the paper's
    # 7 px at stride 8 is 0.9 cell); 16 trunk channels make a step 2.4x cheaper than 32 at the
    # same accuracy per step; BatchNorm lets this narrow net train fast at Adam lr 5e-3.
    # Pass batch_norm=False for the paper's layers.
    "tiny": CPMConfig(name="tiny", num_stages=3, input_size=128, sigma=8.0, center_sigma=12.0,
                      trunk_channels=16, trunk_kernel=3, feature_channels=16, feature_kernel=3,
                      stage1_channels=64, stage1_kernel=3, stage_channels=32, stage_kernel=5,
                      batch_norm=True),
    # ablation: the paper's layer pattern and training conventions at CPU size, for the
    # intermediate-supervision experiments: 6 stages of plain conv + ReLU (no normalisation),
    # the official init carried over to narrow layers ("lecun", see CPMConfig), SGD with the
    # Caffe loss (PRESET_DEFAULTS). tiny's widths at 96 px (12 x 12 beliefs); sigma 6 px = 0.75
    # belief cell (paper: 7 px = 0.9 cell).
    "ablation": CPMConfig(name="ablation", num_stages=6, input_size=96, sigma=6.0, center_sigma=9.6,
                          trunk_channels=16, trunk_kernel=3, feature_channels=16, feature_kernel=3,
                          stage1_channels=64, stage1_kernel=3, stage_channels=32, stage_kernel=5,
                          init="lecun"),
}


def _conv(cin: int, cout: int, k: int, bn: bool, relu: bool = True, dropout: float = 0.0) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        # not in place: the in-place ReLU's backward needs its output unchanged
        layers.append(nn.Dropout(dropout))
    return layers


def _pool() -> nn.Module:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


def _trunk(c: CPMConfig) -> list[nn.Module]:
    """conv(k)-pool x 3: the image-feature blocks at stride 8."""
    layers: list[nn.Module] = []
    cin = 3
    for _ in range(3):
        layers += _conv(cin, c.trunk_channels, c.trunk_kernel, c.batch_norm) + [_pool()]
        cin = c.trunk_channels
    return layers


class CPM(nn.Module):
    """A Convolutional Pose Machine.

    ``forward(images, center_maps=None, num_stages=None)`` takes RGB images (N, 3, H, W) in [0, 1]
    (``network_input`` applies the config's ``input_convention``) and optional centre maps
    (N, 1, H, W) at input resolution (a Gaussian on the image centre when omitted) and returns a
    list of belief tensors, one per stage run, each (N, P + 1, H // 8, W // 8), background last.
    Stage t of the list is ``beliefs[t - 1]``. ``wiring()`` describes the dataflow. ``config``
    defaults to ``PRESETS["paper"]``.
    """

    def __init__(self, config: CPMConfig | None = None):
        super().__init__()
        c = self.config = config or PRESETS["paper"]
        out = c.num_parts + 1
        # Stage 1: image -> beliefs through its own network.
        self.stage1 = nn.Sequential(
            *_trunk(c),
            *_conv(c.trunk_channels, c.feature_channels, c.feature_kernel, c.batch_norm),
            *_conv(c.feature_channels, c.stage1_channels, c.stage1_kernel, c.batch_norm, dropout=c.dropout),
            *_conv(c.stage1_channels, c.stage1_channels, 1, c.batch_norm, dropout=c.dropout),
            *_conv(c.stage1_channels, out, 1, False, relu=False),
        )
        # Shared trunk x' for stages >= 2, and one feature layer + refinement head per stage.
        self.trunk = nn.Sequential(*_trunk(c)) if c.num_stages > 1 else None
        self.features = nn.ModuleList(
            nn.Sequential(*_conv(c.trunk_channels, c.feature_channels, c.feature_kernel, c.batch_norm))
            for _ in range(c.num_stages - 1))
        self.stages = nn.ModuleList(self._refine_stage(c) for _ in range(c.num_stages - 1))
        self.center_pool = nn.AvgPool2d(kernel_size=9, stride=8, ceil_mode=True)
        self._init_weights()

    @staticmethod
    def _refine_stage(c: CPMConfig) -> nn.Sequential:
        cin = c.feature_channels + c.num_parts + 1 + 1
        layers: list[nn.Module] = []
        for _ in range(c.stage_convs):
            layers += _conv(cin, c.stage_channels, c.stage_kernel, c.batch_norm)
            cin = c.stage_channels
        layers += _conv(cin, c.stage_channels, 1, c.batch_norm)
        layers += _conv(c.stage_channels, c.num_parts + 1, 1, False, relu=False)
        return nn.Sequential(*layers)

    def _init_weights(self):
        # "he": He-normal for the ReLU convs; each stage's belief layer starts small (std 0.01 by
        # default, as the official Caffe prototxt initialises every layer). "gaussian" is that
        # official init everywhere: activations shrink layer by layer (most at the 1x1 convs), so
        # at 368 px the image-dependent part of the beliefs starts ~100x below the targets' and
        # the first SGD steps mainly fit the biases.
        c = self.config
        heads = {id(seq[-1]) for seq in [self.stage1, *self.stages]}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if c.init == "lecun":
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                    nn.init.normal_(m.weight, std=1.0 / math.sqrt(fan_in))
                elif c.init == "gaussian" or id(m) in heads:
                    nn.init.normal_(m.weight, std=c.init_std)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides) -> "CPM":
        """Build a CPM from a named preset (``"paper"``, ``"small"``, ``"tiny"``), e.g.
        ``CPM.from_preset("tiny", num_stages=4, batch_norm=True)``."""
        return cls(preset_config(name, **overrides))

    @property
    def codec(self) -> CodecConfig:
        return self.config.codec

    def wiring(self, num_stages: int | None = None) -> list[Block]:
        """The model's dataflow, in execution order: ``forward`` runs exactly these blocks, and the
        diagnostics (receptive fields, cost, gradient tracking) read the graph from them.

        Inputs are named ``"image"`` and ``"center_map"``; block ``"beliefs{t}"`` is stage t's
        output. Stage 1 maps the image to beliefs; stage 2 owns the shared trunk x' and the
        centre-map pooling, which every stage t >= 2 reuses with its own feature layer.
        ``num_stages`` (default all) stops after that many stages.
        """
        k = self.config.num_stages if num_stages is None else int(num_stages)
        if not 1 <= k <= self.config.num_stages:
            raise ValueError(f"num_stages must be in 1..{self.config.num_stages}, got {num_stages}")
        blocks = [Block("beliefs1", 1, "stage1", self.stage1, ("image",))]
        if k > 1:
            blocks += [Block("trunk", 2, "trunk", self.trunk, ("image",)),
                       Block("center", 2, "center", self.center_pool, ("center_map",))]
        for t in range(2, k + 1):
            blocks += [Block(f"features{t}", t, f"stage{t}", self.features[t - 2], ("trunk",)),
                       Block(f"beliefs{t}", t, f"stage{t}", self.stages[t - 2],
                             (f"features{t}", f"beliefs{t - 1}", "center"))]
        return blocks

    def forward(self, images: torch.Tensor, center_maps: torch.Tensor | None = None,
                num_stages: int | None = None) -> list[torch.Tensor]:
        """Beliefs of stages 1..``num_stages`` (default all): a list of (N, P + 1, H/8, W/8).

        ``center_maps`` (N, 1, H, W) at input resolution; None = a Gaussian on each image's
        centre (``targets.default_centers``).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W); got {tuple(images.shape)}")
        n, _, h, w = images.shape
        if center_maps is None:
            centers = default_centers(n, h, w, device=images.device)
            center_maps = center_map(centers, self.codec, h, w).to(images.dtype)
        elif center_maps.shape != (n, 1, h, w):
            raise ValueError(f"center_maps must have shape (N, 1, H, W) = {(n, 1, h, w)}; "
                             f"got {tuple(center_maps.shape)}")
        values = {"image": self.network_input(images), "center_map": center_maps}
        blocks = self.wiring(num_stages)
        for b in blocks:
            x = values[b.inputs[0]] if len(b.inputs) == 1 else torch.cat([values[i] for i in b.inputs], dim=1)
            values[b.name] = b.module(x)
        return [values[b.name] for b in blocks if b.name.startswith("beliefs")]

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the first convolutions see, (N, 3, H, W), from RGB ``images`` (N, 3, H, W) in [0, 1]:
        the images themselves (``input_convention="rgb"``), or for ``"caffe"`` the official
        release's input: BGR channel order, values x * 255/256 - 0.5 (v/256 - 0.5 for v = 255 x)."""
        if self.config.input_convention == "caffe":
            return images.flip(1) * (255 / 256) - 0.5
        return images

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """The modules owned by ``stage`` (1-based), read from ``wiring``: stage 1's network, or
        for t >= 2 its feature layer and refinement head; stage 2 also owns the shared trunk and
        the centre-map pooling, as the first stage that uses them."""
        if not 1 <= stage <= self.config.num_stages:
            raise ValueError(f"stage must be in 1..{self.config.num_stages}, got {stage}")
        return [b.module for b in self.wiring() if b.stage == stage]


def preset_config(name: str, **overrides) -> CPMConfig:
    """The ``CPMConfig`` of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown CPM preset {name!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in fields(CPMConfig)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown CPM option(s) {sorted(bad)}; valid options: {sorted(known - {'name'})}")
    return replace(PRESETS[name], **overrides)
