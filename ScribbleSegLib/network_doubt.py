"""How far a run trusts the model's network against the strokes.

:func:`network_doubt` measures how much of the strokes the network labels the other way; where that doubt is large
the strokes may mark another target than the model's, and :func:`bank_left_out_share` says how much of ``h`` then
comes from an adaptation without the model's training pixels (``DDMLConfig.bank_doubt``), moved by the network's
agreement with the strokes' own adaptation (:func:`network_agreement`); :func:`doubted_network_weight` says how much
of the network's probability goes into the adaptation without the bank, by how much of the stack it calls target
(:func:`target_share`), and :func:`blend_network` blends it in; :func:`network_warnings` is the line such a run says.

:func:`ScribbleSegLib.pipeline.adapt_and_cut` uses them (and blends the two adaptations' ``h``);
:mod:`ScribbleSegLib.pipeline` re-exports the public functions, and this module does not import it.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from . import choices
from .errors import ScribbleSegError


def network_doubt(scribbles: np.ndarray, network_probability: np.ndarray) -> Tuple[float, float]:
    """How much of the strokes the network labels the other way: ``(heart, background)`` shares.

    The share of the heart-stroke voxels with a network probability below 1/2, and of the
    background-stroke voxels above it (0 for a class without strokes).  Only the stroked sections
    are read, so a re-run of a large stack does not pay for whole-volume arrays.

    Parameters
    ----------
    scribbles : numpy.ndarray
        uint8 ``(Z, Y, X)``: 0 none, 1 heart, 2 background.
    network_probability : numpy.ndarray
        float ``(Z, Y, X)``: the M-Unet's heart probability (a memmap is fine).

    Returns
    -------
    tuple of 2 float
        Each in [0, 1].

    Examples
    --------
    >>> s = np.zeros((2, 4, 4), np.uint8); s[1, 0, :] = 1; s[1, 3, :] = 2
    >>> p = np.zeros((2, 4, 4), np.float32); p[1, 0, :2] = 0.9
    >>> network_doubt(s, p)
    (0.5, 0.0)
    """
    n = scribbles.shape[0]
    sections = np.flatnonzero(scribbles.reshape(n, -1).any(axis=1))
    if sections.size == 0:
        return 0.0, 0.0
    stack = np.asarray(scribbles[sections])
    network = np.asarray(network_probability[sections])
    shares = []
    for code, wrong in ((1, network < 0.5), (2, network > 0.5)):
        drawn = stack == code
        total = int(np.count_nonzero(drawn))
        shares.append(np.count_nonzero(wrong & drawn) / total if total else 0.0)
    return float(shares[0]), float(shares[1])


def bank_left_out_share(doubt: float, config, agreement: Optional[float] = None) -> float:
    """How much of ``h`` comes from the adaptation without the model's training pixels (0 to 1).

    0 up to ``config.bank_doubt`` (None: always 0), 1 from ``config.bank_doubt_full`` on, in proportion
    between (:class:`~ScribbleSegLib.ddml.DDMLConfig`).  Given the ``agreement`` of the network with the strokes
    (:func:`network_agreement`), both limits move up by ``config.bank_agreement_shift`` times how far it lies from
    the first value of ``config.bank_agreement`` to the second (0 below, 1 above).

    Parameters
    ----------
    doubt : float
        The larger of the run's two :func:`network_doubt` shares.
    config : DDMLConfig
    agreement : float, optional
        None: the limits as they are.

    Examples
    --------
    >>> from ScribbleSegLib.ddml import DDMLConfig
    >>> [round(bank_left_out_share(d, DDMLConfig()), 2) for d in (0.3, 0.6, 0.9)]
    [0.0, 0.5, 1.0]
    >>> [round(bank_left_out_share(d, DDMLConfig(), agreement=0.5), 2) for d in (0.6, 0.8, 0.9)]
    [0.0, 0.5, 1.0]
    >>> [round(bank_left_out_share(0.8, DDMLConfig(), agreement=a), 2) for a in (0.1, 0.3, 0.5)]
    [1.0, 1.0, 0.5]
    """
    if config.bank_doubt is None or doubt <= config.bank_doubt:
        return 0.0
    start, end = config.bank_doubt, config.bank_doubt_full
    if agreement is not None and config.bank_agreement is not None:
        low, high = config.bank_agreement
        agrees = 1.0 if agreement >= high else 0.0 if agreement <= low else (agreement - low) / (high - low)
        start, end = start + agrees * config.bank_agreement_shift, end + agrees * config.bank_agreement_shift
    if doubt >= end:  # also a switch at one value (bank_doubt_full == bank_doubt)
        return 1.0
    return 0.0 if doubt <= start else float((doubt - start) / (end - start))


def _in_doubt_interval(doubt: float, config) -> bool:
    """Whether ``doubt`` lies where :func:`bank_left_out_share` may be strictly between 0 and 1."""
    shift = config.bank_agreement_shift if config.bank_agreement is not None else 0.0
    return config.bank_doubt is not None and config.bank_doubt < doubt < config.bank_doubt_full + shift


def network_agreement(h: np.ndarray, network_probability: np.ndarray, network_weight: float) -> float:
    """IoU of the network's labels with those of an adaptation to the strokes alone, over the whole stack.

    ``h`` is that adaptation's result with the network blended in at ``network_weight``
    (``h = (1 - w) head + w p``); the head's own labels are read back from it.  A model trained for
    what the strokes mark labels much of the image as the strokes' adaptation does, also where
    corrective strokes contradict it; one trained for another target does not, wherever the strokes lie
    (BENCHMARKS.md, "The bank left out by the network's agreement with the strokes").  1 where neither
    labels anything.

    Parameters
    ----------
    h : numpy.ndarray
        ``(Z, Y, X)`` float: the adaptation's ``h`` (before any other blend).
    network_probability : numpy.ndarray
        ``(Z, Y, X)`` float: the M-Unet's probability (a memmap is fine).
    network_weight : float
        In [0, 1): the weight ``h`` was blended with.

    Returns
    -------
    float

    Examples
    --------
    >>> p = np.array([[[0.9, 0.9, 0.1, 0.1]]], np.float32)
    >>> network_agreement(np.array([[[0.8, 0.2, 0.2, 0.1]]], np.float32), p, 0.0)
    0.5
    >>> network_agreement(0.75 * np.array([[[0.1, 0.1, 0.9, 0.9]]], np.float32) + 0.25 * p, p, 0.25)
    0.0
    """
    if not 0.0 <= network_weight < 1.0:
        raise ScribbleSegError(f"network_weight must be in [0, 1), got {network_weight!r}")
    both = either = 0
    w = np.float32(network_weight)
    for z in range(h.shape[0]):  # section by section: no full-size temporaries
        network = np.asarray(network_probability[z], np.float32)
        head = h[z] - w * network > np.float32(0.5) * (1 - w)  # (h - w p) / (1 - w) > 1/2
        network = network > 0.5
        both += int(np.count_nonzero(head & network))
        either += int(np.count_nonzero(head | network))
    return 1.0 if either == 0 else both / either


def target_share(h: np.ndarray) -> float:
    """The share of the stack's voxels that ``h`` calls target (``h > 1/2``), read section by section.

    Examples
    --------
    >>> target_share(np.array([[[0.9, 0.2, 0.6, 0.1]]], np.float32))
    0.5
    """
    count = sum(int(np.count_nonzero(h[z] > np.float32(0.5))) for z in range(h.shape[0]))
    return count / max(int(h.size), 1)


def doubted_network_weight(h: np.ndarray, config) -> float:
    """The network's weight in an adaptation without the bank whose own ``h`` (the network left out) is ``h``.

    Where the strokes contradict the network, its probability says little about their target but that it is
    rare: a network trained for another target calls nearly everything background.  That prior helps where the
    target is a small share of the image and holds a large one under 1/2, where the cut then decides whole regions
    on a narrow margin.  So the weight is ``DDMLConfig.doubted_network_weight`` (at most ``network_weight``) while
    ``h`` calls at most the first value of ``DDMLConfig.doubted_network_share`` of the stack target, none from the
    second on, and in proportion between (BENCHMARKS.md, "A third real target").  ``doubted_network_share`` None:
    always the full weight.

    Examples
    --------
    >>> from ScribbleSegLib.ddml import DDMLConfig
    >>> h = np.array([[[0.9, 0.2, 0.1, 0.1]]], np.float32)  # a quarter of the stack target
    >>> doubted_network_weight(h, DDMLConfig()), doubted_network_weight(h, DDMLConfig(doubted_network_share=None))
    (0.25, 0.25)
    >>> doubted_network_weight(np.full((1, 1, 4), 0.9, np.float32), DDMLConfig())  # all of it
    0.0
    >>> halfway = DDMLConfig(doubted_network_share=(0.3, 0.5))
    >>> round(doubted_network_weight(np.array([[[0.9] * 2 + [0.1] * 3]], np.float32), halfway), 3)  # 40 %
    0.125
    """
    weight = min(config.network_weight, config.doubted_network_weight)
    limits = config.doubted_network_share
    if limits is None or weight <= 0.0:
        return float(weight)
    low, high = limits
    share = target_share(h)
    if share <= low:
        return float(weight)
    if share >= high:
        return 0.0
    return float(weight * (high - share) / (high - low))


def blend_network(h: np.ndarray, network_probability: np.ndarray, weight: float) -> None:
    """``h = (1 - weight) h + weight p`` in place, section by section (no second full-size array).

    Examples
    --------
    >>> h = np.array([[[0.8, 0.2]]], np.float32)
    >>> blend_network(h, np.array([[[0.0, 0.0]]], np.float32), 0.25)
    >>> h.tolist()
    [[[0.6000000238418579, 0.15000000596046448]]]
    """
    if weight <= 0.0:
        return
    if np.shape(network_probability) != h.shape:
        raise ScribbleSegError(f"network_probability has shape {np.shape(network_probability)}, the volume {h.shape}")
    w = np.float32(weight)
    for z in range(h.shape[0]):
        h[z] *= 1 - w
        h[z] += w * np.asarray(network_probability[z], np.float32)


def network_warnings(doubt: Tuple[float, float], bank_left_out: float = 0.0,
                     own: Optional[Tuple[float, float]] = None) -> List[str]:
    """A one-line warning when the network labels most of the strokes of one class the other way.

    That is what strokes on a target that the model was not trained for look like (another organ
    than the model's heart, or an image far from anything it has seen): the adaptation then has to
    learn the target from the strokes.  Most of the background strokes called heart is also what a
    model trained for the target does where it over-segments an image: that line names both.
    :func:`ScribbleSegLib.pipeline.adapt_and_cut` logs it and adds it to the run's warnings.

    Parameters
    ----------
    doubt : tuple of 2 float
        :func:`network_doubt` of the run's strokes; a share over
        :data:`~ScribbleSegLib.choices.NETWORK_DOUBT` warns.
    bank_left_out : float
        How much of the run's ``h`` came from an adaptation without the model's training pixels
        (:func:`bank_left_out_share`); the line says so.
    own : tuple of 2 float, optional
        :func:`network_doubt` of this run's strokes where ``doubt`` was carried from an earlier run's
        (:mod:`~ScribbleSegLib.stroke_history`); the line then gives both shares.  None: ``doubt`` is its own.

    Returns
    -------
    list of str
        Empty, or one line naming the class and the share.

    Examples
    --------
    >>> network_warnings((1.0, 0.1))[0].startswith("the model's network calls 100% of the heart strokes background")
    True
    >>> network_warnings((0.2, 0.5))
    []
    >>> network_warnings((0.2, 0.8))[0].startswith("the model's network calls 80% of the background strokes heart")
    True
    >>> network_warnings((0.2, 0.8), own=(0.2, 0.6))[0].startswith(
    ...     "the model's network calls 60% of the background strokes heart (80% of those of an earlier run")
    True
    """
    left_out = ("" if not bank_left_out else
                " (its training pixels were left out of the adaptation, and its probability counts less)"
                if bank_left_out >= 1 else
                f" (its training pixels were left out of {bank_left_out:.0%} of the adaptation, and its probability "
                "counts less there)")
    own = doubt if own is None else own

    def carried(k: int) -> str:
        """The earlier run's share of class ``k`` where the doubt was carried from it."""
        return f" ({doubt[k]:.0%} of those of an earlier run that these strokes add to)" if doubt[k] > own[k] else ""

    if doubt[0] > choices.NETWORK_DOUBT:
        return [f"the model's network calls {own[0]:.0%} of the heart strokes background{carried(0)}: it was likely "
                f"not trained for what they mark{left_out}, and away from the strokes the result may be poor; "
                "train a model on stacks where it is traced"]
    if doubt[1] > choices.NETWORK_DOUBT:
        # Also what a model trained for this target does where it over-segments an image unlike its training
        # (BENCHMARKS.md, "Colon glands"): the line names both readings.
        return [f"the model's network calls {own[1]:.0%} of the background strokes heart{carried(1)}: it finds the "
                f"target far beyond the strokes, as a model trained for another target or on other images does"
                f"{left_out}; check the result away from the strokes"]
    return []
