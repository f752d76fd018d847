"""U-Net and M-Unet (multi-field-of-view U-Net) in torch.

M-Unet follows Tokunaga et al., "Adaptive weighting multi-field-of-view CNN for
semantic segmentation in pathology" (CVPR 2019), as Harada et al. (EMBC 2019)
use it:

* one expert U-Net per field of view, each fed a window of the same pixel size
  at full, 1/2, 1/4 ... magnification (levels of :mod:`multifov`);
* each expert's heart probability ``p`` becomes the two-class map ``(p, 1-p)``,
  is cropped and upsampled onto the full-magnification region
  (:class:`multifov.Alignment`), optionally scaled by the expert's weight, and
  the maps are concatenated (with ``expert_features``, together with each
  expert's aligned last hidden layer: the small preset does this, because it
  learns faster and gives richer features; AWMF-CNN passes the maps only);
* an aggregating CNN (3x3 convs, BN, ELU) whose last hidden layer is the
  per-pixel *feature* (``feature_channels``, 32 by default) and whose final
  1x1 conv gives the heart logit;
* deep supervision: every expert has its own 1x1 head and loss;
* optional adaptive weighting: a small CNN on the middle field of view predicts,
  per expert, how well it segments the patch (its two-class Dice), and that
  number scales the expert's maps.

The plain U-Net (the paper's baseline) is one expert at full magnification whose
top decoder level is the feature layer.

Every network works on any window size that is a multiple of ``2**(depth-1)``,
so one set of weights serves training patches and inference tiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import choices, multifov
from .errors import ScribbleSegError

ARCHS = choices.ARCHITECTURES


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a segmentation network.

    Attributes
    ----------
    arch : str
        ``"munet"`` (multi-field-of-view) or ``"unet"`` (plain U-Net, full magnification only).
    patch : int
        Side of every expert's training patch in pixels (a multiple of ``2**max(n_fov, depth-1, 3)``).
    n_fov : int
        Number of fields of view (experts) of an M-Unet, a factor of 2 apart.
    width : int
        Filters of an expert U-Net's top level; level ``l`` has ``width * 2**l``.
    depth : int
        Resolution levels of an expert U-Net (2x2 max-pools = ``depth - 1``).
    aggregator : tuple of int
        Widths of the aggregating CNN's 3x3 convs before its feature layer.
    feature_channels : int
        Width of the feature layer, the last hidden layer before the 1x1 output.
    weighting : bool
        Adaptive weighting of the experts (AWMF-CNN); fixed weights 1 if false.
    expert_features : bool
        Also give the aggregating CNN each expert's last hidden layer (aligned),
        not only its two-class map as AWMF-CNN does.
    deep_supervision : float
        Weight of the mean of the experts' own losses in the training loss.

    Examples
    --------
    >>> config = ModelConfig()
    >>> config.arch, config.n_fov, config.feature_channels
    ('munet', 3, 32)
    >>> type(build_net(config)).__name__
    'MUNet'
    """

    arch: str = "munet"
    patch: int = 64
    n_fov: int = 3
    width: int = 12
    depth: int = 3
    aggregator: Tuple[int, ...] = (32,)
    feature_channels: int = 32
    weighting: bool = False
    expert_features: bool = False
    deep_supervision: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "aggregator", tuple(int(a) for a in self.aggregator))
        if self.arch not in ARCHS:
            raise ScribbleSegError(f"model arch {self.arch!r}: expected one of {', '.join(ARCHS)}")
        if self.depth < 2 or self.n_fov < 1 or self.width < 1 or self.feature_channels < 1:
            raise ScribbleSegError("model config: depth must be >= 2, n_fov, width and feature_channels >= 1")
        quantum = 2 ** max(self.n_fov, self.depth - 1, 3)
        if self.patch < quantum or self.patch % quantum:
            raise ScribbleSegError(f"model config: patch {self.patch} must be a positive multiple of {quantum} "
                                   f"for depth {self.depth} and {self.n_fov} fields of view")

    @classmethod
    def small(cls, arch: str = "munet") -> "ModelConfig":
        """A network that trains on a 2-core CPU in minutes (the demo's).

        3-level experts see 47 pixels of their level (188 at 1/4 magnification),
        and the aggregating CNN also gets the experts' hidden layers.

        Examples
        --------
        >>> ModelConfig.small().expert_features, ModelConfig.small("unet").expert_features
        (True, False)
        """
        return cls(arch=arch, expert_features=(arch == "munet"))

    @classmethod
    def paper(cls, arch: str = "munet") -> "ModelConfig":
        """The published sizes (5-level experts with 32..512 filters, 256-pixel patches), for a GPU.

        Examples
        --------
        >>> config = ModelConfig.paper()
        >>> config.patch, config.depth, config.width, config.weighting, ModelConfig.paper("unet").weighting
        (256, 5, 32, True, False)
        """
        return cls(arch=arch, patch=256, n_fov=3, width=32, depth=5, aggregator=(64, 64, 32),
                   feature_channels=32, weighting=(arch == "munet"), deep_supervision=1.0)

    @classmethod
    def preset(cls, name: str, arch: str = "munet") -> "ModelConfig":
        """``small`` or ``paper``.

        Examples
        --------
        >>> ModelConfig.preset("paper", "unet") == ModelConfig.paper("unet")
        True
        >>> ModelConfig.preset("huge")
        Traceback (most recent call last):
        ...
        ScribbleSegLib.errors.ScribbleSegError: preset 'huge': expected one of small, paper
        """
        if name not in choices.PRESETS:
            raise ScribbleSegError(f"preset {name!r}: expected one of {', '.join(choices.PRESETS)}")
        return getattr(cls, name)(arch)

    @property
    def fov_count(self) -> int:
        """Fields of view the network actually uses (1 for a plain U-Net).

        Examples
        --------
        >>> ModelConfig(n_fov=3).fov_count, ModelConfig(arch="unet", n_fov=3).fov_count
        (3, 1)
        """
        return self.n_fov if self.arch == "munet" else 1

    def to_dict(self) -> Dict[str, object]:
        """A JSON-ready dict.

        Examples
        --------
        >>> d = ModelConfig(aggregator=(64, 32)).to_dict()
        >>> d["arch"], d["aggregator"]  # a list, as JSON gives it back
        ('munet', [64, 32])
        """
        d = asdict(self)
        d["aggregator"] = list(self.aggregator)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Examples
        --------
        >>> config = ModelConfig.paper()
        >>> ModelConfig.from_dict(config.to_dict()) == config
        True
        >>> ModelConfig.from_dict({"arch": "unet", "colour": 1})
        Traceback (most recent call last):
        ...
        ScribbleSegLib.errors.ScribbleSegError: model config: unknown keys ['colour']
        """
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ScribbleSegError(f"model config: unknown keys {sorted(unknown)}")
        return cls(**d)


def scale_input(x: torch.Tensor) -> torch.Tensor:
    """Network input from RGB values in [0, 255]: [-1, 1].

    Examples
    --------
    >>> scale_input(torch.tensor([0.0, 127.5, 255.0])).tolist()
    [-1.0, 0.0, 1.0]
    """
    return x / 127.5 - 1.0


def to_input(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 crops as a ``(B, 3, H, W)`` float input on ``device``.

    Examples
    --------
    >>> x = to_input(np.full((2, 4, 6, 3), 255, np.uint8), torch.device("cpu"))
    >>> tuple(x.shape), x.dtype, x.max().item()
    ((2, 3, 4, 6), torch.float32, 1.0)
    """
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True)
    return scale_input(x.permute(0, 3, 1, 2).float())


