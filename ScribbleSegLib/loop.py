"""The panel's interactive loop without Slicer: heat map, where to look next, run, undo, what changed.

The paper's way of working is a loop: look at the network's heat map, go to
where it is probably wrong, scribble there, run, and repeat.  The Slicer panel
(``ScribbleSeg.py``) only moves data between the scene and these functions:

- :class:`RunHistory` keeps the labels of the last runs, so a run can be undone;
- :func:`changed_labels` marks the voxels that became heart or stopped being heart;
- :func:`heart_volume_mm3` and :func:`describe_change` make the status line;
- :func:`heat_map_suggestions` ranks sections from the network's probability alone
  (before any run; :mod:`ScribbleSegLib.suggest` does it after a run);
- :func:`suggestion_row` is the text of one row of the panel's list;
- :func:`section_center_ras` is the point a slice view jumps to for a section;
- :func:`next_suggestion` cycles through the list (the "next section" key).

Numpy in, plain Python out; no Qt, no MRML.

Examples
--------
>>> import numpy as np
>>> history = RunHistory()
>>> history.push(np.zeros((2, 3, 3), np.uint8))
>>> second = np.zeros((2, 3, 3), np.uint8); second[1, 1, 1] = 1
>>> history.push(second)
>>> int(changed_labels(history.previous, history.current).sum())
1
>>> bool(history.undo().any())
False
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import choices
from .errors import ScribbleSegError

#: Values of the label map that shows what a run changed (:func:`changed_labels`).
ADDED = 1
REMOVED = 2

#: How many runs "Undo last run" can go back.
DEFAULT_UNDO_DEPTH = choices.UNDO_DEPTH


class RunHistory:
    """The labels of the last runs on one volume, newest last, for "Undo last run".

    Parameters
    ----------
    depth : int
        How many runs are kept (at least 2: the current one and the one undo restores).

    Examples
    --------
    >>> import numpy as np
    >>> history = RunHistory(depth=2)
    >>> history.can_undo
    False
    >>> for voxels in (1, 2, 3):
    ...     history.push((np.arange(4) < voxels).reshape(1, 1, 4))
    >>> len(history), int(history.current.sum()), int(history.previous.sum())
    (2, 3, 2)
    >>> int(history.undo().sum()), history.can_undo
    (2, False)
    """

    def __init__(self, depth: int = DEFAULT_UNDO_DEPTH) -> None:
        if int(depth) < 2:
            raise ScribbleSegError(f"the undo depth must be at least 2, got {depth!r}")
        self.depth = int(depth)
        self._runs: List[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def current(self) -> Optional[np.ndarray]:
        """The labels of the newest run (None before the first)."""
        return self._runs[-1] if self._runs else None

    @property
    def previous(self) -> Optional[np.ndarray]:
        """The labels of the run before the newest (None if there is none)."""
        return self._runs[-2] if len(self._runs) >= 2 else None

    @property
    def can_undo(self) -> bool:
        """Whether there is a previous run to go back to."""
        return len(self._runs) >= 2

    def push(self, labels: np.ndarray) -> None:
        """Record a run's labels (a copy, as uint8 0/1); the oldest run beyond ``depth`` is dropped.

        Raises
        ------
        ScribbleSegError
            If ``labels`` is not 3D or has another shape than the runs before it
            (the history belongs to one volume).
        """
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ScribbleSegError(f"labels must be a (Z, Y, X) array, got shape {labels.shape}")
        if self._runs and labels.shape != self._runs[-1].shape:
            raise ScribbleSegError(f"labels of shape {labels.shape} do not belong to this volume "
                                   f"{self._runs[-1].shape}; start a new history")
        self._runs.append((labels > 0).astype(np.uint8))
        del self._runs[:-self.depth]

    def undo(self) -> np.ndarray:
        """Forget the newest run and return the labels that are current again.

        Raises
        ------
        ScribbleSegError
            If there is no previous run.
        """
        if not self.can_undo:
            raise ScribbleSegError("there is no earlier run to go back to")
        self._runs.pop()
        return self._runs[-1]

    def clear(self) -> None:
        """Forget every run (another volume, or the result was edited elsewhere).

        Examples
        --------
        >>> history = RunHistory()
        >>> history.push(np.ones((1, 2, 2)))
        >>> history.clear()
        >>> len(history), history.current, history.can_undo
        (0, None, False)
        >>> history.push(np.ones((2, 3, 3)))  # a volume of another shape may follow now
        """
        self._runs.clear()


def changed_labels(before: Optional[np.ndarray], after: np.ndarray) -> np.ndarray:
    """Where a run changed the labels: :data:`ADDED` (became heart), :data:`REMOVED` (no longer heart), 0 elsewhere.

    Parameters
    ----------
    before : numpy.ndarray or None
        The labels before the run (> 0 heart); None: nothing before, so every heart voxel is new.
    after : numpy.ndarray
        The labels after it.

    Returns
    -------
    numpy.ndarray
        uint8, the shape of ``after``.

    Examples
    --------
    >>> import numpy as np
    >>> changed_labels(np.array([[[1, 1, 0]]]), np.array([[[1, 0, 1]]])).tolist()
    [[[0, 2, 1]]]
    """
    after = np.asarray(after) > 0
    before = np.zeros_like(after) if before is None else np.asarray(before) > 0
    if before.shape != after.shape:
        raise ScribbleSegError(f"the labels before ({before.shape}) and after ({after.shape}) differ in shape")
    out = np.zeros(after.shape, np.uint8)
    out[after & ~before] = ADDED
    out[before & ~after] = REMOVED
    return out


def heart_volume_mm3(labels: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of the heart voxels in mm³.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Z, Y, X)``, > 0 heart.
    spacing : (x, y, z)
        Voxel size in mm.

    Examples
    --------
    >>> import numpy as np
    >>> heart_volume_mm3(np.ones((2, 2, 2)), (0.5, 0.5, 2.0))
    4.0
    """
    sx, sy, sz = (float(s) for s in spacing)
    return float(np.count_nonzero(np.asarray(labels) > 0)) * sx * sy * sz


