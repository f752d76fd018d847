"""The glass of a scan that is grey rather than white, made white before the network sees it.

Stain normalization (Beer–Lambert) measures optical density against white light, 255.  A scan
whose glass came out at 230 (exposure, an older scanner, a lamp) adds the same density to every
pixel; the stain fit takes it for stain, and on the bench's phantoms the network lost up to 0.08 IoU
at glass 242 and up to 0.26 at 230 (BENCHMARKS.md, "Grey glass").  :func:`glass_white` finds the glass's
colour from the brightest pixels of a stack, and :func:`to_white` scales each channel so that it
becomes white.  Only a bright, near-neutral colour that a sizeable share of the pixels hold counts
as glass: a tile covered with tissue, whose brightest pixels are pale pink, is left as it is.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .cut_scaling import LUMA
from .stain import spread

#: Glass at or above this in every channel is white already: nothing is changed.
WHITE = 248
#: Darker than this in any channel is not glass, however many pixels hold it.
GLASS_MIN = 150
#: Glass is near-neutral: its channels differ by at most this.
GLASS_TINT = 8
#: At least this share of the sampled pixels lie within :data:`GLASS_SPREAD` of the glass's colour.
GLASS_SHARE = 0.05
GLASS_SPREAD = 8
#: The glass's colour is the median of this brightest share of the sampled pixels.
BRIGHTEST = 0.02


def glass_white(volume: np.ndarray, sections: int = 16, stride: int = 4) -> Optional[np.ndarray]:
    """The colour of the glass of ``volume`` ``(Z, Y, X, 3)`` uint8 where it is not white, or None.

    Read from strided copies of up to ``sections`` sections spread over the stack.  None when the
    glass is white already (:data:`WHITE`) or when no colour of the brightest pixels looks like
    glass (bright, near-neutral and held by a sizeable share of the pixels).

    Examples
    --------
    >>> stack = np.full((2, 40, 40, 3), 230, np.uint8)   # grey glass
    >>> stack[:, 10:30, 10:30] = (180, 90, 170)          # tissue
    >>> glass_white(stack).tolist()
    [230.0, 230.0, 230.0]
    >>> glass_white(np.full((1, 8, 8, 3), 253, np.uint8)) is None
    True
    """
    pixels = np.concatenate([volume[z, ::stride, ::stride].reshape(-1, 3)
                             for z in spread(sections, len(volume))]).astype(np.float32)
    if not len(pixels):
        return None
    luma = pixels @ LUMA
    white = np.median(pixels[luma >= np.quantile(luma, 1.0 - BRIGHTEST)], axis=0)
    if white.min() >= WHITE or white.min() < GLASS_MIN or white.max() - white.min() > GLASS_TINT:
        return None
    near = np.abs(pixels - white).max(axis=1) <= GLASS_SPREAD
    return white if near.mean() >= GLASS_SHARE else None


def to_white(sections: np.ndarray, white: Optional[np.ndarray]) -> np.ndarray:
    """``sections`` with each channel scaled so that ``white`` becomes 255 (a copy); themselves if None.

    Examples
    --------
    >>> to_white(np.array([[[[230, 115, 0]]]], np.uint8), np.array([230.0, 230.0, 230.0])).tolist()
    [[[[255, 128, 0]]]]
    """
    if white is None:
        return sections
    gain = (255.0 / np.asarray(white, np.float32)).astype(np.float32)
    out = np.empty_like(sections)
    for z in range(len(sections)):  # a section at a time: no float copy of the whole slab
        np.clip(np.rint(sections[z] * gain), 0, 255, out=out[z], casting="unsafe")
    return out
