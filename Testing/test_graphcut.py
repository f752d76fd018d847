"""Tests of the 3D graph cut (paper eq. 4-6): optimality, seeds, spacing, banded cut, memory checks."""

import dataclasses
import itertools
import math
import os
import re
import types

import numpy as np
import pytest

from ScribbleSegLib import choices, cut_band, cut_levels, cut_memory, cut_scaling, graphcut, runtime, stroke_pull
from ScribbleSegLib.errors import CancelledError, ScribbleSegError
from ScribbleSegLib.graphcut import (AS_GIVEN, CutMemory, GraphCutParams, energy, estimate_banded_cut_bytes,
                                     estimate_full_cut_bytes, graph_cut)
from ScribbleSegLib.progress import CancelToken
from ScribbleSegLib.stroke_pull import ImageMeasures, pulled_to_seeds


def reference_pairs(image, spacing, params):
    """(i, j, weight) of every 6-neighbour pair, written out from the formula with plain loops."""
    shape = image.shape[:3]
    x = image.astype(np.float64) / 255.0
    pairs = []
    for v in itertools.product(*(range(n) for n in shape)):
        for axis in range(3):
            u = list(v)
            u[axis] += 1
            if u[axis] >= shape[axis]:
                continue
            d2 = float(np.sum((x[v] - x[tuple(u)]) ** 2))
            w = params.gamma * (min(spacing) / spacing[axis]) * (math.exp(-d2 / params.sigma ** 2) + params.delta)
            pairs.append((np.ravel_multi_index(v, shape), np.ravel_multi_index(u, shape), w))
    return pairs


def brute_force(h, image, scribbles, spacing, params):
    """Energies of all labellings of a tiny grid (inf where a scribble is violated)."""
    n = h.size
    labels = ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
    e = np.abs(labels - h.ravel().astype(np.float64)[None, :]).sum(axis=1)
    for i, j, w in reference_pairs(image, spacing, params):
        e += w * (labels[:, i] != labels[:, j])
    seeds = scribbles.ravel()
    bad = (labels & (seeds == 2)[None, :]).any(axis=1) | (~labels & (seeds == 1)[None, :]).any(axis=1)
    e[bad] = np.inf
    return labels, e


#: The synthetic ellipsoid cases below were made for a weak boundary term (the phantom's default is stronger).
SYNTH = GraphCutParams(gamma=1.0, neighbourhood=6, **AS_GIVEN)  # the paper's grid, which every mode can cut


def ellipsoid_case(shape=(24, 64, 64), h_noise=0.3, image_noise=8.0, seed=0):
    """An ellipsoid heart: noisy sigmoid h, two-colour noisy RGB image, seed lines every 6th section."""
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    z, y, x = np.ogrid[:Z, :Y, :X]
    r = np.sqrt(((z - Z / 2) / (0.35 * Z)) ** 2 + ((y - Y / 2) / (0.3 * Y)) ** 2 + ((x - X / 2) / (0.33 * X)) ** 2)
    truth = r < 1
    h = np.clip(1 / (1 + np.exp(-(1 - r) * 0.3 * min(shape))) + rng.normal(0, h_noise, shape), 0, 1)
    image = np.where(truth[..., None], [200.0, 80.0, 120.0], [230.0, 190.0, 210.0])
    image = np.clip(image + rng.normal(0, image_noise, image.shape), 0, 255).astype(np.uint8)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[::6, Y // 2, X // 2 - X // 8: X // 2 + X // 8] = 1
    scribbles[::6, 1, :] = 2
    return h.astype(np.float32), image, scribbles, truth


def random_case(rng, shape):
    """A random ``h`` and RGB image of ``shape``, drawn in that order from ``rng``, and no scribbles."""
    h = rng.random(shape).astype(np.float32)
    image = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
    return h, image, np.zeros(shape, np.uint8)


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("trial", range(6))
def test_full_cut_is_the_brute_force_minimum(trial):
    rng = np.random.default_rng(trial)
    shape = (2, 2, 3)
    h, image, scribbles = random_case(rng, shape)
    image[rng.random(shape) < 0.5] = 128  # some equal colours, so that some pairs weigh 1 + delta
    scribbles.flat[rng.choice(h.size, 2, replace=False)] = (1, 2)
    spacing = ((1.0, 1.0, 1.0), (3.0, 1.0, 1.0), (0.5, 2.0, 1.0))[trial % 3]
    params = GraphCutParams(gamma=(0.3, 0.8, 1.5)[trial % 3], sigma=0.3, delta=0.1, data_term="linear",
                            neighbourhood=6, **AS_GIVEN)

    all_labels, energies = brute_force(h, image, scribbles, spacing, params)
    labels = graph_cut(h, image, scribbles, spacing, params, mode="full")

    assert labels.dtype == np.uint8 and labels.shape == shape
    # The cut computes colour contrasts in float32, hence the tolerance.
    got = energy(labels, h, image, scribbles, spacing, params)
    assert got == pytest.approx(energies.min(), abs=1e-5)
    ordered = np.sort(energies)
    if ordered[1] - ordered[0] > 1e-5:  # a unique minimum: the labels themselves must match
        np.testing.assert_array_equal(labels.ravel().astype(bool), all_labels[np.argmin(energies)])


def test_energy_matches_the_formula():
    rng = np.random.default_rng(7)
    shape = (2, 3, 2)
    h = rng.random(shape)
    image = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
    scribbles = np.zeros(shape, np.uint8)
    spacing = (2.0, 1.0, 0.5)
    params = GraphCutParams(gamma=0.7, sigma=0.2, delta=0.3, data_term="linear", neighbourhood=6, **AS_GIVEN)
    all_labels, energies = brute_force(h, image, scribbles, spacing, params)
    for k in rng.choice(len(all_labels), 20, replace=False):
        labels = all_labels[k].reshape(shape).astype(np.uint8)
        assert energy(labels, h, image, scribbles, spacing, params) == pytest.approx(energies[k], abs=1e-5)
    scribbles[0, 0, 0] = 1
    assert energy(np.zeros(shape, np.uint8), h, image, scribbles, spacing, params) == math.inf


@pytest.mark.parametrize("mode", ["full", "banded"])
def test_every_seed_is_honoured_against_the_data(mode):
    rng = np.random.default_rng(1)
    shape = (8, 24, 24)
    h, image, scribbles = random_case(rng, shape)
    scribbles.flat[rng.choice(h.size, 300, replace=False)] = rng.integers(1, 3, 300)
    # The data term says the opposite of every scribble, and strongly.
    h[scribbles == 1], h[scribbles == 2] = 0.0, 1.0
    labels = graph_cut(h, image, scribbles, params=GraphCutParams(gamma=5.0, sigma=1.0, delta=1.0), mode=mode)
    assert np.all(labels[scribbles == 1] == 1)
    assert np.all(labels[scribbles == 2] == 0)


@pytest.mark.parametrize("neighbourhood", [6, 10])
@pytest.mark.parametrize("shape", [(24, 64, 64), (13, 45, 51)])  # odd sizes: blocks cut off by the edges
def test_banded_equals_full_on_a_phantom(shape, neighbourhood):
    h, image, scribbles, truth = ellipsoid_case(shape)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0, neighbourhood=neighbourhood)
    full = graph_cut(h, image, scribbles, params=params, mode="full")
    banded = graph_cut(h, image, scribbles, params=params, mode="banded")
    assert dice(banded, full) >= 0.999
    assert dice(full, truth) > dice(h > 0.5, truth)  # the cut improves on thresholding h
    e_full = energy(full, h, image, scribbles, params=params)
    e_banded = energy(banded, h, image, scribbles, params=params)
    assert e_full <= e_banded + 1e-6 and e_banded <= e_full * 1.0005


def test_the_band_reaches_as_far_in_millimetres_along_thick_sections():
    f, spacing = (1, 2, 2), (0.015, 0.0075, 0.0075)  # sections twice as thick as the pixels
    steps = cut_band._band_steps(f, 3, spacing)
    reach = [n * k * s for n, k, s in zip(steps, f, spacing)]  # millimetres, per axis
    assert all(r >= 3 * 0.0075 - 1e-12 for r in reach)
    assert steps[0] < 3  # fewer sections than a band counted in voxels would take
    # Very thick sections: still one block beyond the blocks at the boundary.
    assert cut_band._band_steps((1, 2, 2), 3, (0.1, 0.0075, 0.0075)) == [2, 2, 2]
    assert cut_band._band_steps((2, 2, 2), 3, (0.5, 0.5, 0.5)) == [2, 2, 2]
    assert cut_band._band_steps((1, 1, 1), 3, (0.1, 0.1, 0.1)) == [3, 3, 3]
    assert cut_band._band_steps((1, 2, 2), 6) == [6, 3, 3]  # in voxels (a coarse level's band)


@pytest.mark.parametrize("thickness", [2.0, 6.0])  # z is not coarsened, and its band is counted in millimetres
def test_banded_equals_full_with_thick_sections(thickness):
    h, image, scribbles, _ = ellipsoid_case((24, 64, 64), seed=2)
    spacing = (thickness, 1.0, 1.0)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0, neighbourhood=10)
    full = graph_cut(h, image, scribbles, spacing_zyx=spacing, params=params, mode="full")
    banded = graph_cut(h, image, scribbles, spacing_zyx=spacing, params=params, mode="banded")
    assert dice(banded, full) >= 0.999
    e_full, e_banded = (energy(l, h, image, scribbles, spacing, params=params) for l in (full, banded))
    assert e_full <= e_banded + 1e-6 and e_banded <= e_full * 1.0005