def describe_change(volume_mm3: float, previous_mm3: Optional[float] = None,
                    changed_voxels: Optional[int] = None) -> str:
    """The status line's heart volume and how it changed since the previous run.

    Examples
    --------
    >>> describe_change(12.5)
    'heart 12.5 mm³'
    >>> describe_change(12.5, 10.0, 340)
    'heart 12.5 mm³ (+2.5 mm³, +25.0% since the previous run; 340 voxels changed)'
    >>> describe_change(9.0, 10.0, 0)
    'heart 9 mm³ (-1 mm³, -10.0% since the previous run; 0 voxels changed)'
    """
    text = f"heart {volume_mm3:.4g} mm³"
    if previous_mm3 is None:
        return text
    delta = volume_mm3 - previous_mm3
    percent = f", {100.0 * delta / previous_mm3:+.1f}%" if previous_mm3 > 0 else ""
    changed = "" if changed_voxels is None else f"; {int(changed_voxels)} voxels changed"
    return f"{text} ({delta:+.4g} mm³{percent} since the previous run{changed})"


def heat_map_suggestions(probability: np.ndarray, scribbles: Optional[np.ndarray] = None,
                         count: int = choices.LOOP_SUGGESTIONS) -> List[Dict[str, Any]]:
    """Sections to look at from the network's heart probability alone (no run yet):
    :func:`ScribbleSegLib.suggest.network_suggestions`, as the worker reports them.

    Returns
    -------
    list of dict
        ``section``, ``reason``, ``score``, ``text``: what the worker reports in
        ``metrics["suggestions"]`` after a run.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((4, 6, 6), np.float32); p[1, 1:5, 1:5] = 0.9; p[3, 1:5, 1:5] = 0.6
    >>> [s["section"] for s in heat_map_suggestions(p, count=2)]
    [3, 1]
    """
    from .suggest import network_suggestions

    return [s.as_dict() for s in network_suggestions(probability, scribbles, count)]


def suggestion_row(suggestion: Union[Mapping[str, Any], Any]) -> str:
    """The text of one row of the panel's list of sections to look at.

    ``suggestion`` is a worker's suggestion (a dict with ``section`` and ``reason``)
    or a :class:`~ScribbleSegLib.suggest.Suggestion`.

    Examples
    --------
    >>> suggestion_row({"section": 12, "reason": "unsure", "score": 3.0})
    'Section 12: unsure'
    """
    get = suggestion.get if isinstance(suggestion, Mapping) else lambda key: getattr(suggestion, key)
    return f"Section {int(get('section'))}: {get('reason')}"


def section_center_ras(ijk_to_ras: Union[np.ndarray, Sequence[Sequence[float]]], shape_zyx: Sequence[int],
                       section: int) -> Tuple[float, float, float]:
    """The RAS point at the centre of section ``section`` (the volume's K index).

    Parameters
    ----------
    ijk_to_ras : 4x4 array
        The volume's IJK-to-RAS matrix (I: columns, the last array axis; K: sections).
    shape_zyx : (Z, Y, X)
        The volume's array shape.
    section : int
        Section index, 0 .. Z-1.

    Raises
    ------
    ScribbleSegError
        If the section is outside the volume.

    Examples
    --------
    >>> m = [[0.5, 0, 0, 10], [0, 0.5, 0, 20], [0, 0, 2.0, -4], [0, 0, 0, 1]]
    >>> section_center_ras(m, (5, 9, 11), 3)
    (12.5, 22.0, 2.0)
    """
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4):
        raise ScribbleSegError(f"the IJK-to-RAS matrix must be 4x4, got shape {matrix.shape}")
    z, y, x = (int(s) for s in shape_zyx)
    if not 0 <= int(section) < z:
        raise ScribbleSegError(f"section {section} is outside the volume (0..{z - 1})")
    ras = matrix @ np.array([(x - 1) / 2.0, (y - 1) / 2.0, float(section), 1.0])
    return float(ras[0]), float(ras[1]), float(ras[2])


def next_suggestion(current: Optional[int], count: int) -> Optional[int]:
    """The row the "next section" key selects: the one after ``current``, wrapping round.

    Examples
    --------
    >>> [next_suggestion(c, 3) for c in (None, 0, 1, 2)]
    [0, 1, 2, 0]
    >>> next_suggestion(None, 0) is None
    True
    """
    if count <= 0:
        return None
    if current is None or not 0 <= current < count:
        return 0
    return (current + 1) % count
