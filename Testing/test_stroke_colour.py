"""The classifier of each pixel's own colour that runs leaving the model's bank out blend into h (stroke_colour)."""

import types

import numpy as np
import pytest

from ScribbleSegLib import ddml, pipeline, stroke_colour
from ScribbleSegLib.errors import ScribbleSegError


def nuclei_tile(seed=0, size=64):
    """Dark purple discs on pink stroma with noise: ``(image (1, Y, X, 3) uint8, truth (1, Y, X) bool)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), bool)
    for _ in range(12):
        cy, cx = rng.uniform(6, size - 6, 2)
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(3, 5) ** 2
    image = np.where(truth[..., None], (95, 60, 150), (225, 160, 200)) + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)[None], truth[None]


def strokes_on(truth):
    """A few strokes: a short one inside each of two discs, a line through the stroma."""
    s = np.zeros(truth.shape, np.uint8)
    inside = np.argwhere(truth[0])
    for y, x in inside[[0, len(inside) // 2]]:
        s[0, y, max(0, x - 1):x + 2] = truth[0, y, max(0, x - 1):x + 2]
    for y in range(truth.shape[1]):
        if not truth[0, y].any():
            s[0, y, :] = 2
            break
    return s


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_the_colour_of_a_few_strokes_finds_the_others_of_that_colour():
    image, truth = nuclei_tile()
    model = stroke_colour.fit(image, strokes_on(truth))
    h = np.full(truth.shape, 0.5, np.float32)
    stroke_colour.blend_into(h, image, model, 1.0)
    assert iou(h > 0.5, truth) > 0.8
    # The weight blends: at 0.5 an h that is sure stays on its side, and 0 leaves h as it is.
    h = np.where(truth, 0.99, 0.01).astype(np.float32)
    stroke_colour.blend_into(h, image, model, 0.5)
    assert iou(h > 0.5, truth) > 0.8
    before = h.copy()
    stroke_colour.blend_into(h, image, model, 0.0)
    np.testing.assert_array_equal(h, before)


def test_the_classes_weigh_alike_however_many_pixels_their_strokes_cover():
    # Colours that overlap (8 apart, noise 30, about 4 after the blur): where the threshold falls depends on how
    # the classes weigh.  Equal strokes and strokes with 20 times the background pixels put it in one place
    # (weighed by their pixels, the heavy strokes would call a quarter of the image the target).
    rng = np.random.default_rng(3)
    truth = np.zeros((1, 40, 200), bool)
    truth[0, :, :100] = True
    base = np.array((140, 110, 175))
    image = np.where(truth[..., None], base - 4, base + 4) + rng.normal(0, 30, truth.shape + (3,))
    image = np.clip(image, 0, 255).astype(np.uint8)
    even = np.zeros(truth.shape, np.uint8)
    even[0, 20, 10:60], even[0, 20, 140:190] = 1, 2
    heavy = even.copy()
    heavy[0, ::2, 110:200] = 2  # 20 times the background pixels
    shares = []
    for strokes in (even, heavy):
        h = np.full(truth.shape, 0.5, np.float32)
        stroke_colour.blend_into(h, image, stroke_colour.fit(image, strokes), 1.0)
        shares.append((h > 0.5).mean())
    assert abs(shares[0] - 0.5) < 0.1 and abs(shares[1] - shares[0]) < 0.05


def test_strokes_of_one_class_or_none_fit_nothing_and_a_grey_image_stays_finite():
    image, truth = nuclei_tile()
    s = strokes_on(truth)
    assert stroke_colour.fit(image, np.where(s == 1, 1, 0).astype(np.uint8)) is None
    assert stroke_colour.fit(image, np.zeros_like(s)) is None
    grey = np.full_like(image, 128)
    h = np.full(truth.shape, 0.3, np.float32)
    stroke_colour.blend_into(h, grey, stroke_colour.fit(grey, s), 0.5)
    assert np.isfinite(h).all() and 0 <= h.min() and h.max() <= 1


def test_a_run_that_leaves_the_bank_out_blends_the_colour_of_its_strokes_into_h(monkeypatch):
    # Features that say nothing, a network that calls every stroked disc background: the strokes' colour is
    # what finds the other discs.  A run that keeps the bank (strokes the network agrees with) does not blend.
    image, truth = nuclei_tile(seed=2)
    s = strokes_on(truth)
    features = np.random.default_rng(0).normal(0, 1, truth.shape + (4,)).astype(np.float32)
    model = types.SimpleNamespace(bank_features=None, bank_labels=None, device=None)
    config = ddml.DDMLConfig(steps=20, head_steps=20, evaluation="exact")
    against = np.full(truth.shape, 0.05, np.float32)
    blended = pipeline.adapt_and_cut(image, (1, 1, 1), s, model, against, features, method="ddml",
                                     ddml_config=config, suggest=0)
    assert "stroke colour" in blended.timings
    plain = pipeline.adapt_and_cut(image, (1, 1, 1), s, model, against, features, method="ddml",
                                   ddml_config=ddml.DDMLConfig(steps=20, head_steps=20, evaluation="exact",
                                                               doubted_colour_weight=0.0), suggest=0)
    assert iou(blended.labels > 0, truth) > iou(plain.labels > 0, truth) + 0.2
    agreeing = np.where(truth, 0.9, 0.1).astype(np.float32)
    kept = pipeline.adapt_and_cut(image, (1, 1, 1), s, model, agreeing, features, method="ddml",
                                  ddml_config=config, suggest=0)
    assert "stroke colour" not in kept.timings
    with pytest.raises(ScribbleSegError, match="doubted_colour_weight"):
        ddml.DDMLConfig(doubted_colour_weight=-0.1)