@pytest.mark.parametrize("neighbourhood", [6, 10])
@pytest.mark.parametrize("shape", [(24, 64, 64), (13, 45, 51)])
def test_a_cut_started_from_the_last_one_matches_a_cut_from_scratch(shape, neighbourhood, monkeypatch):
    # Small volumes are mostly band: make sure the band re-cut runs rather than a cut from scratch.
    monkeypatch.setattr(cut_memory, "REUSE_MAX_BAND", 1.0)
    monkeypatch.setattr(cut_memory, "REUSE_MAX_BAND_FULL", 1.0)
    monkeypatch.setattr(cut_memory, "REUSE_MAX_REGION", 1.0)
    solves = []  # per max-flow: whether it started from the last one
    real_solve = cut_band._Region.solve
    monkeypatch.setattr(cut_band._Region, "solve", lambda self, *a, **k: solves.append(self.solved)
                        or real_solve(self, *a, **k))
    h, image, scribbles, truth = ellipsoid_case(shape)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0, neighbourhood=neighbourhood)
    memory = CutMemory()
    first = graph_cut(h, image, scribbles, params=params, memory=memory)
    assert memory.labels is not None and np.array_equal(memory.labels, first)
    # Same inputs again: nothing changed, nothing moves (a band around the last boundary, cut on a new graph).
    assert np.array_equal(graph_cut(h, image, scribbles, params=params, memory=memory), first)
    assert solves == [False] and memory.region is not None
    region = memory.region
    # New data (other noise, and two thirds of the heart now say background), a background stroke on the heart
    # and a heart stroke on the background; then other data again: the graph of the last cut grows each time.
    h2, _, _, _ = ellipsoid_case(shape, seed=5)
    h2[:, :, shape[2] // 3:] *= 0.1
    scribbles2 = scribbles.copy()
    scribbles2[shape[0] // 2, shape[1] // 2, shape[2] // 2: shape[2] // 2 + 4] = 2
    scribbles2[shape[0] // 2, 3, 3:9] = 1
    h3, _, _, _ = ellipsoid_case(shape, seed=6)
    h3[:, : shape[1] // 4] *= 0.2
    warm = {}
    for case, (h_, scribbles_) in enumerate(((h2, scribbles2), (h3, scribbles2))):
        solves.clear()
        warm[case] = graph_cut(h_, image, scribbles_, params=params, memory=memory)
        assert solves[0] and memory.region is region  # the last cut's graph, started from its last flow
        fresh = graph_cut(h_, image, scribbles_, params=params)
        assert dice(warm[case], fresh) >= 0.999
        e_warm, e_fresh = (energy(l, h_, image, scribbles_, params=params) for l in (warm[case], fresh))
        assert e_fresh <= e_warm + 1e-6 and e_warm <= e_fresh * 1.001
    assert np.count_nonzero(warm[0] != first) > 100 and np.count_nonzero(warm[1] != warm[0]) > 100  # it moved
    # Other parameters or another image: a cut from scratch, and the memory follows it.
    other = GraphCutParams(**AS_GIVEN, gamma=4.0)
    assert np.array_equal(graph_cut(h2, image, scribbles2, params=other, memory=memory),
                          graph_cut(h2, image, scribbles2, params=other))
    assert memory.key[2] == other


def test_only_seeds_against_the_last_labels_or_taken_away_make_a_warm_cut_re_cut():
    h, image, scribbles, _ = ellipsoid_case((8, 32, 32), seed=1)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0)
    memory = CutMemory()
    labels = graph_cut(h, image, scribbles, params=params, memory=memory)
    background = np.argwhere((labels == 0) & (scribbles == 0))[0]

    def changed(new_scribbles):
        level = graphcut._top_level(h, image, new_scribbles, (1.0, 1.0, 1.0), params)
        return set(map(tuple, np.argwhere(cut_memory._changed_blocks(level, memory, memory.labels, (1, 1, 1)))))

    last_boundary = changed(scribbles)
    agreeing = scribbles.copy()
    agreeing[tuple(background)] = 2
    assert changed(agreeing) == last_boundary  # a background seed on background: nothing to re-cut
    against = scribbles.copy()
    against[tuple(background)] = 1
    assert changed(against) == last_boundary | {tuple(background)}
    taken = scribbles.copy()
    seed = next(tuple(v) for v in np.argwhere(scribbles == 2) if tuple(v) not in last_boundary)
    taken[seed] = 0
    assert changed(taken) == last_boundary | {seed}


def test_where_the_growth_passes_ran_out_the_next_warm_cut_goes_on(monkeypatch):
    monkeypatch.setattr(cut_memory, "REUSE_MAX_REGION", 1.0)
    monkeypatch.setattr(cut_memory, "REUSE_MAX_BAND_FULL", 1.0)  # the limit of a volume this small
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=4)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0)
    memory = CutMemory()
    first = graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory)
    region = memory.region
    assert region is not None and region.pending is None
    outside = np.argwhere(~region.band.mask)[0]
    region.pending = np.zeros_like(region.band.mask)  # as if the boundary had touched this block last time
    region.pending[tuple(outside)] = True
    assert np.array_equal(graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory), first)
    assert memory.region is region and region.band.mask[tuple(outside)] and region.pending is None
    # A band's graph over the memory limit is not kept between cuts.
    monkeypatch.setattr(cut_memory, "REUSE_MAX_REGION_BYTES", 0)
    graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory)
    assert memory.region is None and memory.labels is not None


def test_a_warm_cut_of_a_small_volume_cut_coarse_to_fine_goes_on_from_its_band(monkeypatch):
    # A volume that is cut coarse-to-fine but no larger than WIDE_BAND_MAX_VOXELS keeps its band's graph under
    # the small volumes' limit (REUSE_MAX_BAND_FULL), as it did while such volumes were cut in full, not
    # under the large volumes' REUSE_MAX_REGION: its whole band is a large share of its blocks.
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=4)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0)
    monkeypatch.setattr(graphcut, "AUTO_FULL_MAX_VOXELS", 16 * 64 * 64 - 1)  # auto cuts it coarse-to-fine
    memory = CutMemory()
    graph_cut(h, image, scribbles, params=params, memory=memory)
    region = memory.region
    share = region.band.blocks.size / region.band.mask.size  # 0.58: the volume is tiny
    monkeypatch.setattr(cut_memory, "REUSE_MAX_REGION", share / 2)  # the large volumes' limit would refuse it
    monkeypatch.setattr(cut_memory, "REUSE_MAX_BAND_FULL", 1.0)
    messages = []
    h2 = np.clip(h + 0.2 * (np.arange(64) > 40), 0, 1).astype(np.float32)
    graph_cut(h2, image, scribbles, params=params, memory=memory, progress=lambda s, f, m: messages.append(m))
    assert not any("downsampling" in m for m in messages)  # not a cut from scratch
    assert memory.region is region


def test_a_cut_with_memory_reuses_the_coarse_weights(monkeypatch):
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=4)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0)
    monkeypatch.setattr(cut_memory, "REUSE_MAX_BAND", 0.0)  # never start from the last labels here
    monkeypatch.setattr(cut_memory, "REUSE_MAX_BAND_FULL", 0.0)
    monkeypatch.setattr(cut_memory, "REUSE_MAX_REGION", 0.0)
    monkeypatch.setattr(graphcut, "COARSE_FULL_MAX_VOXELS", 2000)  # and cut the coarse levels banded too
    memory = CutMemory()
    graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory)
    assert len(memory.coarse_weights) >= 2  # the full level's coarse level and that one's
    h2 = np.clip(h + 0.2 * (np.arange(64) > 40), 0, 1).astype(np.float32)
    fresh = graph_cut(h2, image, scribbles, params=params, mode="banded")

    def no_colour_contrasts(*args, **kwargs):
        raise AssertionError("the coarse pair weights were computed again")

    monkeypatch.setattr(cut_levels._ImageLevel, "forward_weights", no_colour_contrasts)
    assert np.array_equal(graph_cut(h2, image, scribbles, params=params, mode="banded", memory=memory), fresh)
    with pytest.raises(AssertionError, match="computed again"):  # another image: nothing to reuse
        graph_cut(h2, image[::-1].copy(), scribbles, params=params, mode="banded", memory=memory)


def test_a_cut_keeps_its_coarse_weights_in_a_store_and_reads_them_back(tmp_path, monkeypatch):
    from ScribbleSegLib import feature_cache

    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=4)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0)
    with feature_cache.new_entry(tmp_path, "0" * 32) as tmp:  # the cache entry of this image's features
        np.save(tmp / "probability.npy", np.zeros(h.shape, np.float32))
        np.save(tmp / "features.npy", np.zeros(h.shape + (2,), np.float16))
    store = feature_cache.CutWeights.of(feature_cache.load(tmp_path, "0" * 32)[1])
    fresh = graph_cut(h, image, scribbles, params=params, mode="banded")

    def cut(params=params):
        measures = ImageMeasures()
        measures.weights_store = store
        return graph_cut(h, image, scribbles, params=params, mode="banded", measures=measures)

    np.testing.assert_array_equal(cut(), fresh)
    kept, = store.entry.glob("cut-weights-*.npy")

    def no_colour_contrasts(*args, **kwargs):
        raise AssertionError("the coarse pair weights were computed again")

    monkeypatch.setattr(cut_levels._ImageLevel, "forward_weights", no_colour_contrasts)
    mapped = []
    read = store.load
    monkeypatch.setattr(store, "load", lambda *args, **kwargs: mapped.append(kwargs["mapped"]) or read(*args, **kwargs))
    np.testing.assert_array_equal(cut(), fresh)  # read back: the same cut
    # A cut that keeps them for the next (a warm session's CutMemory) copies them; one that drops them after its
    # coarse level maps them.
    memory = graphcut.CutMemory()
    memory.measures.weights_store = store
    np.testing.assert_array_equal(graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory), fresh)
    assert mapped == [True, False]
    assert not any(isinstance(w, np.memmap) for w in memory.coarse_weights[h.shape])
    with pytest.raises(AssertionError, match="computed again"):  # another gamma scales them: not these
        cut(dataclasses.replace(params, gamma=3.0))
    assert kept.exists()


