"""h = head(f(x)) over a volume (h_evaluation): exact, coarse-to-fine, and the features it reads."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ScribbleSegLib import ddml, h_evaluation
from ScribbleSegLib.ddml import DDMLConfig
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.feature_reader import FeatureReader
from ScribbleSegLib.h_evaluation import predict_h


def test_predict_h_matches_the_networks_on_a_read_only_memmap(tmp_path):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(500, 6)).astype(np.float32), np.arange(500) % 2
    config = DDMLConfig(hidden=(7,), out_dim=5, steps=20, batch_size=32, head_steps=20)
    f = ddml.train_ddml(x, y, config)
    head = ddml.train_head(f, x, y, config)
    volume = np.lib.format.open_memmap(tmp_path / "features.npy", mode="w+", dtype=np.float16, shape=(3, 9, 11, 6))
    volume[:] = rng.normal(size=volume.shape)
    volume.flush()
    features = np.load(tmp_path / "features.npy", mmap_mode="r")
    with torch.no_grad():
        expected = head(f(torch.from_numpy(np.asarray(features, np.float32).reshape(-1, 6)))).numpy()
    for chunk, workers in ((7, 1), (1000, 2)):
        h = predict_h(features, f, head, chunk=chunk, workers=workers, evaluation="exact")
        assert h.shape == (3, 9, 11) and h.dtype == np.float32
        np.testing.assert_allclose(h.reshape(-1), expected, rtol=1e-5, atol=1e-6)


def _blob_features(tmp_path, shape=(3, 40, 52), channels=6):
    """A memory-mapped feature volume with a round 'heart' (smooth features, noise) and its label."""
    rng = np.random.default_rng(12)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    label = ((y - 20) ** 2 + (x - 26) ** 2 < (12 - 2 * abs(z - 1)) ** 2)
    noise = rng.normal(0, 0.3, shape + (channels,))
    # Network features vary smoothly at the pixel scale (receptive fields of many pixels): blur the noise.
    for axis in (1, 2):
        noise = sum(np.roll(noise, k, axis=axis) for k in range(-3, 4)) / 7 ** 0.5
    values = label[..., None] * rng.normal(1.5, 0.2, channels) + noise
    # A header of another length than a page: the reader must find the data after it.
    path = tmp_path / "blob.npy"
    memmap = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape + (channels,))
    memmap[:] = values
    memmap.flush()
    return np.load(path, mmap_mode="r"), label


def test_coarse_evaluation_is_exact_where_it_matters_and_reads_less(tmp_path):
    features, label = _blob_features(tmp_path)
    config = DDMLConfig(hidden=(8,), out_dim=4, steps=60, batch_size=64, head_steps=60)
    flat = np.asarray(features, np.float32).reshape(-1, features.shape[3])
    f = ddml.train_ddml(flat[::7], label.reshape(-1)[::7].astype(np.uint8), config)
    head = ddml.train_head(f, flat[::7], label.reshape(-1)[::7].astype(np.uint8), config)
    exact = predict_h(features, f, head, evaluation="exact")
    stats = {}
    coarse = predict_h(features, f, head, evaluation="coarse", stats=stats, workers=2)
    assert coarse.shape == exact.shape and coarse.dtype == np.float32
    # Fewer evaluations than voxels, yet every voxel near 0.5 or near the boundary is exact.
    assert 0 < stats["evaluated"] < exact.size
    near = (np.abs(exact - 0.5) < 0.2)
    np.testing.assert_allclose(coarse[near], exact[near], atol=1e-5)
    np.testing.assert_allclose(coarse, exact, atol=0.1)
    assert np.array_equal(coarse > 0.5, exact > 0.5)
    # Every other grid point is exact everywhere (the rest where interpolating could be off).
    step = 2 * h_evaluation.COARSE_STRIDE
    np.testing.assert_allclose(coarse[:, ::step, ::step], exact[:, ::step, ::step], atol=1e-5)


def _grid_case(disc: bool):
    """A 64x64 block whose ``h`` is ``sigmoid(x)``: -4 (h 0.018) everywhere, +4 inside a disc of radius 8."""
    y, x = np.mgrid[:64, :64]
    block = np.where(disc & ((y - 20) ** 2 + (x - 20) ** 2 < 64), 4.0, -4.0).astype(np.float32)[..., None]
    layers = [(torch.ones(1, 1), torch.zeros(1))]  # one layer: h = sigmoid(x) (fused_layers' form)
    ys = xs = h_evaluation._grid(64, h_evaluation.COARSE_STRIDE)
    return block, layers, ys, xs


def test_the_grid_is_evaluated_on_every_other_point_where_that_sparser_grid_is_flat():
    # Glass and tissue far from the heart: the grid's points are interpolated from every other one (a quarter
    # of the work); around a boundary, and where a finer cell holds detail, every grid point is evaluated.
    block, layers, ys, xs = _grid_case(disc=False)
    detail = np.zeros((len(ys) - 1, len(xs) - 1), bool)
    values, evaluated = h_evaluation._grid_values(block, ys, xs, detail, layers, 100)
    sparse = len(h_evaluation._every_other(len(ys))) * len(h_evaluation._every_other(len(xs)))
    assert evaluated == sparse < values.size / 3
    np.testing.assert_allclose(values, 1 / (1 + np.exp(4.0)), rtol=1e-6)

    detail[14, 14] = True  # the network's edge in one finer cell far from everything else
    _, with_detail = h_evaluation._grid_values(block, ys, xs, detail, layers, 100)
    assert with_detail > evaluated

    block, layers, ys, xs = _grid_case(disc=True)
    detail[:] = False
    values, evaluated = h_evaluation._grid_values(block, ys, xs, detail, layers, 100)
    truth = 1 / (1 + np.exp(-block[np.ix_(ys, xs)][..., 0]))
    assert sparse < evaluated < values.size
    # Within two sparser cells (16 pixels) of the disc every grid point is exact: the disc's edge and what an
    # interpolation from a sparser grid would blur.
    near = (np.abs(ys[:, None] - 20) <= 8 + 16) & (np.abs(xs[None, :] - 20) <= 8 + 16)
    np.testing.assert_allclose(values[near], truth[near], rtol=1e-6)
    np.testing.assert_allclose(values, truth, atol=0.05)


def test_coarse_evaluation_is_exact_next_to_scribbles_and_network_detail(tmp_path):
    features, label = _blob_features(tmp_path)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 6)).astype(np.float32), np.arange(200) % 2
    config = DDMLConfig(hidden=(8,), out_dim=4, steps=5, batch_size=16, head_steps=5)
    f = ddml.train_ddml(x, y, config)
    head = ddml.train_head(f, x, y, config)
    exact = predict_h(features, f, head, evaluation="exact")
    scribbles = np.zeros(label.shape, np.uint8)
    scribbles[1, 30, 5:9] = 2
    network = np.zeros(label.shape, np.float32)
    network[2, 10, 40] = 1.0  # a one-pixel detail between grid points
    coarse = predict_h(features, f, head, evaluation="coarse", scribbles=scribbles, network_probability=network)
    np.testing.assert_allclose(coarse[1, 29:32, 5:9], exact[1, 29:32, 5:9], atol=1e-5)
    assert abs(float(coarse[2, 10, 40]) - float(exact[2, 10, 40])) < 1e-5
    with pytest.raises(ScribbleSegError, match="evaluation"):
        predict_h(features, f, head, evaluation="sparse")
    with pytest.raises(ScribbleSegError, match="network_probability"):
        predict_h(features, f, head, network_probability=network[:, :5])
    with pytest.raises(ScribbleSegError, match="evaluation"):
        DDMLConfig(evaluation="fast")


@pytest.mark.parametrize("shape", [(513, 512), (65, 300), (9, 17), (6, 5), (5, 9)])
def test_cell_extremes_are_those_of_reduceat(shape):
    # The coarse evaluation's per-cell minimum and maximum, by blocks, against numpy's reduceat.
    rng = np.random.default_rng(9)
    a = rng.random(shape).astype(np.float32)
    stride = h_evaluation.COARSE_STRIDE
    ys, xs = h_evaluation._grid(shape[0], stride), h_evaluation._grid(shape[1], stride)
    low, high = h_evaluation._cell_range(a, ys, xs)
    np.testing.assert_array_equal(low, np.minimum.reduceat(np.minimum.reduceat(a, ys[:-1], axis=0), xs[:-1], axis=1))
    np.testing.assert_array_equal(high, np.maximum.reduceat(np.maximum.reduceat(a, ys[:-1], axis=0), xs[:-1], axis=1))
    assert low.shape == (len(ys) - 1, len(xs) - 1)


def test_the_feature_reader_reads_what_the_mapping_holds(tmp_path):
    features, _ = _blob_features(tmp_path)  # a .npy header of another length than a page
    flat = np.asarray(features, np.float32).reshape(-1, features.shape[3])
    picked = np.array([0, 5, 777, features[..., 0].size - 1])
    reader = FeatureReader(features)
    assert reader.path is not None  # read from the file, not through the mapping
    np.testing.assert_array_equal(reader.voxels(picked), flat[picked])
    np.testing.assert_array_equal(reader.rows(2, 3, 7), features[2, 3:7])
    in_memory = FeatureReader(np.array(features))  # an array in memory is sliced
    assert in_memory.path is None
    np.testing.assert_array_equal(in_memory.voxels(picked), flat[picked])



@pytest.mark.skipif(os.name != "posix", reason="a mapped file cannot be deleted on Windows")
def test_the_feature_reader_reads_a_file_gone_from_its_folder_through_the_mapping(tmp_path):
    # Another run's cache eviction deleted the entry of a running segmentation, which then failed on its next
    # read of the features ("No such file or directory"); the mapping still holds the file.
    features, _ = _blob_features(tmp_path)
    expected = np.array(features)
    reader = FeatureReader(features)
    Path(features.filename).unlink()
    np.testing.assert_array_equal(reader.rows(2, 3, 7), expected[2, 3:7])
    flat = expected.astype(np.float32).reshape(-1, expected.shape[3])
    np.testing.assert_array_equal(reader.voxels(np.array([0, 5, 777])), flat[[0, 5, 777]])

