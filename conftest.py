"""Shared by the tests in Testing/ and the docstring Examples of ScribbleSegLib (run by ``--doctest-modules``)."""

import tempfile

import pytest


@pytest.fixture(autouse=True)
def _doctest_temp_folder(request, monkeypatch):
    """Point ``tempfile`` at a folder of pytest's own during a doctest: Examples that write files make their
    folders with ``tempfile.mkdtemp()``, and pytest removes its folders where the system's temporary folder
    would keep them, more with every run."""
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
