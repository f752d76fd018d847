"""The glass of a scan that is grey rather than white, made white before the network sees it.

Stain normalization (Beer–Lambert) measures optical density against white light, 255.  A scan
whose glass came out at 230 (exposure, an older scanner, a lamp) adds the same density to every
pixel; the stain fit takes it for stain, and on the bench's phantoms the network lost up to 0.08 IoU
at glass 242 and up to 0.26 at 230 (BENCHMARKS.md, "Grey glass").  :func:`glass_white` finds the glass's
colour from the brightest pixels of a stack, and :func:`white_glass` scales each channel so that it
becomes white.  Only a bright colour that a sizeable share of the pixels hold counts as glass, and
only if it is near-neutral or cast in a hue that no H&E tissue has (yellow, blue, green: the lamp's
or the camera's): a tile covered with tissue, whose brightest pixels are pale pink, is left as it is.

A microscope camera also lights the field unevenly (vignetting: corners 20-30 % darker than the
centre), and the exposure can change from section to section.  :func:`glass_field` therefore fits
each section's glass as a smooth field (a quadratic in log intensity, per channel) to the flat,
bright blocks of the section, and :func:`white_glass` divides it out; a section with too little
glass of its own takes the stack's colour from :func:`glass_white`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .cut_scaling import LUMA
from .stain_volume import spread

#: Glass at or above this in every channel is white already: nothing is changed.
WHITE = 248
#: Darker than this in any channel is not glass, however many pixels hold it.
GLASS_MIN = 150
#: Glass is near-neutral: its channels differ by at most this where green is its darkest channel, as in
#: pale H&E tissue (eosin and haematoxylin both absorb green most), so that pale pink is never glass...
GLASS_TINT = 8
#: ... and by at most this where another channel is darkest: a cast of the light (a yellow halogen lamp,
#: a blue LED, a camera's white balance), which no H&E tissue shows.
GLASS_CAST = 40
#: At least this share of the sampled pixels lie within :data:`GLASS_SPREAD` of the glass's colour.
GLASS_SHARE = 0.05
GLASS_SPREAD = 8
#: The glass's colour is the median of this brightest share of the sampled pixels.
BRIGHTEST = 0.02
#: A field at or above this everywhere is white enough (at most a 4 % gain): nothing is changed.  It
#: lies below :data:`WHITE` because a field is the glass's mean, not its brightest pixels.
FIELD_WHITE = 245
#: Blocks of a section, in sampled pixels, whose glass :func:`glass_field` fits; the sampling keeps
#: about :data:`FIELD_SAMPLES` pixels along a section's longer side.
FIELD_BLOCK = 8
FIELD_SAMPLES = 128
#: A block is glass where this share of its pixels lie within :data:`GLASS_SPREAD` of its brightest quarter.
FIELD_FLAT = 0.25
#: Fewest glass blocks, and least share of the section's blocks, that a field is fitted to.
FIELD_MIN_BLOCKS = 12
FIELD_MIN_SHARE = 0.1
#: Blocks darker than the fitted field by more than this (log intensity) are dropped as tissue.
FIELD_BELOW = 0.02
#: The field goes at most this factor below the darkest glass block (the fit does not run away).
FIELD_REACH = 0.9
#: Glass blocks each quadrant of a section must hold for a quadratic field; else the field is one colour.
FIELD_QUADRANT_BLOCKS = 2
#: Points along each side at which a field is first looked at, before it is computed at every pixel.
FIELD_COARSE = 33


def glass_white(volume: np.ndarray, sections: int = 16, stride: int = 4) -> Optional[np.ndarray]:
    """The colour of the glass of ``volume`` ``(Z, Y, X, 3)`` uint8 where it is not white, or None.

    Read from strided copies of up to ``sections`` sections spread over the stack.  None when the
    glass is white already (:data:`WHITE`) or when no colour of the brightest pixels looks like
    glass (bright, near-neutral or cast in a hue unlike tissue, and held by a sizeable share of the pixels).

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
    white = _brightest(pixels)
    if white.min() >= WHITE or not _glass_colour(white):
        return None
    near = np.abs(pixels - white).max(axis=1) <= GLASS_SPREAD
    return white if near.mean() >= GLASS_SHARE else None


def _brightest(pixels: np.ndarray) -> np.ndarray:
    """The median colour of the :data:`BRIGHTEST` share of ``pixels`` ``(N, 3)`` by luma."""
    luma = pixels @ LUMA
    return np.median(pixels[luma >= np.quantile(luma, 1.0 - BRIGHTEST)], axis=0)