def test_banded_cut_recursing_over_several_levels(monkeypatch):
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=3)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0)
    full = graph_cut(h, image, scribbles, params=params, mode="full")
    monkeypatch.setattr(graphcut, "COARSE_FULL_MAX_VOXELS", 2000)  # coarse levels are banded again
    messages = []
    banded = graph_cut(h, image, scribbles, params=params, mode="banded",
                       progress=lambda stage, fraction, message: messages.append(message))
    assert sum("downsampling" in m for m in messages) >= 2
    assert dice(banded, full) >= 0.995
    assert np.all(banded[scribbles == 1] == 1) and np.all(banded[scribbles == 2] == 0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0)])
def test_coarse_energy_is_the_fine_energy_of_block_constant_labels(spacing):
    rng = np.random.default_rng(8)
    shape = (8, 12, 16)
    h, image, scribbles = random_case(rng, shape)
    params = GraphCutParams(**AS_GIVEN, gamma=1.3, sigma=0.4, delta=0.2, neighbourhood=6)
    levels = [graphcut._top_level(h, image, scribbles, spacing, params)]
    factors = []
    for _ in range(2):  # two levels down: the coarse energy is exact at each
        factors.append(cut_band._coarsen_factors(levels[-1].shape, levels[-1].spacing))
        levels.append(cut_band._downsample(levels[-1], factors[-1], None))
    coarse = levels[-1]
    for _ in range(5):
        labels = rng.integers(0, 2, coarse.shape).astype(bool)
        e = float(np.abs(labels - coarse.h.astype(np.float64)).sum())
        for axis in range(3):
            lo, hi = cut_levels._pair_slices(axis)
            e += float(coarse.forward_weights(axis, 0, coarse.shape[0])[lo][labels[lo] != labels[hi]].sum())
        fine = labels
        for f in reversed(factors):
            fine = fine.repeat(f[0], 0).repeat(f[1], 1).repeat(f[2], 2)
        n = np.prod([np.prod(f) for f in factors])
        assert e * n == pytest.approx(energy(fine, h, image, scribbles, spacing, params), rel=1e-5)


def test_a_heart_the_coarse_cut_drops_around_its_strokes_is_cut_again_at_full_resolution(caplog):
    # A square of its own colour whose edges lie inside the 2x2 blocks, not on their faces.  Along its outline
    # the pairs are cheap, but the faces of the blocks around it cross tissue of one colour: priced at those
    # faces, the square costs more outline than its data term gains, and the coarse cut drops it where the
    # full cut keeps it (at the paper's gamma 32 the bench's hearts went the same way).
    shape = (4, 32, 32)
    h = np.full(shape, 0.1, np.float32)
    image = np.full(shape + (3,), (235, 200, 220), np.uint8)
    h[:, 3:21, 3:21] = 0.9
    image[:, 3:21, 3:21] = (200, 60, 90)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[0, 10, 10] = 1
    scribbles[:, 30, 30] = 2
    params = GraphCutParams.paper(16.0)
    spacing = (2.0, 1.0, 1.0)  # thick sections: blocks of 1 x 2 x 2
    full = graph_cut(h, image, scribbles, spacing, params, mode="full")
    assert full[:, 3:21, 3:21].all() and full.sum() == 4 * 18 * 18  # the optimum: the square in every section
    level = graphcut._top_level(h, image, scribbles, spacing, params)
    coarse = cut_band._downsample(level, cut_band._coarsen_factors(level.shape, level.spacing), None)
    assert graphcut._cut_full(coarse, None, None).sum() <= 1  # the coarse cut keeps the stroked block at most
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        banded = graph_cut(h, image, scribbles, spacing, params, mode="banded")
    assert dice(banded, full) >= 0.999
    assert any("left out more heart around the heart strokes" in r.getMessage() for r in caplog.records)


def test_a_piece_apart_from_the_strokes_that_the_coarse_cut_drops_is_cut_again_at_full_resolution():
    # A stroked disc and, apart from it, a disc of radius 9 without strokes, both of their own colour, h 0.85
    # and 0.8 on them: the full cut keeps both; the coarse level, pricing the small disc's outline at block faces
    # that cross its uniform inside, drops it, and no band reached it before.
    rows, columns = 64, 112
    yy, xx = np.mgrid[:rows, :columns]
    large = (yy - 32) ** 2 + (xx - 30) ** 2 < 20 ** 2
    small = (yy - 32) ** 2 + (xx - 85) ** 2 < 9 ** 2
    grey = np.where(large | small, 190, 130)[None, ..., None].repeat(6, 0).repeat(3, -1)
    image = np.clip(grey + np.random.default_rng(0).integers(-8, 9, grey.shape), 0, 255).astype(np.uint8)
    h = np.where(large, 0.85, np.where(small, 0.8, 0.1)).astype(np.float32)[None].repeat(6, 0)
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[:, 32, 25:35] = 1
    scribbles[:, 2, :] = 2
    full = graph_cut(h, image, scribbles, params=GraphCutParams(), mode="full")
    assert full[:, small].all() and full[:, large].all()
    level = graphcut._top_level(h, image, scribbles, (1.0, 1.0, 1.0), GraphCutParams())
    coarse = cut_band._downsample(level, cut_band._coarsen_factors(level.shape, level.spacing), None)
    coarse_labels = graphcut._cut_full(coarse, None, None)
    assert not coarse_labels[:, 16, 42].any() and coarse_labels[:, 16, 15].all()  # small dropped, large kept
    banded = graph_cut(h, image, scribbles, params=GraphCutParams(), mode="banded")
    assert banded[:, small].mean() > 0.99
    assert dice(banded, full) >= 0.999


@pytest.mark.parametrize("neighbourhood", [6, 10])
def test_a_band_graph_weighed_on_threads_cuts_as_one_thread_builds_it(monkeypatch, neighbourhood):
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=6)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0, neighbourhood=neighbourhood)
    monkeypatch.setattr(runtime, "SLAB_VOXELS", 4096)  # a band of several chunks, each weighed on threads
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    built = {}
    for threads in (4, 1):
        monkeypatch.setattr(runtime, "MAX_SLAB_THREADS", threads)
        memory = CutMemory()
        labels = graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory)
        built[threads] = labels, memory.region
    # The groups of pairs are added to the graph in the same order either way: the same graph, the same cut.
    np.testing.assert_array_equal(built[4][0], built[1][0])
    assert built[4][1].nodes == built[1][1].nodes > 0
    np.testing.assert_array_equal(built[4][1].data, built[1][1].data)


