"""Shared pytest fixtures for ScribbleSegLib (no Slicer needed)."""

import os
from pathlib import Path

import numpy as np
import pytest

# Offscreen vtk rendering without an X server (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri).
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture
def two_tissues():
    """A 1x40x40 RGB section: two textured tissues meeting at x = 20, and ``h`` that calls both background."""
    rng = np.random.default_rng(0)
    image = np.empty((1, 40, 40, 3), np.float32)
    image[..., :20, :] = (0.8, 0.5, 0.7)
    image[..., 20:, :] = (0.5, 0.3, 0.6)
    image += rng.normal(0.0, 0.02, image.shape).astype(np.float32)  # texture: the gradient's median is not 0
    image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return image, np.full((1, 40, 40), 0.1, np.float32)


@pytest.fixture
def two_stroked_sections(two_tissues):
    """``two_tissues`` and its mirror as two sections, a heart stroke on the first and a background stroke
    on the second: ``(image, h, scribbles)``."""
    image, h = two_tissues
    image, h = np.concatenate([image, image[:, ::-1]]), np.concatenate([h, h])
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 18:22, 6:9] = 1
    scribbles[1, 2:5, 30:38] = 2
    return image, h, scribbles


@pytest.fixture
def adapt_shares(monkeypatch):
    """The scribble share of each ``ddml.adapt`` call while the test runs (1.0: the strokes alone, no bank)."""
    from ScribbleSegLib import ddml

    return record_keyword(monkeypatch, ddml, "adapt", "config", lambda config: config.scribble_share)


def record_keyword(monkeypatch, module, name: str, keyword: str, read) -> list:
    """``read(value)`` of keyword argument ``keyword`` of each call of ``module.name`` while the test runs, in order;
    the calls themselves go through."""
    seen = []
    real = getattr(module, name)

    def recording(*args, **kwargs):
        seen.append(read(kwargs.get(keyword)))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return seen


def doubted_stack(side: int):
    """A small random 2-section stack (``side`` pixels square) whose network calls 6 of the 10 heart-stroke voxels
    background (a doubt of 0.6, between ``bank_doubt`` and ``bank_doubt_full``) and a model without a bank:
    ``(image, features, strokes, network probability, model)`` for ``pipeline.adapt_and_cut``."""
    import types

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(2, side, side, 6)).astype(np.float16)
    image = rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8)
    strokes = np.zeros((2, side, side), np.uint8)
    strokes[0, 2, 1:11], strokes[1, 9, 1:11] = 1, 2
    network = np.full(strokes.shape, 0.2, np.float32)
    network[0, 2, 1:5] = 0.9
    model = types.SimpleNamespace(bank_features=None, bank_labels=None, device=None)
    return image, feats, strokes, network, model


def tiny_case(folder, shape, max_iters: int):
    """A test phantom of ``shape`` (seed 2) and a tiny M-Unet trained ``max_iters`` steps on another one (seed 1),
    written to ``folder/tiny.model``: ``(test phantom, model path)``, quick enough for a module's fixture."""
    from ScribbleSegLib import phantom
    from ScribbleSegLib.nets import ModelConfig
    from ScribbleSegLib.training import train_model

    cfg = phantom.PhantomConfig(shape=shape)
    train, test = phantom.make_phantom(seed=1, config=cfg), phantom.make_phantom(seed=2, config=cfg)
    net = ModelConfig(patch=16, width=4, depth=2, aggregator=(8,), feature_channels=8)
    return test, train_model([train.image], [train.label], Path(folder) / "tiny.model", net, max_iters=max_iters,
                             seed=0)
