"""U-Net / M-Unet shapes and the multi-field-of-view geometry (nets.py, multifov.py)."""

import dataclasses

import numpy as np
import pytest
import torch

from ScribbleSegLib import multifov
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.nets import ModelConfig, UNet, align, build_net, geometry_for_tile
from ScribbleSegLib.runtime import torch_threads

TINY = dict(patch=32, width=4, depth=3, aggregator=(8,), feature_channels=8)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):  # tiny tensors: one intra-op thread is much faster on small CPUs
        yield


def ramp_section(h=160, w=176):
    """Channel 0 = 2y, channel 1 = 2x (mod 256), channel 2 = 7.

    Area averages of a ramp with slope 2 stay integers, and bilinear upsampling
    of a ramp is exact, so aligned low-magnification maps must equal level 0
    (away from the wrap at 128 pixels).
    """
    y, x = np.mgrid[:h, :w]
    return np.stack([2 * y % 256, 2 * x % 256, np.full_like(y, 7)], axis=-1).astype(np.uint8)


def as_maps(crops):
    return [torch.from_numpy(np.stack([c])).permute(0, 3, 1, 2).float() for c in crops]


def test_presets_and_dict_round_trip():
    for arch in ("munet", "unet"):
        for preset in ("small", "paper"):
            config = ModelConfig.preset(preset, arch)
            assert config.arch == arch
            assert config.feature_channels == 32
            assert ModelConfig.from_dict(config.to_dict()) == config
    paper = ModelConfig.paper()
    assert (paper.patch, paper.depth, paper.width, paper.n_fov) == (256, 5, 32, 3)


@pytest.mark.parametrize("bad", [dict(arch="vnet"), dict(patch=36), dict(depth=1), dict(n_fov=0)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ScribbleSegError):
        ModelConfig(**bad)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ScribbleSegError, match="unknown"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "colour": 1})


def test_downsample2_is_an_area_mean_with_reflected_odd_edge():
    a = np.arange(5 * 3, dtype=np.uint8).reshape(5, 3) * 10
    d = multifov.downsample2(a)
    assert d.shape == (3, 2)
    assert d[0, 0] == np.rint(a[:2, :2].mean())
    # The odd last column pairs with its mirror (column 1), the odd last row with row 3.
    assert d[0, 1] == np.rint(a[:2, [2, 1]].mean())
    assert d[2, 0] == np.rint(a[[4, 3]][:, :2].mean())