def test_slabs_in_threads_give_the_coarse_level_of_one_slab_at_a_time(monkeypatch):
    rng = np.random.default_rng(9)
    shape = (12, 20, 24)
    h, image, scribbles = random_case(rng, shape)
    scribbles[3, 2:5, 2:9], scribbles[8, 10:12, 4:20] = 1, 2
    monkeypatch.setattr(runtime, "SLAB_VOXELS", 2 * 20 * 24)  # 6 slabs of 2 planes
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    coarse = {}
    for threads in (4, 1):
        monkeypatch.setattr(runtime, "MAX_SLAB_THREADS", threads)
        level = graphcut._top_level(h, image, scribbles, (1.0, 1.0, 1.0), GraphCutParams(neighbourhood=10))
        coarse[threads] = cut_band._downsample(level, (2, 2, 2), None)
    # Each slab runs the same code either way; a slab written to the wrong planes, or a thread reading
    # another's kept colour features, would differ by far more than float rounding.
    np.testing.assert_allclose(coarse[4].h, coarse[1].h, rtol=1e-6)
    np.testing.assert_array_equal(coarse[4].seeds, coarse[1].seeds)
    for a, b in zip(coarse[4].weights, coarse[1].weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("boundary", [True, False])
def test_what_changed_since_the_last_cut_is_found_the_same_in_slab_threads(monkeypatch, boundary):
    rng = np.random.default_rng(4)
    shape = (12, 20, 24)
    h, image, scribbles = random_case(rng, shape)
    scribbles[3, 2:5, 2:9], scribbles[8, 10:12, 4:20] = 1, 2
    memory = CutMemory()
    graph_cut(h, image, scribbles, memory=memory)
    moved = np.clip(h + rng.normal(0, 0.2, shape).astype(np.float32), 0, 1)
    scribbles[3] = 0  # a stroke taken away
    scribbles[10, 2:6, 2:6] = 1
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    found = {}
    for threads, slab in ((1, 2**20), (4, 2 * 20 * 24)):  # one slab; 6 slabs of 2 planes on 4 threads
        monkeypatch.setattr(runtime, "MAX_SLAB_THREADS", threads)
        monkeypatch.setattr(runtime, "SLAB_VOXELS", slab)
        level = graphcut._top_level(moved, image, scribbles, (1.0, 1.0, 1.0), GraphCutParams())
        found[threads] = cut_memory._changed_blocks(level, memory, memory.labels, (2, 2, 2), boundary=boundary)
    assert found[1].any() and not found[1].all()
    np.testing.assert_array_equal(found[4], found[1])


def test_the_log_data_term_in_slab_threads_is_the_clipped_logit(monkeypatch):
    h = np.random.default_rng(6).random((5, 7, 9)).astype(np.float32)
    h[0, 0, :3] = (0.0, 1.0, 0.5)
    monkeypatch.setattr(runtime, "SLAB_VOXELS", 50)  # 7 slabs, the last one short
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    p = np.clip(h.astype(np.float64), 1e-12, 1 - 1e-12)
    expected = 0.5 + np.clip(np.log(p) - np.log1p(-p), -graphcut.LOGIT_CLIP, graphcut.LOGIT_CLIP) / (
        2 * graphcut.LOGIT_CLIP)
    np.testing.assert_allclose(graphcut.log_data_term(h), expected, atol=1e-6)


def test_the_log_data_term_written_over_its_input_is_the_one_made_anew(monkeypatch):
    h = np.random.default_rng(6).random((5, 7, 9)).astype(np.float32)
    monkeypatch.setattr(runtime, "SLAB_VOXELS", 50)
    expected = graphcut.log_data_term(h)
    assert graphcut.log_data_term(h, out=h) is h
    np.testing.assert_array_equal(h, expected)
    with pytest.raises(ScribbleSegError, match="out must be"):
        graphcut.log_data_term(h, out=np.empty(h.shape, np.float64))


@pytest.mark.parametrize("left_out, named",
                         [(1, "heart (1)"), (2, "background (2)"), (None, "heart (1) and background")])
def test_a_cut_needs_strokes_of_both_classes_on_any_sections(left_out, named):
    h, image, scribbles, _ = ellipsoid_case((12, 48, 48), seed=4)
    strokes = np.zeros_like(scribbles)
    strokes[0][scribbles[0] == 1] = 1  # heart on one section, background on another
    strokes[6][scribbles[6] == 2] = 2
    assert graph_cut(h, image, strokes, params=GraphCutParams(gamma=2.0)).any()
    strokes[strokes == (left_out or 1)] = 0
    strokes[strokes == (left_out or 2)] = 0
    with pytest.raises(ScribbleSegError, match=rf"have no {re.escape(named)}"):
        graph_cut(h, image, strokes)


def test_a_cut_with_the_stroke_pull_and_the_log_data_term_leaves_h_as_it_was_and_reuses_its_scratch():
    h, image, scribbles, _ = ellipsoid_case((12, 48, 48), seed=4)
    params = GraphCutParams(gamma=2.0)  # the defaults' pull and log data term
    assert params.seed_reach > 0 and params.data_term == "log"
    given = h.copy()
    fresh = graph_cut(h, image, scribbles, params=params, mode="banded")
    np.testing.assert_array_equal(h, given)  # the pulled copy took the data term, not h
    memory = CutMemory()
    np.testing.assert_array_equal(graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory), fresh)
    scratch = memory.scratch(h.shape)
    graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory)
    assert memory.scratch(h.shape) is scratch  # the same memory from run to run
    np.testing.assert_array_equal(h, given)
    # Without the pull, the data term goes to the scratch array: h is still the caller's.
    plain = dataclasses.replace(params, seed_reach=0.0)
    graph_cut(h, image, scribbles, params=plain, mode="banded", memory=memory)
    np.testing.assert_array_equal(h, given)


def test_a_cut_memory_keeps_no_scratch_array_for_a_large_volume(monkeypatch):
    h, image, scribbles, _ = ellipsoid_case((12, 48, 48), seed=4)
    params = GraphCutParams(gamma=2.0)
    fresh = graph_cut(h, image, scribbles, params=params, mode="banded")
    monkeypatch.setattr(cut_memory, "SCRATCH_MAX_BYTES", 4 * h.size - 1)
    memory = CutMemory()
    assert memory.scratch(h.shape) is None
    np.testing.assert_array_equal(graph_cut(h, image, scribbles, params=params, mode="banded", memory=memory), fresh)
    for plain in (params, dataclasses.replace(params, seed_reach=0.0)):  # warm, with and without the pull
        graph_cut(h, image, scribbles, params=plain, mode="banded", memory=memory)
    assert memory._scratch is None


def test_in_plane_only_downsampling_for_thick_sections():
    assert cut_band._coarsen_factors((30, 100, 100), (4.0, 1.0, 1.0)) == (1, 2, 2)
    assert cut_band._coarsen_factors((30, 100, 100), (1.2, 1.0, 1.0)) == (2, 2, 2)
    h, image, scribbles, _ = ellipsoid_case((10, 64, 64), seed=4)
    spacing = (3.0, 1.0, 1.0)
    full = graph_cut(h, image, scribbles, spacing, SYNTH, mode="full")
    banded = graph_cut(h, image, scribbles, spacing, SYNTH, mode="banded")
    assert dice(banded, full) >= 0.999


def test_spacing_weights_scale_with_the_inverse_section_thickness():
    shape = (4, 5, 6)
    h = np.full(shape, 0.5, np.float32)
    image = np.full(shape + (3,), 100, np.uint8)  # no contrast: every pair weighs gamma * s * (1 + delta)
    scribbles = np.zeros(shape, np.uint8)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0, delta=0.5, neighbourhood=6)
    z_cut = np.zeros(shape, np.uint8)
    z_cut[2:] = 1  # a boundary across z: 5 * 6 pairs
    x_cut = np.zeros(shape, np.uint8)
    x_cut[..., 3:] = 1  # a boundary across x: 4 * 5 pairs
    data = 0.5 * h.size
    for spacing, s_z in (((1.0, 1.0, 1.0), 1.0), ((2.0, 1.0, 1.0), 0.5), ((4.0, 2.0, 2.0), 0.5)):
        assert energy(z_cut, h, image, scribbles, spacing, params) == pytest.approx(data + 3.0 * s_z * 30)
        assert energy(x_cut, h, image, scribbles, spacing, params) == pytest.approx(data + 3.0 * 20)
    # Per unit of area the two boundaries cost the same: 30 faces of 1 x 1 mm vs 20 faces of 2 x 1 mm.
    assert (energy(z_cut, h, image, scribbles, (2.0, 1.0, 1.0), params) - data) / 30 == pytest.approx(
        (energy(x_cut, h, image, scribbles, (2.0, 1.0, 1.0), params) - data) / (20 * 2))


def test_thick_sections_smooth_less_across_z():
    shape = (2, 8, 8)
    h = np.empty(shape, np.float32)
    h[0], h[1] = 0.9, 0.4  # section 1 leans to background by 0.2 per voxel
    image = np.full(shape + (3,), 120, np.uint8)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[0, 4, 4] = 1
    scribbles[1, 0, 0] = 2
    image[1, 0, 0] = (255, 255, 255)  # the background seed has no pull on its neighbours (delta = 0)
    image[0, 0, 0] = (0, 0, 0)
    params = GraphCutParams(**AS_GIVEN, gamma=0.5, sigma=0.1, delta=0.0, data_term="linear")
    # Isotropic: a z pair weighs 0.5 > 0.2, so section 1 follows section 0.  Sections 4x thicker: 0.125 < 0.2.
    for mode in ("full", "banded"):
        iso = graph_cut(h, image, scribbles, (1.0, 1.0, 1.0), params, mode=mode)
        thick = graph_cut(h, image, scribbles, (4.0, 1.0, 1.0), params, mode=mode)
        assert iso[1, 4, 4] == 1 and iso[0].all()
        assert thick[1, 4, 4] == 0 and thick[0].all()


def test_rgb_contrast_sees_hue_edges_that_luminance_misses():
    shape = (2, 4, 4)
    h = np.full(shape, 0.5, np.float32)
    image = np.zeros(shape + (3,), np.uint8)
    image[:, :2] = (200, 100, 100)
    image[:, 2:] = (100, 151, 100)  # about the same BT.601 luminance, a different hue
    scribbles = np.zeros(shape, np.uint8)
    labels = np.zeros(shape, np.uint8)
    labels[:, 2:] = 1
    rgb = energy(labels, h, image, scribbles, params=GraphCutParams(colour="rgb"))
    luminance = energy(labels, h, image, scribbles, params=GraphCutParams(colour="luminance"))
    assert rgb < luminance - 1.0


def test_grey_and_float_images():
    h, image, scribbles, _ = ellipsoid_case((8, 32, 32), seed=5)
    grey = image.mean(axis=3).astype(np.uint8)
    a = graph_cut(h, grey, scribbles, params=SYNTH, mode="full")
    b = graph_cut(h, grey.astype(np.float32) / 255, scribbles, params=SYNTH, mode="full")
    np.testing.assert_array_equal(a, b)
    c = graph_cut(h, image, scribbles, params=GraphCutParams(gamma=1.0, colour="luminance", **AS_GIVEN), mode="full")
    assert dice(a, c) > 0.99


def test_inputs_are_not_modified():
    h, image, scribbles, _ = ellipsoid_case((8, 32, 32), seed=6)
    copies = [a.copy() for a in (h, image, scribbles)]
    graph_cut(h, image, scribbles, params=SYNTH, mode="banded")
    for a, b in zip((h, image, scribbles), copies):
        np.testing.assert_array_equal(a, b)


