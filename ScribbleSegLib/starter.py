"""The starter model shipped with ScribbleSeg, and how every front end finds it.

A first-time user has no labelled volumes and no trained network, yet the
method only needs a network whose features separate heart from background
*well enough for DDML to adapt them to the user's scribbles*.  The starter
model is such a network: the small M-Unet preset trained for a few minutes on
the project's synthetic phantoms (every phantom family the library has), made
by ``python benchmarks/make_starter_model.py`` (the command, budget and data
are recorded inside the file, see ``meta["provenance"]``).  It is a starting
point, not a finished model: segment with scribbles, then fine-tune it on your
corrected volumes (``scribbleseg train --init``, or "Add this volume to the
model" in Slicer).

The file lives inside this package (``ScribbleSegLib/models/starter.model``),
so a pip install, a source checkout and the Slicer extension (whose
``ScribbleSegLib/CMakeLists.txt`` installs it as a resource) all find it at
the same place relative to this file.

This module imports nothing heavy: the Slicer module calls it in Slicer's own
process, where torch must not be imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

STARTER_MODEL_NAME = "starter.model"
"""File name of the starter model inside :data:`MODELS_FOLDER`."""

MODELS_FOLDER = Path(__file__).resolve().parent / "models"
"""Folder of the models shipped with the package."""

STARTER = "starter"
"""The word that stands for the starter model wherever a model file is asked for (``--model starter``)."""


def starter_model_path() -> Optional[Path]:
    """The shipped starter model, or None if this installation has none.

    Returns
    -------
    pathlib.Path or None
        ``ScribbleSegLib/models/starter.model`` if the file exists.

    Examples
    --------
    >>> path = starter_model_path()
    >>> path.name, path.is_file()
    ('starter.model', True)
    """
    path = MODELS_FOLDER / STARTER_MODEL_NAME
    return path if path.is_file() else None


def is_starter_model(path: Union[str, os.PathLike, None]) -> bool:
    """Whether ``path`` is the shipped starter model (the word ``starter`` included).

    Examples
    --------
    >>> is_starter_model("starter"), is_starter_model("my.model")
    (True, False)
    """
    if path is None or str(path) == "":
        return False
    if str(path) == STARTER:
        return True
    starter = starter_model_path()
    try:
        return starter is not None and Path(path).resolve() == starter
    except OSError:
        return False


def starter_name_hint(path: Union[str, os.PathLike]) -> str:
    """What to add to "no such file" for a missing model named as the starter in another case (``Starter``,
    ``STARTER.model`` is not meant): the word is lower case; "" otherwise.

    Examples
    --------
    >>> starter_name_hint("Starter"), starter_name_hint("/data/heart.model")
    ("; the shipped model is 'starter', in lower case", '')
    """
    name = Path(path).name
    return f"; the shipped model is {STARTER!r}, in lower case" if name.lower() == STARTER and name != STARTER else ""


def resolve_model(path: Union[str, os.PathLike, None]) -> Path:
    """The model file to use: ``path``, or the starter model when ``path`` is empty, None or ``starter``.

    Raises
    ------
    ScribbleSegError
        If the starter model is asked for and this installation has none.

    Examples
    --------
    >>> resolve_model("starter") == starter_model_path()
    True
    """
    from .errors import ScribbleSegError

    if path is not None and str(path) not in ("", STARTER):
        return Path(path)
    starter = starter_model_path()
    if starter is None:
        raise ScribbleSegError(f"{MODELS_FOLDER / STARTER_MODEL_NAME}: the starter model is missing from this "
                               "installation; choose a model file or make one with "
                               "'python benchmarks/make_starter_model.py'")
    return starter
