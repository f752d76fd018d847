"""gamma and sigma scaled to the objects and the image (cut_scaling), and the measures they read."""

import math

import numpy as np
import pytest

from ScribbleSegLib import cut_scaling, graphcut
from ScribbleSegLib.graphcut import GraphCutParams


@pytest.mark.parametrize("radius", [5, 12, 30])
def test_object_radius_of_discs(radius):
    mask = np.zeros((1, 2 * radius + 40, 2 * radius + 40), bool)
    yy, xx = np.mgrid[:mask.shape[1], :mask.shape[2]]
    mask[0] = (yy - radius - 20) ** 2 + (xx - radius - 20) ** 2 < radius ** 2
    assert cut_scaling.object_radius(mask) == pytest.approx(radius, rel=0.12)
    assert cut_scaling.object_radius(np.zeros((2, 8, 8), bool)) == math.inf
    h = np.where(mask, 0.9, 0.2).astype(np.float32)
    assert cut_scaling.object_radius(h, threshold=0.5) == cut_scaling.object_radius(mask)


def test_unsure_share_counts_doubt_per_object_voxel():
    h = np.zeros((2, 8, 8), np.float32)
    h[0, :4, :4] = 0.95  # 16 object voxels
    h[1, 0, :3] = (0.5, 0.1, 0.9)  # 0.5 unsure (not an object voxel); 0.1 and 0.9 not (the range is open)
    h[1, 1, :3] = (0.3, 0.7, 0.11)  # 3 unsure, one of them (0.7) an object voxel too
    assert cut_scaling.unsure_share(h) == pytest.approx(4 / 18)  # 16 + 0.9 + 0.7 object voxels
    assert cut_scaling.unsure_share(np.full((1, 4, 4), 0.3, np.float32)) == math.inf