def test_nan_in_h_is_a_clear_error():
    h, image, scribbles, _ = ellipsoid_case((4, 16, 16))
    for bad in (np.nan, np.inf, -np.inf):
        h[1, 2, 3] = bad
        with pytest.raises(ScribbleSegError, match="contains 1 NaN or infinite"):
            graph_cut(h, image, scribbles)
    h[1, 2, 3] = 1.5
    with pytest.raises(ScribbleSegError, match=r"\[0, 1\]"):
        graph_cut(h, image, scribbles)


@pytest.mark.parametrize("keep, missing", [(1, "background"), (2, "heart"), (0, "heart .* and background")])
def test_scribbles_need_both_classes(keep, missing):
    h, image, scribbles, _ = ellipsoid_case((4, 16, 16))
    scribbles[scribbles != keep] = 0
    with pytest.raises(ScribbleSegError, match=f"no {missing}"):
        graph_cut(h, image, scribbles)


@pytest.mark.parametrize("change, message", [
    (lambda a: {"scribbles": a["scribbles"][:-1]}, "scribbles have shape"),
    (lambda a: {"scribbles": a["scribbles"] * 2}, "0 \\(none\\)"),
    (lambda a: {"image": a["image"][..., :2]}, "image must be"),
    (lambda a: {"h": (a["h"] > 0.5).astype(np.uint8)}, "float array"),
    (lambda a: {"spacing_zyx": (1.0, 0.0, 1.0)}, "spacing"),
    (lambda a: {"spacing_zyx": None}, "spacing must be three positive numbers"),
    (lambda a: {"image": a["image"].astype(np.float32) * 255}, "a float image must lie in \\[0, 1\\]"),
    (lambda a: {"mode": "fast"}, "mode"),
    (lambda a: {"params": {"gamma": 8}}, "params must be a GraphCutParams or None, got dict"),
    (lambda a: {"memory_budget": "1GB"}, "memory budget must be a positive number of bytes"),
    (lambda a: {"progress": 1}, "progress must be a callable"),
    (lambda a: {"h": a["h"][:-1]}, "h has shape \\(3, 16, 16\\), the image and the scribbles \\(4, 16, 16\\)"),
])
def test_bad_inputs_are_clear_errors(change, message):
    h, image, scribbles, _ = ellipsoid_case((4, 16, 16))
    args = {"h": h, "image": image, "scribbles": scribbles}
    args.update(change(args))
    with pytest.raises(ScribbleSegError, match=message):
        graph_cut(**args)


def test_bad_parameters_are_clear_errors():
    with pytest.raises(ScribbleSegError, match="sigma"):
        GraphCutParams(sigma=0.0)
    with pytest.raises(ScribbleSegError, match="gamma"):
        GraphCutParams(gamma=float("nan"))
    with pytest.raises(ScribbleSegError, match="gamma must be a finite non-negative number, got True"):
        GraphCutParams(gamma=True)  # a flag where a number belongs (neighbourhood=True is refused too)
    with pytest.raises(ScribbleSegError, match="colour"):
        GraphCutParams(colour="hsv")
    # Finite but beyond what the capacities hold: the max-flow would never end, or divide by zero.
    with pytest.raises(ScribbleSegError, match="delta must be at most"):
        GraphCutParams(delta=1e308)
    with pytest.raises(ScribbleSegError, match="sigma must be at least"):
        GraphCutParams(sigma=1e-300)


def test_a_sigma_at_its_lower_bound_stays_there_when_scaled_to_a_soft_image():
    from ScribbleSegLib.cut_scaling import scaled_to_contrast
    from ScribbleSegLib.graphcut import MIN_SIGMA

    flat = np.full((1, 8, 8, 3), 128, np.uint8)
    assert scaled_to_contrast(GraphCutParams(sigma=MIN_SIGMA), flat).sigma == MIN_SIGMA


def test_memory_estimates():
    voxels = 64 * 512 * 512
    full = estimate_full_cut_bytes((64, 512, 512))
    assert 257 * voxels < full < 300 * voxels + 2**30
    assert estimate_banded_cut_bytes((64, 512, 512)) * 3 < full
    # The in-plane diagonals add four arcs per band voxel.
    extra = estimate_banded_cut_bytes((64, 512, 512), neighbourhood=10) - estimate_banded_cut_bytes((64, 512, 512))
    per_band_voxel = graphcut.ASSUMED_BAND_FRACTION * cut_band.DIAGONAL_BYTES_PER_VOXEL
    assert extra == pytest.approx(per_band_voxel * voxels, rel=0.01)
    # Thick sections are only downsampled in-plane, so the coarse level is larger.
    assert estimate_banded_cut_bytes((64, 512, 512), (4.0, 1.0, 1.0)) > estimate_banded_cut_bytes((64, 512, 512))
    assert graphcut.available_memory() > 0


