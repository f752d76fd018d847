"""Where to scribble next: sections ranked by the error a run probably made there.

After a run the user should look where the result is most likely wrong.  Three
signs point there, all computed without the truth:

- **unsure**: voxels whose adapted probability ``h`` is close to 0.5 (``1 - |2h - 1|``,
  summed over the section);
- **changed a lot**: voxels where the final labels disagree with the network alone
  (M-Unet probability > 0.5) -- the scribbles or the cut overruled it there, and
  the neighbouring voxels may need the same;
- **far from any stroke**: sections many sections away from the nearest scribbled
  one, where nothing the user drew constrains the result directly.

The score of a section is ``(unsure + changed) * (1 + distance / spread)``: the
voxel counts say how much may be wrong, the distance how little the user's strokes
hold it.  Sections that hold no heart in the result, in ``h`` or in the network
are left out (nothing to look at there).

Examples
--------
>>> import numpy as np
>>> h = np.zeros((5, 8, 8), np.float32); h[2, 2:6, 2:6] = 0.5
>>> labels = (h > 0.4).astype(np.uint8)
>>> scribbles = np.zeros((5, 8, 8), np.uint8); scribbles[0, 0, 0] = 2
>>> [s.section for s in suggest_sections(h, labels, h, scribbles, count=1)]
[2]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from . import choices
from .errors import ScribbleSegError

#: Reasons, as the panel and the command line show them.
REASONS = {"unsure": "unsure", "changed": "changed a lot", "far": "far from any stroke"}


@dataclass(frozen=True)
class Suggestion:
    """One section to look at.

    Attributes
    ----------
    section : int
        Section index (array axis 0).
    score : float
        Expected wrong voxels, weighted by the distance to the strokes (higher first).
    reason : str
        The main sign: ``"unsure"``, ``"changed a lot"`` or ``"far from any stroke"``.
    unsure, changed : int
        Voxel counts behind the score.
    distance : int
        Sections to the nearest scribbled section (-1 when nothing is scribbled).

    Examples
    --------
    16 unsure voxels that the result calls heart and the network not, two sections from the only stroke:

    >>> h = np.zeros((5, 8, 8), np.float32); h[2, 2:6, 2:6] = 0.5
    >>> scribbles = np.zeros((5, 8, 8), np.uint8); scribbles[0, 0, 0] = 2
    >>> suggest_sections(h, (h > 0.4).astype(np.uint8), h, scribbles, count=1)
    [Suggestion(section=2, score=96.0, reason='far from any stroke', unsure=16, changed=16, distance=2)]
    """

    section: int
    score: float
    reason: str
    unsure: int
    changed: int
    distance: int

    def describe(self) -> str:
        """One line for a person.

        Examples
        --------
        >>> Suggestion(12, 1.0, "unsure", 340, 20, 1).describe()
        'section 12 (unsure: 340 unsure, 20 changed voxels, 1 section from a stroke)'
        >>> Suggestion(12, 1.0, "unsure", 340, 20, 4).describe()
        'section 12 (unsure: 340 unsure, 20 changed voxels, 4 sections from a stroke)'
        """
        where = "no stroke yet" if self.distance < 0 else (
            "on a scribbled section" if self.distance == 0 else
            f"{self.distance} section{'' if self.distance == 1 else 's'} from a stroke")
        return (f"section {self.section} ({self.reason}: {self.unsure} unsure, {self.changed} changed voxels, "
                f"{where})")

    def as_dict(self) -> dict:
        """What the worker's and the command line's ``metrics["suggestions"]`` hold for this section.

        Examples
        --------
        >>> Suggestion(12, 1.0, "unsure", 340, 20, 1).as_dict()["text"]
        'section 12 (unsure: 340 unsure, 20 changed voxels, 1 section from a stroke)'
        """
        return {"section": self.section, "reason": self.reason, "score": self.score, "text": self.describe()}


def section_scores(h: np.ndarray, labels: np.ndarray, network: np.ndarray,
                   scribbles: Optional[np.ndarray]) -> List[Suggestion]:
    """A :class:`Suggestion` for every section that holds heart in the result, ``h`` or the network.

    Parameters
    ----------
    h : numpy.ndarray
        ``(Z, Y, X)`` float adapted probability in [0, 1].
    labels : numpy.ndarray
        ``(Z, Y, X)`` final labels (> 0 heart).
    network : numpy.ndarray
        ``(Z, Y, X)`` float M-Unet probability in [0, 1].
    scribbles : numpy.ndarray or None
        ``(Z, Y, X)`` uint8 scribbles (0 none).

    Returns
    -------
    list of Suggestion
        In section order (unranked).

    Examples
    --------
    >>> h = np.zeros((3, 8, 8), np.float32); h[:, 2:6, 2:6] = 0.9; h[2, 2:6, 2:6] = 0.55
    >>> labels = (h > 0.6).astype(np.uint8)
    >>> scores = section_scores(h, labels, h, None)  # section 2: h unsure, and the result leaves it out
    >>> [s.section for s in scores], max(scores, key=lambda s: s.score).section
    ([0, 1, 2], 2)
    """
    h = np.asarray(h)
    if h.ndim != 3:
        raise ScribbleSegError(f"h must be a (Z, Y, X) array, got shape {h.shape}")
    for name, a in (("labels", labels), ("network", network), ("scribbles", scribbles)):
        if a is not None and np.shape(a) != h.shape:
            raise ScribbleSegError(f"{name} has shape {np.shape(a)}, h has {h.shape}")
    n = h.shape[0]
    unsure, changed, present = np.zeros(n), np.zeros(n, np.int64), np.zeros(n, bool)
    # Section by section: whole-volume temporaries would add several h-sized arrays to the peak memory.
    for z in range(n):
        hz = h[z].astype(np.float32)
        fg = np.asarray(labels[z]) > 0
        net = np.asarray(network[z]) > 0.5
        unsure[z] = float((1.0 - np.abs(2.0 * hz - 1.0)).sum(dtype=np.float64))
        changed[z] = np.count_nonzero(fg != net)
        present[z] = bool((fg | net | (hz > 0.5)).any())
    scribbled = (np.flatnonzero(np.asarray(scribbles).reshape(n, -1).any(axis=1))
                 if scribbles is not None else np.zeros(0, int))
    heart_span = np.flatnonzero(present)
    spread = max(1.0, (heart_span[-1] - heart_span[0] + 1) / 4.0) if heart_span.size else 1.0
    out = []
    for z in np.flatnonzero(present):
        distance = int(np.min(np.abs(scribbled - z))) if scribbled.size else -1
        weight = 1.0 + (max(distance, 0) if distance >= 0 else n) / spread
        score = float(unsure[z] + changed[z]) * weight
        if distance != 0 and weight > 2.0:
            reason = REASONS["far"]
        else:
            reason = REASONS["unsure"] if unsure[z] >= changed[z] else REASONS["changed"]
        out.append(Suggestion(int(z), float(score), reason, int(round(float(unsure[z]))), int(changed[z]), distance))
    return out


def suggest_sections(h: np.ndarray, labels: np.ndarray, network: np.ndarray, scribbles: Optional[np.ndarray],
                     count: int = choices.DEFAULT_SUGGESTIONS) -> List[Suggestion]:
    """The ``count`` sections where another stroke would most likely help, best first.

    Parameters
    ----------
    h, labels, network, scribbles
        See :func:`section_scores`.
    count : int
        How many to return (fewer if fewer sections hold heart).

    Returns
    -------
    list of Suggestion
        Empty for a volume of one section (a tile): there is no other section to look at.

    Examples
    --------
    >>> tile = np.full((1, 4, 4), 0.5, np.float32)
    >>> suggest_sections(tile, (tile > 0.4).astype(np.uint8), tile, None)
    []
    """
    if int(count) < 0:
        raise ScribbleSegError(f"count must be >= 0, got {count!r}")
    ranked = sorted(section_scores(h, labels, network, scribbles), key=lambda s: (-s.score, s.section))
    if len(labels) == 1:  # the command line printed none for a tile, the API and the worker one: none anywhere
        return []
    return ranked[: int(count)]


def network_suggestions(probability: np.ndarray, scribbles: Optional[np.ndarray] = None,
                        count: int = choices.DEFAULT_SUGGESTIONS) -> List[Suggestion]:
    """Sections to look at from the network's heart probability alone (``--method munet``, the heat map).

    The scores of :func:`section_scores` with the probability as ``h``, as the network and, thresholded, as the
    result: sections with much probability near 0.5, far from any stroke, come first.  Neighbouring sections look
    alike, so a section closer than ``gap`` to one already listed is skipped (``gap``: the volume's sections /
    (2 * count), at least 2), and the list covers the stack.

    Parameters
    ----------
    probability : numpy.ndarray
        ``(Z, Y, X)`` float heart probability in [0, 1].
    scribbles : numpy.ndarray, optional
        ``(Z, Y, X)`` uint8 strokes (0 none).
    count : int
        How many to return (fewer if fewer sections hold heart; none for a tile).

    Returns
    -------
    list of Suggestion
        Best first.

    Examples
    --------
    >>> p = np.zeros((4, 6, 6), np.float32); p[1, 1:5, 1:5] = 0.9; p[3, 1:5, 1:5] = 0.6
    >>> [s.section for s in network_suggestions(p, count=2)]
    [3, 1]
    """
    if int(count) < 0:
        raise ScribbleSegError(f"count must be >= 0, got {count!r}")
    probability = np.asarray(probability, np.float32)
    if probability.ndim == 3 and len(probability) == 1:  # a tile: no other section to look at
        return []
    ranked = sorted(section_scores(probability, (probability > 0.5).astype(np.uint8), probability, scribbles),
                    key=lambda s: (-s.score, s.section))
    gap = max(2, probability.shape[0] // (2 * max(1, int(count))))
    found: List[Suggestion] = []
    for suggestion in ranked:
        if len(found) == int(count):
            break
        if all(abs(suggestion.section - other.section) >= gap for other in found):
            found.append(suggestion)
    return found