def _soft_square(lo: int, hi: int, width: float, size: int = 128) -> np.ndarray:
    """``h`` of a square [lo, hi)^2 whose edge rises over about ``width`` pixels (a logistic ramp)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    inside = np.minimum(np.minimum(yy - lo, hi - yy), np.minimum(xx - lo, hi - xx))
    return (1 / (1 + np.exp(-4 * inside / width)))[None].astype(np.float32)


def test_large_objects_keep_gamma():
    # Radius 44 px with a 6-pixel band of doubt (unsure share above the reference): gamma as given.
    params = GraphCutParams(reference_unsure=None)
    h = _soft_square(20, 108, 6.0)
    assert cut_scaling.unsure_share(h) > graphcut.DEFAULT_REFERENCE_UNSURE
    assert cut_scaling.scaled_to_objects(GraphCutParams(), h) == GraphCutParams()
    small = np.zeros_like(h)
    small[0, 10:14, 10:14] = 0.9
    expected = params.gamma * cut_scaling.MIN_GAMMA_FACTOR
    assert cut_scaling.scaled_to_objects(params, small).gamma == pytest.approx(expected)
    assert cut_scaling.scaled_to_objects(GraphCutParams.paper(), small).gamma == GraphCutParams.paper().gamma


def test_gamma_follows_how_sure_h_is_of_its_outlines():
    # The same large square: with an outline h is sure of to a pixel the boundary term weighs less (in
    # quarter octaves, never below MIN_GAMMA_FACTOR); with a wide band of doubt it stays as given.
    params = GraphCutParams()
    sure = _soft_square(20, 108, 1.0)
    share = cut_scaling.unsure_share(sure)
    assert 0 < share < params.reference_unsure / 2
    factor = cut_scaling.scaled_to_objects(params, sure).gamma / params.gamma
    assert factor == pytest.approx(2 ** (round(4 * math.log2(share / params.reference_unsure)) / 4))
    assert cut_scaling.MIN_GAMMA_FACTOR <= factor < 1
    assert cut_scaling.scaled_to_objects(GraphCutParams(reference_unsure=None), sure) == GraphCutParams(
        reference_unsure=None)
    assert cut_scaling.scaled_to_objects(params, np.round(sure)).gamma == params.gamma * cut_scaling.MIN_GAMMA_FACTOR
    unsure = _soft_square(20, 108, 12.0)
    assert cut_scaling.scaled_to_objects(params, unsure) == params
    assert GraphCutParams(**graphcut.AS_GIVEN).reference_unsure is None


def _discs(rows: int, radius: int, gap: int, small_every: int = 0) -> np.ndarray:
    """A ``rows`` x ``rows`` grid of discs ``gap`` px apart, every ``small_every``-th (along the diagonals) at 0.6 of
    ``radius``: bool ``(Y, X)``."""
    size = rows * (2 * radius + gap) + 10
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for i in range(rows):
        for j in range(rows):
            r = radius * (0.6 if small_every and (i + j) % small_every == 0 else 1.0)
            cy, cx = 5 + radius + i * (2 * radius + gap), 5 + radius + j * (2 * radius + gap)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return mask


def test_object_count_counts_pieces_by_their_share_of_the_area():
    nine = _discs(3, 8, 6)
    assert cut_scaling.object_count(nine[None]) == pytest.approx(9)
    one = np.zeros_like(nine)
    one[10:60, 10:60] = True
    one[70, ::7] = True  # specks of noise beside one organ
    assert 1 < cut_scaling.object_count(one[None]) < 1.02
    # Averaged over the sections with objects: an empty section does not count.
    stack = np.stack([nine, one, np.zeros_like(one)]).astype(np.float32)
    assert cut_scaling.object_count(stack) == pytest.approx((cut_scaling.object_count(nine[None])
                                                             + cut_scaling.object_count(one[None])) / 2)
    assert cut_scaling.object_count(np.full((2, 8, 8), 0.4, np.float32)) == 0.0
    # Pieces touching only at a corner are two (4-connected), as the outline edges of object_radius see them.
    corner = np.zeros((1, 4, 4), bool)
    corner[0, 0, 0] = corner[0, 1, 1] = True
    assert cut_scaling.object_count(corner) == pytest.approx(2)


def test_gamma_follows_how_many_objects_lie_side_by_side():
    # Large discs (radius 20: no radius factor) with a wide band of doubt (no unsure factor): 9 of them scale gamma
    # by 4/9 in quarter octaves, 4 or fewer leave it as given, and so does the paper's setting.
    params = GraphCutParams()
    nine = cut_scaling.object_count(_discs(3, 20, 10)[None])
    h = (0.2 + 0.6 * _discs(3, 20, 10))[None].astype(np.float32)
    assert cut_scaling.object_radius(h, 0.5) > params.reference_radius
    assert cut_scaling.unsure_share(h) > params.reference_unsure
    factor = cut_scaling.scaled_to_objects(params, h).gamma / params.gamma
    assert factor == pytest.approx(2 ** (round(4 * math.log2(params.reference_objects / nine)) / 4))
    assert factor < 1
    assert cut_scaling.scaled_to_objects(GraphCutParams(reference_objects=None), h) == GraphCutParams(
        reference_objects=None)
    four = (0.2 + 0.6 * _discs(2, 20, 10))[None].astype(np.float32)
    assert cut_scaling.scaled_to_objects(params, four) == params
    assert GraphCutParams(**graphcut.AS_GIVEN).reference_objects is None
    assert GraphCutParams.paper().reference_objects is None


def test_many_sure_objects_side_by_side_may_scale_gamma_below_the_floor_of_one_organ():
    # 36 small discs that h is sure of: radius, doubt and count each call for a small gamma.  Side by side, more
    # than reference_objects of them may take gamma to the lower floor; one such disc alone stops at the floor.
    params = GraphCutParams()
    many = np.round(_discs(6, 6, 6))[None].astype(np.float32)
    assert cut_scaling.object_count(many) > params.reference_objects
    assert cut_scaling.scaled_to_objects(params, many).gamma == pytest.approx(
        params.gamma * cut_scaling.MANY_OBJECTS_MIN_GAMMA_FACTOR)
    one = np.zeros_like(many)
    one[0, :20, :20] = many[0, :20, :20]
    assert cut_scaling.object_count(one) <= params.reference_objects
    assert cut_scaling.scaled_to_objects(params, one).gamma == pytest.approx(params.gamma
                                                                             * cut_scaling.MIN_GAMMA_FACTOR)


def test_many_objects_side_by_side_are_kept_apart():
    # 25 nuclei 3 px apart, some small, an h that is unsure everywhere, one heart stroke: gamma as the radius
    # alone scales it joins neighbours and erases small ones; scaled to the number of objects the cut keeps them.
    from ScribbleSegLib.phantom import _blur_sections

    truth = _discs(5, 10, 3, small_every=3)
    rng = np.random.default_rng(0)
    h = (0.2 + 0.6 * _blur_sections(truth[None].astype(np.float32), 2.0)).astype(np.float32)
    dark = _blur_sections(truth[None].astype(np.float32), 1.5)[0][..., None]
    image = np.clip(230 - 120 * dark + rng.normal(0, 4, dark.shape[:2] + (3,)), 0, 255).astype(np.uint8)[None]
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 5 + 10 + 23, 5 + 10 + 23] = 1  # the centre of a large nucleus
    scribbles[0, 0, :] = 2
    for params, kept in ((GraphCutParams(), True), (GraphCutParams(reference_objects=None), False)):
        labels = graphcut.graph_cut(h, image, scribbles, params=params, mode="full")[0] > 0
        iou = (labels & truth).sum() / (labels | truth).sum()
        assert (_pieces(labels) == _pieces(truth)) is kept
        assert bool(iou > 0.95) is kept


def _pieces(mask: np.ndarray) -> int:
    """The number of 4-connected pieces of a 2D mask."""
    import SimpleITK as sitk

    return int(sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)))).max())


def test_image_contrast_in_the_cut_s_colour_space():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    rgb = cut_scaling.image_contrast(image)
    assert cut_scaling.image_contrast(image.astype(np.float32) / 255) == pytest.approx(rgb, rel=1e-5)
    assert cut_scaling.image_contrast(image, "luminance") < rgb
    grey = image[..., 0]
    assert cut_scaling.image_contrast(grey) == pytest.approx(cut_scaling.image_contrast(grey[..., None]))
    assert cut_scaling.scaled_to_contrast(GraphCutParams(), image) == GraphCutParams()  # noise: high contrast
    assert cut_scaling.scaled_to_contrast(GraphCutParams.paper(), np.zeros_like(image)) == GraphCutParams.paper()
