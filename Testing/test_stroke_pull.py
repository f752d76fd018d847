"""The strokes' pull on the data term (stroke_pull): the formula, its ways through the tissue, what is kept."""

import os

import numpy as np
import pytest

from ScribbleSegLib import runtime, stroke_pull
from ScribbleSegLib.cut_scaling import image_contrast
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.stroke_pull import ImageMeasures, pulled_to_seeds


def test_strokes_pull_h_only_near_them_and_across_sections_by_their_spacing():
    h = np.full((5, 24, 24), 0.4, np.float32)
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[2, 12, 6:10] = 1
    scribbles[2, 2, 2:20] = 2
    before = h.copy()
    assert pulled_to_seeds(h, scribbles, (3.0, 1.0, 1.0), 0.0) is h
    pulled = pulled_to_seeds(h, scribbles, (3.0, 1.0, 1.0), 2.0)
    np.testing.assert_array_equal(h, before)  # the input is not changed
    assert pulled[2, 12, 7] == pytest.approx((0.4 + 1.0) / 2.0)  # on the stroke: as much as the network
    assert pulled[2, 13, 7] == pytest.approx((0.4 + np.exp(-0.5)) / (1.0 + np.exp(-0.5)))
    assert pulled[2, 12, 7] > pulled[2, 14, 7] > pulled[2, 16, 7] > 0.4  # falling off with the distance
    assert pulled[2, 4, 10] < 0.4  # a background stroke pulls down
    assert pulled[1, 12, 7] == pytest.approx((0.4 + np.exp(-1.5)) / (1.0 + np.exp(-1.5)))  # one 3-pixel section away
    assert pulled[0, 12, 7] == pytest.approx((0.4 + np.exp(-3.0)) / (1.0 + np.exp(-3.0)))  # 3 reaches: the last
    assert pulled[2, 20, 7] == pytest.approx(0.4)  # beyond 3 reaches: nothing
    thick = pulled_to_seeds(h, scribbles, (10.0, 1.0, 1.0), 2.0)
    assert thick[1, 12, 7] == pytest.approx(0.4) and thick[2, 13, 7] == pytest.approx(pulled[2, 13, 7])
    half = pulled_to_seeds(h, scribbles, (3.0, 1.0, 1.0), 2.0, across=0.5)
    assert half[1, 12, 7] == pytest.approx((0.4 + np.exp(-3.0)) / (1.0 + np.exp(-3.0)))  # a section counts double
    assert half[0, 12, 7] == pytest.approx(0.4) and half[2, 13, 7] == pytest.approx(pulled[2, 13, 7])
    own = pulled_to_seeds(h, scribbles, (3.0, 1.0, 1.0), 2.0, across=0.0)
    np.testing.assert_array_equal(own[[0, 1, 3, 4]], h[[0, 1, 3, 4]])  # the stroke's own section only
    np.testing.assert_allclose(own[2], pulled[2], atol=1e-6)


@pytest.mark.parametrize("across", [1.0, 0.6])
def test_the_stroke_pull_equals_the_formula_with_brute_force_distances(across):
    rng = np.random.default_rng(3)
    h = rng.random((7, 18, 21)).astype(np.float32)
    scribbles = np.zeros(h.shape, np.uint8)
    for z, value in ((1, 1), (1, 2), (4, 1), (5, 2), (6, 1)):  # strokes of both classes on several sections
        y, x = rng.integers(0, 18), rng.integers(0, 21)
        scribbles[z, y, max(0, x - 3):x + 3] = value
    spacing, reach = (1.7, 1.0, 0.8), 2.5
    pixel, cutoff = 0.8, stroke_pull.SEED_REACH_CUTOFF * reach
    # Across sections the distance counts 1 / across times: the section spacing stretched by it.
    stretched = (spacing[0] / across,) + spacing[1:]
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(h.shape, stretched)], indexing="ij"), -1)
    expected = h.astype(np.float64)
    total = np.ones(h.shape)
    near_cutoff = np.zeros(h.shape, bool)
    for value, target in ((1, 1.0), (2, 0.0)):
        points = grid[scribbles == value]
        d = np.sqrt(((grid[..., None, :] - points) ** 2).sum(-1)).min(-1) / pixel
        w = np.where(d <= cutoff, np.exp(-d / reach), 0.0)
        expected += w * target
        total += w
        near_cutoff |= np.abs(d - cutoff) < 1e-4  # where float rounding may fall either side
    expected /= total
    pulled = pulled_to_seeds(h, scribbles, spacing, reach, across)
    assert near_cutoff.mean() < 0.05
    np.testing.assert_allclose(pulled[~near_cutoff], expected[~near_cutoff], atol=1e-5)