def test_memory_budget_is_checked_before_the_cut():
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=2)
    full_bytes, band_bytes = estimate_full_cut_bytes(h.shape), estimate_banded_cut_bytes(h.shape)
    assert band_bytes < full_bytes
    between = (full_bytes + band_bytes) // 2
    with pytest.raises(ScribbleSegError, match="memory budget"):
        graph_cut(h, image, scribbles, params=SYNTH, mode="full", memory_budget=between)
    with pytest.raises(ScribbleSegError, match="memory budget"):
        graph_cut(h, image, scribbles, params=SYNTH, mode="auto", memory_budget=band_bytes // 2)
    messages = []
    auto = graph_cut(h, image, scribbles, params=SYNTH, mode="auto", memory_budget=between,
                     progress=lambda stage, fraction, message: messages.append(message))
    assert any("downsampling" in m for m in messages)  # fell back to the banded cut
    assert dice(auto, graph_cut(h, image, scribbles, params=SYNTH, mode="full")) >= 0.999


def test_a_coarse_to_fine_cut_is_refused_by_its_true_band_not_by_the_assumed_one(monkeypatch):
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=2)
    # The estimates of so small a volume are then its own (graphcut's estimates and the band's own check).
    monkeypatch.setattr(graphcut, "WORKING_BYTES", 0)
    monkeypatch.setattr(cut_band, "WORKING_BYTES", 0)
    # An assumption above this volume's true band (about a third of its voxels), as 15 % is above a large
    # stack's (a few per cent).
    monkeypatch.setattr(graphcut, "ASSUMED_BAND_FRACTION", 0.9)
    free = graph_cut(h, image, scribbles, params=SYNTH, mode="banded")
    before_band = graphcut._banded_bytes(h.shape, (1.0, 1.0, 1.0), 0.0, 2**40, 6)
    assumed = estimate_banded_cut_bytes(h.shape, band_fraction=0.9, memory_budget=2**40)
    assert before_band < assumed
    # A budget the assumed band exceeds, but the band the coarse cut places fits: cut, as without a budget.
    np.testing.assert_array_equal(graph_cut(h, image, scribbles, params=SYNTH, mode="banded",
                                            memory_budget=(before_band + assumed) // 2), free)
    # Less than the coarse levels need: refused before any work.
    with pytest.raises(ScribbleSegError, match="even the coarse levels of a coarse-to-fine cut"):
        graph_cut(h, image, scribbles, params=SYNTH, mode="banded", memory_budget=before_band - 1)
    # A budget the true band exceeds: refused when the band is placed, naming it.
    with pytest.raises(ScribbleSegError, match="the band around the coarse boundary"):
        graph_cut(h, image, scribbles, params=SYNTH, mode="banded", memory_budget=before_band + 1)


def test_a_cut_that_cannot_fit_is_refused_before_any_work_with_the_cut_s_own_message():
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=2)
    before_band = graphcut._banded_bytes(h.shape, (1.0, 1.0, 1.0), 0.0, 2**40, 6)
    for mode, budget in (("banded", before_band - 1), ("full", estimate_full_cut_bytes(h.shape) - 1)):
        with pytest.raises(ScribbleSegError) as cut:
            graph_cut(h, image, scribbles, params=SYNTH, mode=mode, memory_budget=budget)
        with pytest.raises(ScribbleSegError) as ahead:
            graphcut.check_cut_fits(h.shape, params=SYNTH, mode=mode, memory_budget=budget)
        assert str(ahead.value) == str(cut.value)
    graphcut.check_cut_fits(h.shape, params=SYNTH, mode="banded", memory_budget=before_band)  # fits: no error
    # Thick sections keep z whole: the coarse level is larger, and the check follows the spacing as the cut does.
    thick = graphcut._banded_bytes(h.shape, (5.0, 1.0, 1.0), 0.0, 2**40, 6)
    assert thick > before_band
    with pytest.raises(ScribbleSegError, match="even the coarse levels"):
        graphcut.check_cut_fits(h.shape, (5.0, 1.0, 1.0), mode="banded", memory_budget=thick - 1)
    with pytest.raises(ScribbleSegError, match="mode"):
        graphcut.check_cut_fits(h.shape, mode="fast")


def test_progress_and_cancel():
    h, image, scribbles, _ = ellipsoid_case((8, 32, 32))
    seen = []
    graph_cut(h, image, scribbles, params=SYNTH, mode="banded", progress=lambda *args: seen.append(args))
    fractions = [fraction for _, fraction, _ in seen]
    assert {stage for stage, _, _ in seen} == {"graph cut"}
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        graph_cut(h, image, scribbles, params=SYNTH, cancel=token)


@pytest.mark.parametrize("trial", range(4))
def test_the_10_neighbourhood_cut_is_the_brute_force_minimum(trial):
    from itertools import product

    rng = np.random.default_rng(100 + trial)
    shape = (1, 3, 4) if trial % 2 else (2, 2, 3)
    h, image, scribbles = random_case(rng, shape)
    scribbles.flat[rng.choice(h.size, 2, replace=False)] = (1, 2)
    params = GraphCutParams(**AS_GIVEN, gamma=(0.3, 0.8)[trial % 2], sigma=0.3, delta=0.1, neighbourhood=10)
    best = min(energy(np.array(bits, np.uint8).reshape(shape), h, image, scribbles, params=params)
               for bits in product((0, 1), repeat=h.size))
    labels = graph_cut(h, image, scribbles, params=params, mode="full")
    assert energy(labels, h, image, scribbles, params=params) == pytest.approx(best, abs=1e-5)


def test_a_45_degree_boundary_costs_its_euclidean_length_with_diagonals():
    # A straight boundary at 45 degrees vs an axis-aligned one of the same Euclidean length.
    n = 40
    h = np.full((1, n, n), 0.5, np.float32)
    image = np.zeros((1, n, n, 3), np.uint8)
    none = np.zeros((1, n, n), np.uint8)
    yy, xx = np.mgrid[0:n, 0:n]
    axis = (xx < n // 2)[None].astype(np.uint8)  # boundary length n
    diagonal = (xx + yy < n)[None].astype(np.uint8)  # boundary length n * sqrt 2
    for nb, ratio in ((6, 2.0), (10, np.sqrt(2))):  # L1 counts 2n pairs on the diagonal; Crofton about n sqrt 2
        p = GraphCutParams(**AS_GIVEN, gamma=1.0, sigma=1.0, delta=0.0, neighbourhood=nb)
        cost = [energy(lab, h, image, none, params=p) - 0.5 * h.size for lab in (axis, diagonal)]
        assert cost[1] / cost[0] == pytest.approx(ratio, rel=0.06), nb


def test_the_10_neighbourhood_falls_back_where_it_cannot_cut(caplog):
    h, image, scribbles, _ = ellipsoid_case((6, 24, 24), 0.3, 0)
    params = GraphCutParams(gamma=1.0, neighbourhood=10)
    with caplog.at_level("INFO", logger="ScribbleSegLib.graphcut"):
        oblong = graph_cut(h, image, scribbles, spacing_zyx=(1.0, 1.0, 2.0), params=params)
        tight = graph_cut(h, image, scribbles, params=params, mode="full",
                          memory_budget=graphcut.estimate_full_cut_bytes(h.shape, 6))
    assert oblong.shape == tight.shape == h.shape
    notes = [r.getMessage() for r in caplog.records]
    assert any("square pixels" in m for m in notes)
    assert any("a full cut" in m and "with in-plane diagonals needs" in m for m in notes)
    with pytest.raises(ScribbleSegError, match="neighbourhood"):
        GraphCutParams(neighbourhood=8)


def test_a_coarse_to_fine_cut_keeps_the_diagonals_when_its_true_band_holds_them(caplog, monkeypatch):
    """The diagonals are decided on the band the coarse cut placed, not on the assumed 15 % of the voxels."""
    h, image, scribbles, _ = ellipsoid_case((32, 128, 128), 0.3, 0)  # noisy enough for 6 and 10 to differ
    params = GraphCutParams(gamma=1.0, neighbourhood=10)
    messages = []
    free = graph_cut(h, image, scribbles, params=params, mode="banded",
                     progress=lambda stage, fraction, message: messages.append(message))
    largest = max(int(m.split("band of ")[1].split()[0]) for m in messages if "band of " in m)
    # Assume a band larger than this one, and a budget halfway between the estimates with and without the
    # diagonals: it holds the true band with diagonals, but not the assumed one.
    six, ten = cut_band._band_bytes_per_voxel(6), cut_band._band_bytes_per_voxel(10)
    assumed = 2 * largest * ten / ((six + ten) * h.size) + 0.01
    monkeypatch.setattr(graphcut, "ASSUMED_BAND_FRACTION", assumed)
    estimates = [graphcut._banded_bytes(h.shape, (1.0, 1.0, 1.0), assumed, 2**40, nb) for nb in (6, 10)]
    tight = sum(estimates) // 2
    assert estimates[0] < tight < estimates[1] and largest * ten + cut_band.WORKING_BYTES < tight
    with caplog.at_level("INFO", logger="ScribbleSegLib.graphcut"):
        kept = graph_cut(h, image, scribbles, params=params, mode="banded", memory_budget=tight)
    assert not any("6-neighbourhood" in r.getMessage() for r in caplog.records)
    assert np.array_equal(kept, free)
    # A band that cannot hold the diagonals (their arcs made very dear) is cut with 6 neighbours, and says so.
    six = graph_cut(h, image, scribbles, params=dataclasses.replace(params, neighbourhood=6), mode="banded")
    per_voxel = cut_band._band_bytes_per_voxel
    monkeypatch.setattr(cut_band, "_band_bytes_per_voxel", lambda nb: per_voxel(nb) * (10**6 if nb == 10 else 1))
    caplog.clear()
    with caplog.at_level("INFO", logger="ScribbleSegLib.graphcut"):
        dropped = graph_cut(h, image, scribbles, params=params, mode="banded")
    assert any("the band of" in r.getMessage() and "using the 6-neighbourhood" in r.getMessage()
               for r in caplog.records)
    assert np.array_equal(dropped, six) and not np.array_equal(dropped, free)


@pytest.mark.parametrize("grown", [False, True])
@pytest.mark.parametrize("neighbourhood", [6, 10])
@pytest.mark.parametrize("blocks", [(0, 4), (0, 1), (1, 3), (2, 4)])  # corner-to-corner, side by side, ...
def test_a_band_re_cut_is_the_minimum_with_the_rest_fixed(blocks, neighbourhood, grown):
    # Two of the six 1x2x2 blocks of a 1x4x6 volume are re-cut, the rest fixed: brute force over their 8 voxels.
    # A weak boundary term against a data term near 1/2, so that data and pairs compete; 8 random cases each.
    # grown: the graph first holds one block, cut with other data and seeds, then gets the second block and
    # this data term and seeds, and its max-flow starts from the last one (a warm session's next cut).
    from itertools import product

    shape = (1, 4, 6)
    mask = np.zeros((1, 2, 3), bool)
    mask.flat[list(blocks)] = True
    in_band = mask.repeat(2, axis=1).repeat(2, axis=2)
    params = GraphCutParams(**AS_GIVEN, gamma=0.1, sigma=0.3, delta=0.1, neighbourhood=neighbourhood)
    for trial in range(8):
        rng = np.random.default_rng(10 * trial + sum(blocks))
        h = (0.5 + 0.4 * (rng.random(shape) - 0.5)).astype(np.float32)
        image = rng.integers(100, 140, shape + (3,)).astype(np.uint8)
        scribbles = np.zeros(shape, np.uint8)
        scribbles[0, 0, 0], scribbles[0, 3, 5] = 1, 2
        start = rng.integers(0, 2, shape).astype(np.uint8)
        energies = {}
        for bits in product((0, 1), repeat=8):
            labels = start.copy()
            labels[in_band] = bits
            energies[bits] = energy(labels, h, image, scribbles, params=params)
        level = graphcut._top_level(h, image, scribbles, (1.0, 1.0, 1.0), params)
        labels = start.copy()
        region = cut_band._Region(level, (1, 2, 2), 2**30)
        if grown:
            other_scribbles = np.zeros(shape, np.uint8)
            other_scribbles[0, 1, 1], other_scribbles[0, 2, 4] = 2, 1  # against this case's seeds
            other = graphcut._top_level(rng.random(shape).astype(np.float32), image, other_scribbles,
                                        (1.0, 1.0, 1.0), params)
            first = np.zeros_like(mask)
            first.flat[blocks[0]] = True
            region.add(other, labels, first)
            region.solve(labels)
            assert region.refresh(level) > 0
        region.add(level, labels, mask)
        region.solve(labels)
        assert np.array_equal(labels[~in_band], start[~in_band])
        assert energies[tuple(labels[in_band])] == pytest.approx(min(energies.values()), abs=1e-6), trial


def test_a_grown_band_finds_its_edge_from_the_pairs_it_kept(monkeypatch):
    # The pairs that lead out of the band are kept from the first max-flow; after the band grows, the edge they
    # give must be the one the whole chunks' faces give.
    rng = np.random.default_rng(12)
    shape = (6, 16, 16)
    h = rng.random(shape).astype(np.float32)
    image = rng.integers(60, 200, shape + (3,)).astype(np.uint8)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[0, 0, 0], scribbles[5, 15, 15] = 1, 2
    level = graphcut._top_level(h, image, scribbles, (1.0, 1.0, 1.0), GraphCutParams(**AS_GIVEN, gamma=0.3))
    blocks = np.zeros((6, 8, 8), bool)
    steps = [blocks.copy() for _ in range(3)]
    steps[0][1:4, 2:5, 2:5] = True
    steps[1][2:5, 1:6, 4:7] = True
    steps[2][0:6, 5:8, 0:3] = True
    runs = {}
    for kept in (True, False):
        if not kept:  # every max-flow looks at the faces of every chunk again
            monkeypatch.setattr(cut_band._Region, "_edge_pairs",
                                lambda self, index, chunk, outside: [
                                    (chunk.flat[face][sel & outside[u_block]], u[sel & outside[u_block]],
                                     u_block[sel & outside[u_block]])
                                    for _, _, face, sel, u, u_block, _ in chunk.face_pairs(ids=False)])
        labels = (rng.random(shape) < 0.5).astype(np.uint8) if kept else runs[True][0].copy()
        start = labels.copy()
        region = cut_band._Region(level, (1, 2, 2), 2**30)
        contacts = []
        for mask in steps:
            region.add(level, labels, mask)
            contacts.append(region.solve(labels))
        runs[kept] = start, labels, contacts
    np.testing.assert_array_equal(runs[True][1], runs[False][1])
    assert sum(c.any() for c in runs[True][2]) >= 2  # the edge was touched: something to find
    for a, b in zip(runs[True][2], runs[False][2]):
        np.testing.assert_array_equal(a, b)


def _discs(radius, centres, size=96):
    """One section of discs of ``radius`` px: mask, a confident h and a faint contrast image."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((1, size, size), bool)
    for cy, cx in centres:
        mask[0] |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    h = np.where(mask, 0.95, 0.05).astype(np.float32)
    image = np.where(mask[..., None], 160, 170).astype(np.uint8).repeat(3, axis=3)
    return mask, h, image


def test_small_objects_the_network_found_survive_the_cut():
    # Ten discs of radius 5 px with h = 0.95 and a faint edge; only one is seeded.  With gamma 8 as
    # given, the outline costs more than the area's data term: unseeded discs vanish.
    centres = [(16 + 32 * (k // 3), 16 + 32 * (k % 3)) for k in range(9)]
    mask, h, image = _discs(5, centres)
    scribbles = np.zeros(mask.shape, np.uint8)
    scribbles[0, 16, 16] = 1
    scribbles[0, 0, 0] = 2
    fixed = graph_cut(h, image, scribbles, params=GraphCutParams(**AS_GIVEN), mode="full")
    scaled = graph_cut(h, image, scribbles, params=GraphCutParams(), mode="full")
    assert (fixed > 0).sum() < 0.5 * mask.sum()
    assert ((scaled > 0) & mask).sum() / ((scaled > 0) | mask).sum() > 0.9


@pytest.mark.parametrize("name", ["reference_radius", "reference_unsure", "reference_objects",
                                  "reference_contrast"])
def test_references_are_checked(name):
    for bad in (0, -1.0, float("inf"), "16"):
        with pytest.raises(ScribbleSegError, match=name):
            GraphCutParams(**{name: bad})


def test_soft_edges_still_count_as_edges():
    # A large disc (radius 20 px: gamma is not scaled) with a blurred, faint edge, and h = 0.7 that spills
    # 4 px past it.  With sigma as given the edge costs nearly what flat tissue costs and gamma 8 erases the
    # disc; with sigma scaled to the image's contrast the edge is cheap, and the cut follows it.
    from ScribbleSegLib.phantom import _blur_sections

    yy, xx = np.mgrid[:128, :128]
    truth = ((yy - 64) ** 2 + (xx - 64) ** 2 < 20 ** 2)[None]
    wide = ((yy - 64) ** 2 + (xx - 64) ** 2 < 24 ** 2)[None]
    soft = _blur_sections(truth.astype(np.float32), 1.5)
    image = np.clip(200 - 30 * soft, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=3)
    h = np.where(wide, 0.7, 0.1).astype(np.float32)
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 64, 64], scribbles[0, 2, 2] = 1, 2
    contrast = cut_scaling.image_contrast(image)
    assert contrast < graphcut.DEFAULT_REFERENCE_CONTRAST
    scaled_sigma = cut_scaling.scaled_to_contrast(GraphCutParams(), image).sigma
    assert scaled_sigma < GraphCutParams().sigma
    as_given = graph_cut(h, image, scribbles, params=GraphCutParams(reference_contrast=None), mode="full") > 0
    scaled = graph_cut(h, image, scribbles, params=GraphCutParams(), mode="full") > 0

    def iou(a):
        return (a & truth).sum() / (a | truth).sum()

    assert iou(as_given) < 0.5
    assert iou(scaled) > 0.95


def _stack_with_a_blurred_section():
    """Five sections of a disc with a sharp edge, the middle one blurred (Gaussian, 2 px): h, image, scribbles."""
    from ScribbleSegLib.phantom import _blur_sections

    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 16 ** 2).astype(np.float32)
    planes = np.stack([disc] * 5)
    planes[2] = _blur_sections(disc[None], 2.0)[0]
    image = np.clip(220 - 120 * planes, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=3)
    h = np.where(planes > 0.5, 0.8, 0.2).astype(np.float32)
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[:, 32, 32], scribbles[:, 2, 2] = 1, 2
    return h, image, scribbles


def test_a_section_softer_than_the_stack_gets_a_sigma_of_its_own():
    """A blurred section's in-plane edge weights fall to what its own contrast says; the sharp sections' weights
    and the pairs across sections (the sharper section's sigma) stay as with one sigma for the stack."""
    h, image, scribbles = _stack_with_a_blurred_section()
    sharpness = cut_scaling.section_sharpness(image, "rgb", graphcut.DEFAULT_SECTION_FOCUS)
    assert sharpness is not None and sharpness[2] > 1 and np.all(sharpness[[0, 1, 3, 4]] == 1)
    levels = {sc: graphcut._top_level(h, image, scribbles, (1.0, 1.0, 1.0),
                                      GraphCutParams(**{**AS_GIVEN, "section_focus": sc}))
              for sc in (None, graphcut.DEFAULT_SECTION_FOCUS)}
    one, own = (levels[sc].forward_weights(2, 0, 5) for sc in levels)
    edge = (2, 32, slice(14, 18))  # the blurred section's x pairs across the disc's left edge on row 32
    assert np.all(own[edge] < one[edge])  # its edge counts as an edge again
    np.testing.assert_array_equal(own[[0, 1, 3, 4]], one[[0, 1, 3, 4]])
    np.testing.assert_array_equal(levels[None].forward_weights(0, 0, 5),
                                  levels[graphcut.DEFAULT_SECTION_FOCUS].forward_weights(0, 0, 5))


def test_a_band_reads_the_weights_of_a_soft_section_as_the_grid_does():
    """The band re-cut (pair_weights, by voxel index) and the full cut (forward_weights, by slab) weigh every
    pair alike, along every axis and the in-plane diagonals."""
    h, image, scribbles = _stack_with_a_blurred_section()
    level = graphcut._top_level(h, image, scribbles, (1.0, 1.0, 1.0),
                                GraphCutParams(**{**AS_GIVEN, "section_focus": 0.92}))
    assert level.sharpness is not None
    Z, Y, X = level.shape
    index = np.arange(Z * Y * X).reshape(Z, Y, X)
    for axis in range(3):
        lo, hi = cut_levels._pair_slices(axis)
        grid = level.forward_weights(axis, 0, Z)[lo]
        np.testing.assert_allclose(level.pair_weights(axis, index[lo].ravel(), index[hi].ravel()), grid.ravel(),
                                   rtol=1e-6)
    grid = level.diagonal_weights(1, 1, 0, Z)[:, :Y - 1, :X - 1]
    np.testing.assert_allclose(level.pair_weights(2, index[:, :-1, :-1].ravel(), index[:, 1:, 1:].ravel())
                               * cut_levels._CROFTON_DIAGONAL, grid.ravel(), rtol=1e-6)


def test_a_stack_of_even_contrast_is_cut_as_with_one_sigma():
    h, image, scribbles, _ = ellipsoid_case((12, 48, 48), seed=2)
    assert cut_scaling.section_sharpness(image, "rgb", graphcut.DEFAULT_SECTION_FOCUS) is None
    np.testing.assert_array_equal(graph_cut(h, image, scribbles),
                                  graph_cut(h, image, scribbles, params=GraphCutParams(section_focus=None)))


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "0.9"])
def test_section_focus_is_checked(bad):
    with pytest.raises(ScribbleSegError, match="section_focus"):
        GraphCutParams(section_focus=bad)


def test_coarse_levels_are_cut_in_full_only_up_to_their_own_limit(monkeypatch):
    h, image, scribbles, _ = ellipsoid_case((16, 64, 64), seed=3)
    params = GraphCutParams(**AS_GIVEN, gamma=2.0)
    monkeypatch.setattr(graphcut, "AUTO_FULL_MAX_VOXELS", 16 * 64 * 64 - 1)  # the volume itself: banded

    def levels(coarse_limit):
        monkeypatch.setattr(graphcut, "COARSE_FULL_MAX_VOXELS", coarse_limit)
        messages = []
        graph_cut(h, image, scribbles, params=params, progress=lambda stage, fraction, m: messages.append(m))
        return sum("downsampling" in m for m in messages)

    assert levels(8 * 32 * 32) == 1  # the 8x32x32 coarse level is cut in full
    assert levels(8 * 32 * 32 - 1) == 2  # ... or coarse-to-fine itself


def test_volumes_no_longer_cut_in_full_get_the_wider_band():
    # 40x256x256 (2.6 M voxels) was cut in full until the full cut's limit came down to 2**21 voxels; such
    # volumes and any up to WIDE_BAND_MAX_VOXELS get the wider band instead, larger ones the narrow one.
    assert not graphcut._auto_cuts_full((40, 256, 256), (1.0, 1.0, 1.0), 2**36, 10)
    assert graphcut._auto_cuts_full((1, 1000, 1000), (1.0, 1.0, 1.0), 2**36, 10)  # a 2D tile stays exact
    def steps(shape):  # of a full-resolution level: only its shape and spacing count
        return cut_band._level_band_steps(types.SimpleNamespace(shape=shape, spacing=(1.0, 1.0, 1.0)), (2, 2, 2))

    assert steps((64, 192, 192)) == [3, 3, 3]  # 5 voxels: 3 blocks of 2
    assert steps((100, 512, 512)) == [2, 2, 2]  # 3 voxels: 2 blocks


def test_a_stroke_claims_the_tissue_right_around_it_only_with_a_seed_reach():
    h = np.full((3, 32, 32), 0.45, np.float32)
    image = np.full(h.shape + (3,), 200, np.uint8)  # no edges: the data term decides
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[1, 16, 10:20] = 1
    scribbles[1, 2, :] = 2

    def heart(reach):
        params = GraphCutParams(gamma=0.01, neighbourhood=6, reference_radius=None, reference_contrast=None,
                                data_term="linear", seed_reach=reach)
        return graph_cut(h, image, scribbles, params=params, mode="full") > 0

    np.testing.assert_array_equal(heart(0.0), scribbles == 1)  # the stroke alone
    wide = heart(2.0)
    assert wide[1, 15:18, 10:20].all() and wide[1, 16, 8:22].all()  # its neighbours too
    assert not wide[1, 24, 15] and not wide[1, 16, 28]  # but not the tissue further away


def test_sections_under_four_pixels_on_a_side_are_pulled_along_straight_lines():
    # The recursive Gaussian of the colour gradient needs 4 pixels along each axis: a section of 3 rows
    # (a stack read heavily downsampled) has no gradient, and its pull is that of straight-line distances.
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (3, 3, 40, 3), np.uint8)
    h = np.full((3, 3, 40), 0.4, np.float32)
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[1, 1, 5] = 1
    scribbles[1, 1, 35] = 2
    g, median = stroke_pull._section_gradient(image[1], (1.0, 1.0))
    assert median == 0.0 and not g.any()
    edged = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 4.0, 0.5, weight=30.0, image=image, edges=3.0)
    straight = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 4.0, 0.5, weight=30.0)
    np.testing.assert_allclose(edged[1], straight[1], atol=0.05)  # fast marching: first order
    labels = graph_cut(h, image, scribbles)  # the defaults pull along edges: no error from the tiny sections
    assert labels[1, 1, 5] == 1 and labels[1, 1, 35] == 0