def test_reflect_indices_fold_any_range():
    assert multifov.reflect_indices(-3, 10, 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert multifov.reflect_indices(-2, 3, 1).tolist() == [0, 0, 0]


@pytest.mark.parametrize("n_fov", [1, 2, 3])
def test_patch_crops_align_on_the_full_magnification_patch(n_fov):
    config = ModelConfig(n_fov=n_fov, **TINY)
    geom = multifov.patch_geometry(config)
    pyramid = multifov.build_pyramid(ramp_section(), n_fov)
    centre = (80, 88)  # a multiple of 2**(n_fov-1), far from the border
    crops = multifov.extract(pyramid, geom.windows, centre)
    assert [c.shape for c in crops] == [(32, 32, 3)] * n_fov
    maps = as_maps(crops)
    reference = maps[0]
    assert torch.equal(reference[0, 0, :, 0], 2 * torch.arange(64, 96).float())
    for k in range(n_fov):
        aligned = align(maps[k], geom.experts[k])
        assert aligned.shape == (1, 3, 32, 32)
        # Block means of a ramp, upsampled with half-pixel centres, give the ramp back exactly.
        assert torch.allclose(aligned[:, :2], reference[:, :2], atol=1e-4)


def test_tile_windows_align_on_the_aggregation_region():
    config = ModelConfig(weighting=True, **TINY)
    net = build_net(config)
    geom = geometry_for_tile(net, (32, 48))
    assert geom.align == multifov.tile_alignment(config) == 16
    assert all(s % 2 ** (config.depth - 1) == 0 for w in geom.windows[:3] for s in w.start + w.size)
    pyramid = multifov.build_pyramid(ramp_section(256, 256), 3)
    anchor = (32, 48)  # the aligned region stays below the ramp's wrap at 128
    crops = multifov.extract(pyramid, geom.windows, anchor)
    maps = as_maps(crops)
    m = net.aggregator_radius
    out_h, out_w = geom.experts[0].out_size
    assert (out_h, out_w) == (32 + 2 * m, 48 + 2 * m)
    ys = 2 * torch.arange(anchor[0] - m, anchor[0] - m + out_h).float()
    xs = 2 * torch.arange(anchor[1] - m, anchor[1] - m + out_w).float()
    for k in range(3):
        aligned = align(maps[k], geom.experts[k])
        assert torch.allclose(aligned[0, 0], ys[:, None].expand(-1, out_w), atol=1e-4)
        assert torch.allclose(aligned[0, 1], xs[None, :].expand(out_h, -1), atol=1e-4)
    # The weighting CNN's window covers its box of cells around every aggregation pixel.
    (cy, cx), (ch, cw) = geom.weight_crop
    win = geom.windows[3]
    assert win.level == 1
    assert ch - geom.box + 1 == geom.weights.size[0] and cw - geom.box + 1 == geom.weights.size[1]
    assert (cy + ch) * multifov.WEIGHT_STRIDE <= win.size[0] and (cx + cw) * multifov.WEIGHT_STRIDE <= win.size[1]


def test_unet_receptive_field_radius_is_a_bound():
    for depth in (2, 3, 4):
        net = UNet(3, 2, depth).eval()
        x = torch.randn(1, 3, 128, 128, requires_grad=True)
        net(x)[0, :, 64 + 3, 64 + 5].sum().backward()
        ys, xs = torch.nonzero(x.grad.abs().sum((0, 1)), as_tuple=True)
        reach = max(int((64 + 3 - ys).abs().max()), int((64 + 5 - xs).abs().max()))
        assert reach <= net.radius


@pytest.mark.parametrize("arch,weighting", [("munet", False), ("munet", True), ("unet", False)])
def test_forward_shapes_on_a_training_patch(arch, weighting):
    config = ModelConfig(arch=arch, weighting=weighting, **TINY)
    net = build_net(config)
    geom = multifov.patch_geometry(config)
    inputs = [torch.randn(2, 3, 32, 32) for _ in geom.windows]
    out = net(inputs, geom)
    assert out.logit.shape == (2, 1, 32, 32)
    assert out.features.shape == (2, 8, 32, 32)
    if arch == "munet":
        assert len(out.expert_logits) == 3 and all(lg.shape == (2, 1, 32, 32) for lg in out.expert_logits)
        assert len(out.expert_probs) == 3 and all(p.shape == (2, 1, 32, 32) for p in out.expert_probs)
        assert (out.weights is not None) == weighting
        if weighting:
            assert out.weights.shape == (2, 3) and bool(((out.weights > 0) & (out.weights < 1)).all())
    else:
        assert out.expert_logits == [] and out.weights is None


def test_features_are_the_layer_before_the_1x1_head():
    config = ModelConfig(**TINY)
    net = build_net(config).eval()
    geom = multifov.patch_geometry(config)
    inputs = [torch.randn(1, 3, 32, 32) for _ in geom.windows]
    with torch.no_grad():
        out = net(inputs, geom)
        assert torch.allclose(net.head(out.features), out.logit, atol=1e-6)


def test_lower_magnifications_change_the_output():
    """The outer fields of view feed the output (context the plain U-Net lacks)."""
    config = ModelConfig(**TINY)
    net = build_net(config).eval()
    geom = multifov.patch_geometry(config)
    inputs = [torch.randn(1, 3, 32, 32) for _ in geom.windows]
    with torch.no_grad():
        a = net(inputs, geom).logit
        b = net(inputs[:2] + [torch.randn(1, 3, 32, 32)], geom).logit
    assert not torch.allclose(a, b)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().width = 3
