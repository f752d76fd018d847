"""padding.py: black registration fill is shown to the network as glass."""

import numpy as np

from ScribbleSegLib import phantom, pipeline
from ScribbleSegLib.inference import predict_volume
from ScribbleSegLib.padding import padding_to_glass


def _with_fill(image, value):
    """The sections shifted as a registration moves them, the uncovered edges filled with ``value``."""
    filled = image.copy()
    for z in range(len(filled)):
        dy, dx = 3 + 4 * (z % 3), 2 + 5 * (z % 2)
        filled[z, :dy] = value
        filled[z, :, -dx:] = value
    return filled


def test_only_dark_regions_that_touch_the_edge_become_glass():
    section = np.full((1, 20, 30, 3), 170, np.uint8)
    section[0, :, :4] = (3, 0, 8)              # fill along the left edge, near-black as compressed files have it
    section[0, 19, 10:20] = 0                  # fill along the bottom edge
    section[0, 8:11, 14:17] = 0                # ink inside the tissue: kept
    section[0, 5, 25] = (40, 40, 40)           # dark, but not near-black: kept
    before = section.copy()
    glass = padding_to_glass(section)
    np.testing.assert_array_equal(section, before)  # the input is not changed
    assert (glass[0, :, :4] == 255).all() and (glass[0, 19, 10:20] == 255).all()
    np.testing.assert_array_equal(glass[0, 8:11, 14:17], before[0, 8:11, 14:17])
    np.testing.assert_array_equal(glass[0, 5, 25], before[0, 5, 25])
    changed = (glass != before).any(-1)
    assert changed.sum() == 20 * 4 + 10
    # Nothing to do: the same array, not a copy; a wholly black (lost) section becomes glass.
    assert padding_to_glass(glass) is glass
    lost = np.zeros((2, 8, 8, 3), np.uint8)
    lost[1] = 200
    out = padding_to_glass(lost)
    assert (out[0] == 255).all() and (out[1] == 200).all()


def test_the_network_sees_black_fill_as_it_sees_white_glass():
    made = phantom.make_phantom(seed=4, config=phantom.PhantomConfig(shape=(4, 64, 64)))
    model = pipeline.as_model("starter", "cpu")
    black = predict_volume(model, _with_fill(made.image.array, 0), device="cpu")
    white = predict_volume(model, _with_fill(made.image.array, 255), device="cpu")
    np.testing.assert_array_equal(black[0], white[0])
    np.testing.assert_array_equal(black[1], white[1])