def test_measured_ahead_the_cut_computes_nothing_of_the_image_again_and_cuts_the_same(
        monkeypatch, two_stroked_sections):
    image, h, scribbles = two_stroked_sections
    h[:, 10:30, 4:16] = 0.7
    params = graphcut.GraphCutParams()
    alone = graph_cut(h, image, scribbles, params=params)
    measures = ImageMeasures()
    graphcut.measure_ahead(image, scribbles, (1.0, 1.0, 1.0), params, measures)
    calls = []
    for module, name in ((stroke_pull, "_section_gradient"), (stroke_pull, "_geodesic_planes"),
                         (stroke_pull, "image_contrast"), (cut_scaling, "image_contrast")):
        monkeypatch.setattr(module, name, lambda *a, name=name: calls.append(name))
    np.testing.assert_array_equal(graph_cut(h, image, scribbles, params=params, measures=measures), alone)
    assert calls == []


def test_measuring_ahead_stops_when_cancelled(two_tissues):
    image, h = two_tissues
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 18:22, 6:9] = 1
    token = CancelToken()
    token.cancel()
    measures = ImageMeasures()
    with pytest.raises(CancelledError):
        graphcut.measure_ahead(image, scribbles, (1.0, 1.0, 1.0), None, measures, token)
    assert measures._ways == {}