def _conv(cin: int, cout: int, stride: int = 1) -> List[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ELU(inplace=True)]


class UNet(nn.Module):
    """A 2D U-Net: two 3x3 conv + BN + ELU per level, max-pool down, nearest upsampling up.

    ``forward`` returns the top decoder level (``out_width`` channels), the layer
    before the 1x1 head.

    Examples
    --------
    >>> unet = UNet(3, width=4, depth=3, out_width=8)
    >>> tuple(unet(torch.zeros(1, 3, 16, 16)).shape), unet.radius
    ((1, 8, 16, 16), 23)
    """

    def __init__(self, in_channels: int, width: int, depth: int, out_width: Optional[int] = None) -> None:
        super().__init__()
        widths = [width * 2 ** level for level in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(nn.Sequential(*_conv(cin, w), *_conv(w, w)))
            cin = w
        self.up = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            w = widths[level] if level or out_width is None else out_width
            self.up.append(nn.Sequential(*_conv(widths[level + 1] + widths[level], w), *_conv(w, w)))
        self.out_width = out_width or width
        self.depth = depth

    @property
    def radius(self) -> int:
        """The receptive-field radius, in input pixels, over every position of the pooling grid."""
        # Two 3x3 convs per level down (2 * 2**l each) and up, one 2x2 pool per level:
        # 2(2**D - 1) + (2**(D-1) - 1) + 2(2**(D-1) - 1); checked against input gradients.
        return 3 * 2 ** self.depth + 2 ** (self.depth - 1) - 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return x


class WeightNet(nn.Module):
    """The weighting CNN: cell features at stride 4, then per-expert weights in (0, 1).

    AWMF-CNN uses an ImageNet Xception here; a small CNN trained from scratch
    keeps the model file self-contained.

    Examples
    --------
    >>> weights = WeightNet(n_fov=3)(torch.zeros(2, 3, 32, 32))
    >>> tuple(weights.shape), bool(((weights > 0) & (weights < 1)).all())
    ((2, 3), True)
    """

    def __init__(self, n_fov: int, width: int = 16) -> None:
        super().__init__()
        self.cells = nn.Sequential(*_conv(3, width, 2), *_conv(width, 2 * width, 2), *_conv(2 * width, 2 * width))
        self.head = nn.Linear(2 * width, n_fov)

    def forward(self, x: torch.Tensor, box: Optional[int] = None,
                cells: Optional[Tuple[Tuple[int, int], Tuple[int, int]]] = None) -> torch.Tensor:
        """Weights ``(B, n_fov)`` of a patch, or, with ``box``, a weight map per cell ``(B, n_fov, h, w)``."""
        c = self.cells(x)
        if box is None:
            return torch.sigmoid(self.head(c.mean(dim=(2, 3))))
        (y0, x0), (h, w) = cells
        c = F.avg_pool2d(c[:, :, y0:y0 + h, x0:x0 + w], box, stride=1)
        return torch.sigmoid(self.head(c.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


def align(x: torch.Tensor, a: multifov.Alignment) -> torch.Tensor:
    """Put a low-resolution map onto the aggregation region (see :class:`multifov.Alignment`).

    Examples
    --------
    Crop rows and columns 1-2, upsample them twice (bilinear), keep the middle 2x2:

    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> align(x, multifov.Alignment((1, 1), (2, 2), 2, (1, 1), (2, 2)))[0, 0].tolist()
    [[6.25, 6.75], [8.25, 8.75]]
    """
    (y0, x0), (h, w) = a.start, a.size
    x = x[:, :, y0:y0 + h, x0:x0 + w]
    if a.factor > 1:
        x = F.interpolate(x, scale_factor=a.factor, mode="bilinear", align_corners=False)
    (oy, ox), (oh, ow) = a.offset, a.out_size
    return x[:, :, oy:oy + oh, ox:ox + ow]


@dataclass
class NetOutput:
    """What a forward pass gives.

    Attributes
    ----------
    logit : Tensor (B, 1, h, w)
        Heart logit on the kept core.
    features : Tensor (B, C, h, w)
        The per-pixel features on the core.
    expert_logits : list of Tensor
        Each expert's logit over its whole input window (deep supervision); empty for a U-Net.
    expert_probs : list of Tensor
        Each expert's probability aligned on the core (targets of the weighting CNN).
    weights : Tensor or None
        ``(B, n_fov)`` for a patch, ``(B, n_fov, h, w)`` for a tile.

    Examples
    --------
    An M-Unet's pass over a 16x16 tile core:

    >>> net = build_net(ModelConfig()).eval()
    >>> geom = geometry_for_tile(net, (16, 16))
    >>> pyramid = multifov.build_pyramid(np.zeros((40, 40, 3), np.uint8), 3)
    >>> inputs = [to_input(w[None], torch.device("cpu")) for w in multifov.extract(pyramid, geom.windows, (0, 0))]
    >>> with torch.no_grad():
    ...     out = net(inputs, geom)
    >>> tuple(out.logit.shape), tuple(out.features.shape), len(out.expert_logits), out.weights
    ((1, 1, 16, 16), (1, 32, 16, 16), 3, None)
    """

    logit: torch.Tensor
    features: torch.Tensor
    expert_logits: List[torch.Tensor] = field(default_factory=list)
    expert_probs: List[torch.Tensor] = field(default_factory=list)
    weights: Optional[torch.Tensor] = None


def _crop_core(x: torch.Tensor, geom: multifov.FovGeometry) -> torch.Tensor:
    (y0, x0), (h, w) = geom.core
    return x[:, :, y0:y0 + h, x0:x0 + w]


class PlainUNet(nn.Module):
    """The baseline: one U-Net at full magnification, features = its top decoder level.

    Examples
    --------
    >>> net = build_net(ModelConfig(arch="unet"))
    >>> net.unet.out_width == net.config.feature_channels, net.expert_radius, net.aggregator_radius
    (True, 23, 0)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(3, config.width, config.depth, out_width=config.feature_channels)
        self.head = nn.Conv2d(config.feature_channels, 1, 1)

    @property
    def expert_radius(self) -> int:
        """Receptive-field radius of the U-Net."""
        return self.unet.radius

    aggregator_radius = 0

    def forward(self, inputs: Sequence[torch.Tensor], geom: multifov.FovGeometry) -> NetOutput:
        feats = align(self.unet(inputs[0]), geom.experts[0])
        feats = _crop_core(feats, geom)
        return NetOutput(self.head(feats), feats)


class MUNet(nn.Module):
    """Multi-field-of-view U-Net with an aggregating CNN (see the module docstring).

    Examples
    --------
    >>> net = MUNet(ModelConfig(aggregator=(32, 32)))
    >>> len(net.experts), net.expert_radius, net.aggregator_radius, net.weight_net
    (3, 23, 3, None)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n_fov
        self.experts = nn.ModuleList(UNet(3, config.width, config.depth) for _ in range(n))
        self.expert_heads = nn.ModuleList(nn.Conv2d(config.width, 1, 1) for _ in range(n))
        layers: List[nn.Module] = []
        cin = 2 * n + (n * config.width if config.expert_features else 0)
        for w in (*config.aggregator, config.feature_channels):
            layers += _conv(cin, w)
            cin = w
        self.aggregator = nn.Sequential(*layers)
        self.head = nn.Conv2d(config.feature_channels, 1, 1)
        self.weight_net = WeightNet(n) if config.weighting else None

    @property
    def expert_radius(self) -> int:
        """Receptive-field radius of one expert, in pixels of its level."""
        return self.experts[0].radius

    @property
    def aggregator_radius(self) -> int:
        """Receptive-field radius of the aggregating CNN (one pixel per 3x3 conv)."""
        return len(self.config.aggregator) + 1

    def expert(self, k: int, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Expert ``k``'s hidden map and logit over its input window ``x``.

        Examples
        --------
        >>> hidden, logit = MUNet(ModelConfig(width=12)).expert(2, torch.zeros(1, 3, 16, 16))
        >>> tuple(hidden.shape), tuple(logit.shape)
        ((1, 12, 16, 16), (1, 1, 16, 16))
        """
        hidden = self.experts[k](x)
        return hidden, self.expert_heads[k](hidden)

    def forward(self, inputs: Sequence[torch.Tensor], geom: multifov.FovGeometry,
                experts: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor]]] = None) -> NetOutput:
        """The network's outputs; ``experts``: each expert's :meth:`expert` outputs, when computed already
        (training runs the experts on threads of their own: :func:`training.backward_step`)."""
        n = self.config.n_fov
        weights = None
        if self.weight_net is not None:
            if geom.weights is None:
                weights = self.weight_net(inputs[n])
            else:
                weights = align(self.weight_net(inputs[n], geom.box, geom.weight_crop), geom.weights)
        logits, probs, maps = [], [], []
        for k in range(n):
            hidden, logit = experts[k] if experts is not None else self.expert(k, inputs[k])
            logits.append(logit)
            p = torch.sigmoid(align(logit, geom.experts[k]).float())
            probs.append(p)
            two_class = torch.cat([p, 1.0 - p], dim=1)
            if weights is not None:
                # The weighting CNN learns from its own loss only, as AWMF-CNN trains it with the rest frozen.
                w = weights.detach()[:, k:k + 1]
                two_class = two_class * (w[:, :, None, None] if w.dim() == 2 else w)
            maps.append(two_class)
            if self.config.expert_features:
                maps.append(align(hidden, geom.experts[k]))
        feats = self.aggregator(torch.cat(maps, dim=1))
        feats = _crop_core(feats, geom)
        core_probs = [_crop_core(p, geom) for p in probs]
        return NetOutput(self.head(feats), feats, logits, core_probs, weights)


def build_net(config: ModelConfig) -> nn.Module:
    """The network of a config, freshly initialised (He-uniform convs, as the AWMF-CNN code).

    Examples
    --------
    >>> net = build_net(ModelConfig(arch="unet"))
    >>> type(net).__name__, sum(p.numel() for p in net.parameters()) > 0
    ('PlainUNet', True)
    """
    net = MUNet(config) if config.arch == "munet" else PlainUNet(config)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def geometry_for_tile(net: nn.Module, core: Tuple[int, int]) -> multifov.FovGeometry:
    """The tile layout (:func:`multifov.tile_geometry`) of ``net`` for a core of ``core`` pixels.

    Examples
    --------
    >>> geom = geometry_for_tile(build_net(ModelConfig(arch="unet")), (32, 32))
    >>> geom.core, geom.windows[0].start, geom.windows[0].size  # the core and the U-Net's receptive field
    (((0, 0), (32, 32)), (-24, -24), (80, 80))
    """
    return multifov.tile_geometry(net.config, core, net.expert_radius, net.aggregator_radius)