def _glass_colour(rgb: np.ndarray) -> np.ndarray:
    """Whether colours ``(..., 3)`` may be glass: bright (:data:`GLASS_MIN`) and near-neutral, or cast in a
    hue that no H&E tissue has (:data:`GLASS_TINT`, :data:`GLASS_CAST`)."""
    tint = rgb.max(axis=-1) - rgb.min(axis=-1)
    green_darkest = (rgb[..., 1] <= rgb[..., 0]) & (rgb[..., 1] <= rgb[..., 2])
    return (rgb.min(axis=-1) >= GLASS_MIN) & (tint <= np.where(green_darkest, GLASS_TINT, GLASS_CAST))


def glass_field(section: np.ndarray) -> Optional[np.ndarray]:
    """The colour of the glass at every pixel of ``section`` ``(Y, X, 3)`` uint8, or None.

    The section is sampled to about :data:`FIELD_SAMPLES` pixels along its longer side and cut into
    blocks of :data:`FIELD_BLOCK` sampled pixels.  A block is glass when its brightest quarter is
    bright and near-neutral or cast (as in :func:`glass_white`) and flat: at least :data:`FIELD_FLAT` of its
    pixels lie near that colour, as glass does and tissue seldom does.  The log of the glass blocks'
    colours is fitted, per channel, with a quadratic in the section's coordinates (a constant unless
    every quadrant of the section holds :data:`FIELD_QUADRANT_BLOCKS` glass blocks); blocks that fall
    more than :data:`FIELD_BELOW` below the fit are dropped as tissue and the fit is repeated, so the
    field follows the upper envelope.  The field stays at most 255 and goes at most :data:`FIELD_REACH`
    below the darkest glass block: where the fit runs away from the glass it saw, it does not
    darken nor brighten anything much.

    Returns
    -------
    numpy.ndarray or None
        float32 ``(Y, X, 3)``; None when the glass is white everywhere (:data:`FIELD_WHITE`) or when the
        section has too few glass blocks (:data:`FIELD_MIN_BLOCKS`, :data:`FIELD_MIN_SHARE`).

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> light = 1.0 - 0.25 * ((yy - 32) ** 2 + (xx - 32) ** 2) / 2048   # vignetting
    >>> section = np.rint(250 * light[..., None].repeat(3, axis=2)).astype(np.uint8)
    >>> section[20:44, 20:44] = (170, 80, 160)                          # tissue
    >>> field = glass_field(section)
    >>> round(float(field[0, 0, 0])), round(float(field[32, 32, 0]))   # the scan: 188 and 250
    (200, 255)
    >>> glass_field(np.full((64, 64, 3), 253, np.uint8)) is None
    True
    """
    y, x = section.shape[:2]
    stride = max(1, max(y, x) // FIELD_SAMPLES)
    sampled = section[::stride, ::stride]
    by, bx = sampled.shape[0] // FIELD_BLOCK, sampled.shape[1] // FIELD_BLOCK
    if by * bx < FIELD_MIN_BLOCKS:
        return None
    blocks = (sampled[:by * FIELD_BLOCK, :bx * FIELD_BLOCK].astype(np.float32)
              .reshape(by, FIELD_BLOCK, bx, FIELD_BLOCK, 3).transpose(0, 2, 1, 3, 4).reshape(by * bx, -1, 3))
    order = np.argsort(blocks @ LUMA, axis=1)[:, -blocks.shape[1] // 4:]
    top = np.median(np.take_along_axis(blocks, order[..., None], axis=1), axis=1)
    near = np.abs(blocks - top[:, None]).max(axis=2) <= GLASS_SPREAD
    flat = near.mean(axis=1)
    # The mean of the pixels near the brightest quarter: a block's glass, not its brightest glass.
    bright = (blocks * near[..., None]).sum(axis=1) / np.maximum(near.sum(axis=1), 1)[:, None]
    glass = (flat >= FIELD_FLAT) & _glass_colour(bright)
    # Block centres in section coordinates scaled to [-1, 1].
    cy = ((np.arange(by) + 0.5) * FIELD_BLOCK * stride) / y * 2 - 1
    cx = ((np.arange(bx) + 0.5) * FIELD_BLOCK * stride) / x * 2 - 1
    terms = np.stack(np.broadcast_arrays(*_quadratic(cy[:, None], cx[None, :])), axis=-1).reshape(-1, 6)
    target = np.log(np.maximum(bright, 1.0) / 255.0)
    quadrant = (terms[:, 2] > 0) * 2 + (terms[:, 1] > 0)
    for _ in range(3):
        if glass.sum() < max(FIELD_MIN_BLOCKS, FIELD_MIN_SHARE * by * bx):
            return None
        # A quadratic only where the glass surrounds the section (every quadrant holds some): fitted to
        # glass on one side, it would run off over the tissue on the other.  Else one colour.
        used = 6 if np.bincount(quadrant[glass], minlength=4).min() >= FIELD_QUADRANT_BLOCKS else 1
        coef = np.zeros((6, 3))
        coef[:used] = np.linalg.lstsq(terms[glass][:, :used], target[glass], rcond=None)[0]
        glass &= (target - terms @ coef).mean(axis=1) >= -FIELD_BELOW
    # A corner lies half a block beyond the outermost block centres: a little below the darkest block.
    low = FIELD_REACH * bright[glass].min(axis=0)
    # The fit follows the glass's mean (its shape); it is raised so that the brightest 2 % of the glass,
    # evened by it, become 255 as in glass_white: a scan that is only darker then gives the original back.
    level = _brightest((blocks[glass] / np.exp(terms[glass] @ coef)[:, None, :]).reshape(-1, 3))

    def field_at(rows: int, cols: int) -> np.ndarray:
        v = ((np.arange(rows, dtype=np.float32) + 0.5) / rows * 2 - 1)[:, None, None]
        u = ((np.arange(cols, dtype=np.float32) + 0.5) / cols * 2 - 1)[None, :, None]
        # Term by term, broadcast: no (Y, X, 6) array of the terms at full resolution.
        log = sum(t * c for t, c in zip(_quadratic(v, u), coef.astype(np.float32)))
        return np.clip(np.exp(log) * level.astype(np.float32), low, 255.0).astype(np.float32)

    # A coarse look first (a quadratic has no detail finer than this): most sections stop here.
    if field_at(min(y, FIELD_COARSE), min(x, FIELD_COARSE)).min() >= FIELD_WHITE:
        return None
    field = field_at(y, x)
    return None if field.min() >= FIELD_WHITE else field


def _quadratic(v: np.ndarray, u: np.ndarray) -> tuple:
    """The terms ``1, u, v, u^2, uv, v^2`` of a quadratic in ``(v, u)``, each broadcast as numpy does."""
    return 1.0, u, v, u * u, u * v, v * v


#: Sections :func:`glass_is_white` looks at, spread over the stack.
CHECK_SECTIONS = 16


def glass_is_white(volume: np.ndarray, stack_white: Optional[np.ndarray] = None,
                   sections: int = CHECK_SECTIONS) -> bool:
    """Whether :func:`white_glass` would leave ``volume`` ``(Z, Y, X, 3)`` uint8 as it is, judged on up to
    ``sections`` sections spread over the stack: no stack colour (``stack_white``, from :func:`glass_white`)
    and no glass field in any of them.  A check for a stack that is read again and again (a re-run's cut):
    a field in none of the sections looked at is taken for a field in none.

    Examples
    --------
    >>> stack = np.full((4, 64, 64, 3), 252, np.uint8)
    >>> stack[:, 20:44, 20:44] = (170, 80, 160)
    >>> glass_is_white(stack), glass_is_white((stack * 0.9).astype(np.uint8))
    (True, False)
    """
    return stack_white is None and all(glass_field(volume[z]) is None for z in spread(sections, len(volume)))


def white_glass(sections: np.ndarray, stack_white: Optional[np.ndarray] = None) -> np.ndarray:
    """``sections`` ``(Z, Y, X, 3)`` uint8 with each one's glass made white (:func:`glass_field`).

    A section without a field of its own is scaled by ``stack_white`` (the stack's glass colour
    from :func:`glass_white`), or left as it is when that is None.  Run it before
    :func:`padding.padding_to_glass`: black registration fill is never taken for glass, but once made
    white it would pass for white glass beside the vignetted glass and hold the field up.

    Returns
    -------
    numpy.ndarray
        ``sections`` itself when no section changes (nothing is copied), else a copy.

    Examples
    --------
    >>> grey = np.full((1, 64, 64, 3), 230, np.uint8)
    >>> grey[0, 20:44, 20:44] = (170, 80, 160)
    >>> out = white_glass(grey)
    >>> out[0, 0, 0].tolist(), out[0, 32, 32].tolist()
    ([255, 255, 255], [188, 89, 177])
    >>> white = np.full((1, 64, 64, 3), 253, np.uint8)
    >>> white_glass(white) is white
    True
    """
    out = sections
    for z in range(len(sections)):
        field = glass_field(sections[z])
        if field is None and stack_white is None:
            continue
        if out is sections:
            out = sections.copy()
        gain = 255.0 / (field if field is not None else np.asarray(stack_white, np.float32))
        np.clip(np.rint(sections[z] * gain), 0, 255, out=out[z], casting="unsafe")
    return out