def test_a_warm_cut_measures_the_image_once(monkeypatch, two_tissues):
    image, h = two_tissues
    scribbles = np.zeros(h.shape, np.uint8)
    scribbles[0, 18:22, 6:9] = 1
    scribbles[0, 2:5, 30:38] = 2
    calls = {"gradient": 0, "contrast": 0}
    gradient, contrast = stroke_pull._section_gradient, cut_scaling.image_contrast

    def counted(name, f):
        def wrapper(*a):
            calls[name] += 1
            return f(*a)
        return wrapper

    monkeypatch.setattr(stroke_pull, "_section_gradient", counted("gradient", gradient))
    # A cut with memory asks its ImageMeasures (stroke_pull), one without asks cut_scaling.
    monkeypatch.setattr(stroke_pull, "image_contrast", counted("contrast", contrast))
    monkeypatch.setattr(cut_scaling, "image_contrast", counted("contrast", contrast))
    memory = CutMemory()
    graph_cut(h, image, scribbles, memory=memory)
    scribbles[0, 30:33, 6:9] = 1  # a new stroke on the same section
    warm = graph_cut(h, image, scribbles, memory=memory)
    assert calls == {"gradient": 1, "contrast": 1}
    assert np.array_equal(warm, graph_cut(h, image, scribbles))  # one section: cut whole, as from scratch
    assert calls == {"gradient": 2, "contrast": 2}


def test_seed_reach_is_checked_and_off_in_the_papers_energy():
    assert GraphCutParams(seed_reach=2.0).seed_reach == 2.0
    assert GraphCutParams.paper().seed_reach == 0.0 and GraphCutParams().seed_reach == graphcut.DEFAULT_SEED_REACH
    for bad in (-1.0, float("nan"), "2"):
        with pytest.raises(ScribbleSegError, match="seed_reach"):
            GraphCutParams(seed_reach=bad)
        with pytest.raises(ScribbleSegError, match="seed_across"):
            GraphCutParams(seed_across=bad)
    assert GraphCutParams().seed_across == graphcut.DEFAULT_SEED_ACROSS == choices.DEFAULT_SEED_ACROSS
    assert GraphCutParams().seed_weight == graphcut.DEFAULT_SEED_WEIGHT == choices.DEFAULT_SEED_WEIGHT
    assert GraphCutParams().seed_edges == graphcut.DEFAULT_SEED_EDGES == choices.DEFAULT_SEED_EDGES
    for bad in (-1.0, float("nan"), "2", 0.0):
        with pytest.raises(ScribbleSegError, match="seed_weight"):
            GraphCutParams(seed_weight=bad)
    for bad in (-1.0, float("nan"), "2"):
        with pytest.raises(ScribbleSegError, match="seed_edges"):
            GraphCutParams(seed_edges=bad)


@pytest.mark.parametrize("colour", ["rgb", "luminance"])
def test_pair_weights_from_the_kept_slab_are_those_of_each_direction_alone(colour):
    # forward_weights and diagonal_weights read the colour features of a slab converted once
    # (_ImageLevel._planes); the weights must be those of converting each direction's blocks alone.
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, size=(7, 9, 10, 3), dtype=np.uint8)
    h = rng.random((7, 9, 10)).astype(np.float32)
    level = cut_levels._ImageLevel(h, image, np.zeros((7, 9, 10), np.uint8), (2.0, 1.0, 1.0),
                                   GraphCutParams(colour=colour, neighbourhood=10))

    def alone(axis, z0, z1, every):
        out, first, pairs = level._empty_forward(axis, z0, z1, every)
        if pairs:
            a = level._features(image[cut_levels._strided(axis, first, pairs, every, z0, z1)])
            b = level._features(image[cut_levels._strided(axis, first + 1, pairs, every, z0, z1)])
            out[cut_levels._strided(axis, 0, pairs, 1, 0, z1 - z0)] = level._contrast(a, b, axis)
        return out

    # rgb features are elementwise: the same bit for bit. Luminance is a dot product per pixel, which BLAS
    # may round differently for blocks of other sizes on another CPU: a last-bit difference d of a
    # luminance moves exp(-(l - l')^2 / sigma^2) by up to 2 |l - l'| d / sigma^2 relative, about 1e-5 at
    # sigma 0.1 (1.3e-6 was seen on an Intel Xeon). Pairs from the wrong voxels would differ by far more.
    same = np.testing.assert_array_equal if colour == "rgb" else (
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=0))
    for z0, z1 in ((0, 3), (3, 7), (2, 5)):  # slabs in turn, as the cuts read them, and a fresh range
        for every in (1, 2, 3):
            for axis in range(3):
                z_end = min(7, z1 + 1) if axis == 0 and every == 1 else z1
                got = level.forward_weights(axis, z0, z_end, every)
                same(got, alone(axis, z0, z_end, every))
                assert got.any()
        for dy, dx in ((1, 1), (1, -1)):
            Y, X = 9, 10
            expected = np.zeros((z1 - z0, Y, X))
            xa, xb = (slice(0, X - dx), slice(dx, X)) if dx > 0 else (slice(-dx, X), slice(0, X + dx))
            a = level._features(image[z0:z1, 0:Y - dy, xa])
            b = level._features(image[z0:z1, dy:Y, xb])
            expected[:, 0:Y - dy, xa] = level._contrast(a, b, 2) * cut_levels._CROFTON_DIAGONAL
            same(level.diagonal_weights(dy, dx, z0, z1), expected)


def test_a_band_ranks_its_blocks_in_the_order_they_were_added_and_others_not_at_all():
    mask = np.zeros((2, 3, 4), bool)
    mask[1, 2, 3] = mask[0, 0, 1] = True
    band = cut_band._Band(mask, (1, 2, 2), (2, 6, 8))
    more = np.zeros_like(mask)
    more[0, 1, 0] = more[0, 0, 1] = True  # one held already
    assert band.extend(more) == 2
    flat = np.ravel_multi_index(np.nonzero(np.ones_like(mask)), mask.shape)
    ranks = band.rank(flat).reshape(mask.shape)
    assert ranks.dtype == np.int64
    assert (ranks[0, 0, 1], ranks[1, 2, 3], ranks[0, 1, 0]) == (0, 1, 2)
    assert (ranks == -1).sum() == mask.size - 3 and band.nodes == 3 * 4