def test_the_stroke_pull_writes_into_out_when_given_but_never_into_h():
    h = np.full((3, 20, 20), 0.4, np.float32)
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[1, 4, 3:6] = 1
    scribbles[2, 15, 12:16] = 2
    out = np.full(h.shape, 7.0, np.float32)  # its old values go
    assert pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0, out=out) is out
    np.testing.assert_array_equal(out, pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0))
    for bad in (h, h[:2], np.empty(h.shape, np.float64)):
        with pytest.raises(ScribbleSegError, match="out must be"):
            pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0, out=bad)


def test_a_strong_stroke_pull_claims_the_tissue_it_lies_in_but_not_across_its_edge(two_tissues):
    image, h = two_tissues
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 18:22, 6:9] = 1  # a heart stroke in the left tissue, which the network calls background
    spacing = (2.0, 1.0, 1.0)
    straight = pulled_to_seeds(h, scribbles, spacing, 8.0, weight=30.0)
    geodesic = pulled_to_seeds(h, scribbles, spacing, 8.0, weight=30.0, image=image, edges=3.0)
    # 3 pixels away in the same tissue: heart either way (the texture makes each step count about 4).
    assert geodesic[0, 20, 11] > 0.5 and straight[0, 20, 11] > 0.5
    assert straight[0, 20, 23] > 0.5  # a straight-line pull also claims the tissue across the edge, 15 pixels away
    assert geodesic[0, 20, 23] < 0.2  # the way across the edge is too long
    assert geodesic[0, 20, 11] > geodesic[0, 20, 14] > geodesic[0, 20, 23]
    weak = pulled_to_seeds(h, scribbles, spacing, 8.0, weight=1.0, image=image, edges=3.0)
    assert weak[0, 20, 7] == pytest.approx((0.1 + 1.0) / 2.0)  # weight 1: on the stroke as much as the network
    assert weak[0, 20, 11] < 0.5  # and it tips nothing the network is sure of


def test_the_pulls_way_without_edges_is_the_straight_line_distance():
    rng = np.random.default_rng(5)
    mask = np.zeros((30, 24), bool)
    mask[rng.integers(0, 30, 4), rng.integers(0, 24, 4)] = True
    mask[10:18, 4:12] = True  # a stroke painted over a region: the march starts at its outline
    for spacing in ((1.0, 1.0, 1.0), (1.0, 0.5, 1.0)):  # square pixels, and pixels twice as wide as high
        pixel = min(spacing[1:])
        flat = np.zeros(mask.shape + (3,), np.uint8)
        scale = (spacing[2] / pixel, spacing[1] / pixel)
        gradient = stroke_pull._section_gradient(flat, scale)
        speed = stroke_pull._edge_speed(gradient, 3.0, (slice(None), slice(None)))  # no gradient: speed 1
        way = stroke_pull._plane_geodesic(mask, speed, scale, cutoff=100.0)
        straight = stroke_pull.plane_distance(mask, spacing, pixel)
        # Fast marching is first order: within a pixel or so of the exact distance.
        assert np.abs(way - straight).max() < 1.5 and (way[mask] == 0).all()
    near = stroke_pull._plane_geodesic(mask, speed, scale, cutoff=3.0)
    assert np.isinf(near[straight > 5]).all() and np.isfinite(near[straight < 2.5]).all()


def test_the_pulls_way_on_a_section_does_not_depend_on_strokes_elsewhere(two_tissues):
    image, h = two_tissues
    image, h = np.concatenate([image, image[:, ::-1]]), np.concatenate([h, h])  # two sections
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 18:22, 6:9] = 1
    alone = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, 0.0, weight=30.0, image=image, edges=3.0)
    scribbles[1, 2:5, 30:38] = 2  # a stroke on the other section, far from the first: its edges are its own
    both = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, 0.0, weight=30.0, image=image, edges=3.0)
    np.testing.assert_array_equal(both[0], alone[0])
    assert both[0, 20, 11] > 0.5 and both[1, 3, 34] < h[1, 3, 34]


def test_the_stroke_pull_gives_each_section_the_same_in_threads(monkeypatch):
    rng = np.random.default_rng(5)
    h = rng.random((9, 20, 24)).astype(np.float32)
    image = rng.integers(0, 256, (9, 20, 24, 3)).astype(np.uint8)
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[2, 2:5, 2:9], scribbles[6, 10:12, 4:20], scribbles[6, 15:18, 3:6] = 1, 2, 1
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    pulled = {}
    for threads in (1, 4):
        monkeypatch.setattr(runtime, "MAX_SLAB_THREADS", threads)
        pulled[threads] = pulled_to_seeds(h, scribbles, (2.0, 1.0, 1.0), 3.0, 1.0, weight=5.0, image=image,
                                                   edges=3.0)
    assert not np.array_equal(pulled[1], h)
    np.testing.assert_allclose(pulled[4], pulled[1], rtol=1e-6)  # a section written to another's plane: far more


