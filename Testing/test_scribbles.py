"""The scribble simulator: strokes inside their classes, on the chosen sections, on any heart shape."""

import numpy as np
import pytest

from ScribbleSegLib import phantom, scribbles
from ScribbleSegLib.errors import ScribbleSegError


def _ellipsoid_label(shape=(30, 64, 64), semi=(10, 18, 14)) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = [s / 2 for s in shape]
    inside = ((z - c[0]) / semi[0]) ** 2 + ((y - c[1]) / semi[1]) ** 2 + ((x - c[2]) / semi[2]) ** 2 < 1
    return inside.astype(np.uint8)


@pytest.fixture(scope="module")
def label() -> np.ndarray:
    return _ellipsoid_label()


@pytest.fixture(scope="module")
def phantom_label() -> np.ndarray:
    return phantom.make_phantom(seed=1, config=phantom.PhantomConfig(shape=(24, 80, 80))).label


def _sections(s: np.ndarray) -> list:
    return list(np.flatnonzero(s.reshape(len(s), -1).any(axis=1)))


def _check_inside_and_both(label: np.ndarray, s: np.ndarray) -> None:
    assert s.dtype == np.uint8 and s.shape == label.shape
    assert set(np.unique(s)) <= {0, 1, 2}
    assert np.all(label[s == scribbles.HEART] > 0)
    assert np.all(label[s == scribbles.BACKGROUND] == 0)
    for k in _sections(s):
        assert (s[k] == scribbles.HEART).any() and (s[k] == scribbles.BACKGROUND).any()


def test_strokes_lie_inside_their_classes(label, phantom_label):
    for lab in (label, phantom_label):
        for seed in range(3):
            _check_inside_and_both(lab, scribbles.simulate_scribbles(lab, seed=seed, every=4))


def test_every_kth_heart_section(label):
    heart = np.flatnonzero(label.reshape(len(label), -1).any(axis=1))
    s = scribbles.simulate_scribbles(label, seed=2, every=5)
    chosen = _sections(s)
    assert chosen == list(scribbles.scribbled_sections(label, seed=2, every=5))
    offset = list(heart).index(chosen[0])
    assert offset < 5
    assert chosen == list(heart[offset::5])


def test_n_sections_evenly_spread(label):
    heart = np.flatnonzero(label.reshape(len(label), -1).any(axis=1))
    for n in range(1, 7):
        chosen = _sections(scribbles.simulate_scribbles(label, seed=n, n_sections=n))
        assert len(chosen) == n
        gaps = np.diff([list(heart).index(k) for k in chosen])
        assert np.all(gaps >= len(heart) // n - 1) and np.all(gaps <= len(heart) // n + 1)


def test_more_sections_than_the_heart_has():
    label = _ellipsoid_label(semi=(2, 18, 14))
    assert len(_sections(scribbles.simulate_scribbles(label, n_sections=10))) == 3


def test_patterns_differ_by_seed_and_repeat_by_seed(label):
    a = scribbles.simulate_scribbles(label, seed=0, every=3)
    b = scribbles.simulate_scribbles(label, seed=1, every=3)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, scribbles.simulate_scribbles(label, seed=0, every=3))
    # Seeds of 2^32 and more are patterns of their own, not those of the seed's low 32 bits.
    big = scribbles.simulate_scribbles(label, seed=2 ** 32, every=3)
    assert not np.array_equal(a, big)
    assert np.array_equal(big, scribbles.simulate_scribbles(label, seed=2 ** 32, every=3))
    with pytest.raises(ScribbleSegError, match="seed must be an integer"):
        scribbles.scribbled_sections(label, seed=-1)


def test_stroke_counts_and_width(label):
    s = scribbles.simulate_scribbles(label, seed=0, n_sections=1, strokes=(1, 1), width=1)
    k = _sections(s)[0]
    wide = scribbles.simulate_scribbles(label, seed=0, n_sections=1, strokes=(1, 1), width=5)
    assert (wide[k] == 1).sum() > 2 * (s[k] == 1).sum()
    many = scribbles.simulate_scribbles(label, seed=0, n_sections=1, strokes=(5, 5), width=1)
    assert (many[k] > 0).sum() > (s[k] > 0).sum()


def test_tiny_and_thin_hearts_still_get_both_classes():
    label = np.zeros((6, 40, 40), np.uint8)
    label[1, 20, 20] = 1  # a single voxel
    label[3, 10:30, 15] = 1  # a one-pixel line: erosion leaves nothing
    label[4, 5:35, 5:35] = 1  # a square
    label[4, 12:20, 12:20] = 0  # with a hole
    s = scribbles.simulate_scribbles(label, seed=0, every=1)
    assert _sections(s) == [1, 3, 4]
    _check_inside_and_both(label, s)
    assert s[1, 20, 20] == scribbles.HEART


def test_heart_filling_a_whole_section():
    label = np.zeros((3, 20, 20), np.uint8)
    label[1] = 1
    s = scribbles.simulate_scribbles(label, every=1)
    assert (s[1] == scribbles.HEART).any() and not (s == scribbles.BACKGROUND).any()


def test_anisotropic_pixels_and_tissue_mask(label):
    tissue = np.zeros(label.shape, bool)
    tissue[:, 8:56, 8:56] = True
    s = scribbles.simulate_scribbles(label, seed=0, every=4, spacing=(0.01, 0.02, 0.04), tissue=tissue)
    _check_inside_and_both(label, s)


@pytest.mark.parametrize("kwargs", [{"every": 0}, {"n_sections": 0}, {"strokes": (3, 2)}, {"strokes": 5},
                                    {"width": 0}, {"width": float("inf")}, {"width": 1e6}, {"seed": -1},
                                    {"spacing": (0.1, -1, 1)}, {"spacing": (1, float("inf"), 1)},
                                    {"tissue": np.ones((2, 2, 2), bool)}])
def test_bad_arguments_are_one_line_errors(label, kwargs):
    with pytest.raises(ScribbleSegError) as err:
        scribbles.simulate_scribbles(label, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"sections": -1}, "sections must be a non-negative integer"),  # once: every section but one
    ({"strokes": 1.5}, "strokes must be a non-negative integer"),
    ({"previous": "float"}, "previous has dtype float64"),  # once: every old stroke lost
    ({"previous": "minus one"}, "previous must hold 0 (none), 1 (heart) and 2"),
    ({"width": -3}, "width must be a positive number of pixels"),
    ({"spacing": (0, 1, 1)}, "spacing must be three positive numbers"),
])
def test_corrective_strokes_refuse_what_would_make_wrong_strokes(label, kwargs, words):
    previous = scribbles.simulate_scribbles(label, seed=0, every=4)
    if kwargs.get("previous") == "float":
        kwargs["previous"] = previous * 1.0
    elif kwargs.get("previous") == "minus one":
        kwargs["previous"] = previous.astype(np.int16) - 1
    arguments = {"previous": previous, **kwargs}
    with pytest.raises(ScribbleSegError) as err:
        scribbles.corrective_scribbles(label, np.zeros_like(label), **arguments)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_empty_label_is_an_error():
    with pytest.raises(ScribbleSegError, match="no heart"):
        scribbles.simulate_scribbles(np.zeros((4, 8, 8), np.uint8))


def test_every_must_be_a_whole_number_of_sections():
    label = np.zeros((6, 20, 20), np.uint8)
    label[:, 5:15, 5:15] = 1
    with pytest.raises(ScribbleSegError, match=r"every must be a whole number of at least 1, got 1\.5"):
        scribbles.simulate_scribbles(label, every=1.5)