def test_image_measures_give_the_pull_what_it_computes_alone_and_compute_each_section_once(
        monkeypatch, two_stroked_sections):
    image, h, scribbles = two_stroked_sections
    alone = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, weight=30.0, image=image, edges=3.0)
    computed = []
    original = stroke_pull._section_gradient
    monkeypatch.setattr(stroke_pull, "_section_gradient", lambda *a: computed.append(1) or original(*a))
    measures = ImageMeasures()
    for _ in range(2):
        kept = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, weight=30.0, image=image, edges=3.0,
                                        measures=measures)
        np.testing.assert_array_equal(kept, alone)
    assert len(computed) == 2  # two stroked sections, each measured once over both calls
    other = image.copy()
    other[0, :, :20] //= 2  # another image: measured anew, with its own edges
    changed = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, weight=30.0, image=other, edges=3.0,
                                       measures=measures)
    assert len(computed) == 4 and not np.array_equal(changed[0], alone[0])
    small = ImageMeasures(max_bytes=image[0, ..., 0].size * 4)  # room for one section's gradient
    pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, weight=30.0, image=image, edges=3.0,
                             measures=small)
    assert len(small._gradients) == 1
    assert small.contrast(image, "rgb") == image_contrast(image, "rgb")


def test_the_ways_of_a_section_are_kept_for_its_strokes_and_made_anew_when_they_change(
        monkeypatch, two_stroked_sections):
    image, h, scribbles = two_stroked_sections
    marched = []
    original = stroke_pull._geodesic_planes
    monkeypatch.setattr(stroke_pull, "_geodesic_planes", lambda *a: marched.append(1) or original(*a))
    measures = ImageMeasures()

    def pulled(strokes, kept=None):
        return pulled_to_seeds(h, strokes, (1.0, 1.0, 1.0), 8.0, weight=30.0, image=image, edges=3.0,
                                        measures=kept)

    pulled(scribbles, measures)
    assert len(marched) == 2
    scribbles[1, 30:33, 6:9] = 1  # a new stroke on the second section: only its ways are made again
    again = pulled(scribbles, measures)
    assert len(marched) == 3 and len(measures._ways) == 2
    np.testing.assert_array_equal(again, pulled(scribbles))


def test_the_stroke_pull_checks_its_weight_and_needs_the_image_for_edges(two_tissues):
    image, h = two_tissues
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 5, 5] = 1
    with pytest.raises(ScribbleSegError, match="weight"):
        pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0, weight=0.0)
    with pytest.raises(ScribbleSegError, match="image"):
        pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0, edges=3.0)
    grey = image.mean(axis=-1).astype(np.uint8)  # a grey image has one channel: the same way through it
    assert pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0, image=grey, edges=3.0).shape == h.shape


def test_ways_measured_beforehand_are_the_ones_the_pull_asks_for(monkeypatch, two_stroked_sections):
    image, h, scribbles = two_stroked_sections
    measures = ImageMeasures()
    stroke_pull.measure_ways(image, scribbles, (1.0, 1.0, 1.0), 8.0, 3.0, measures)
    marched = []
    original = stroke_pull._geodesic_planes
    monkeypatch.setattr(stroke_pull, "_geodesic_planes", lambda *a: marched.append(1) or original(*a))
    kept = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, weight=30.0, image=image, edges=3.0,
                           measures=measures)
    assert marched == []  # both stroked sections' ways were there already
    np.testing.assert_array_equal(kept, pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 8.0, weight=30.0,
                                                        image=image, edges=3.0))
    assert len(marched) == 2  # without the measures, each section is marched


def test_image_measures_even_the_glass_once_per_image():
    from ScribbleSegLib.white_point import glass_white, white_glass

    white = np.full((2, 32, 32, 3), 252, np.uint8)
    white[:, 8:24, 8:24] = (180, 90, 170)
    grey = np.rint(white * np.float32(0.85)).astype(np.uint8)
    measures = ImageMeasures()
    assert measures.evened(white) is white  # white glass: nothing to even, no copy
    evened = measures.evened(grey)
    np.testing.assert_array_equal(evened, white_glass(grey, glass_white(grey)))
    assert measures.evened(grey) is evened  # computed once
    one_channel = grey[..., :1]
    assert measures.evened(one_channel) is one_channel  # another image, grey levels: as given
    assert measures.evened(grey) is not evened  # the grey image again after another: computed again
    np.testing.assert_array_equal(measures.evened(grey), evened)


def test_image_measures_cut_the_glass_as_it_is_when_a_copy_would_not_fit(monkeypatch, caplog):
    import logging

    from ScribbleSegLib import resources

    white = np.full((2, 32, 32, 3), 252, np.uint8)
    white[:, 8:24, 8:24] = (180, 90, 170)
    grey = np.rint(white * np.float32(0.85)).astype(np.uint8)
    monkeypatch.setattr(resources, "available_memory", lambda: 3 * grey.nbytes)  # a copy would take a third
    with caplog.at_level(logging.INFO, logger="ScribbleSegLib"):
        assert ImageMeasures().evened(grey) is grey
    assert any("would not fit" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(resources, "available_memory", lambda: 4 * grey.nbytes)
    assert ImageMeasures().evened(grey) is not grey
