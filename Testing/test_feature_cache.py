"""The M-Unet output cache: keys, atomic entries, memory-mapped features."""

import os

import numpy as np
import pytest

from ScribbleSegLib import feature_cache


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.model"
    path.write_bytes(b"model-bytes-1")
    return path


def test_key_changes_with_image_and_model(tmp_path, model_file):
    image = np.zeros((2, 4, 4, 3), np.uint8)
    key = feature_cache.cache_key(image, model_file)
    assert key == feature_cache.cache_key(image.copy(), model_file)
    changed = image.copy()
    changed[1, 2, 3, 0] = 1
    assert feature_cache.cache_key(changed, model_file) != key
    other = tmp_path / "other.model"
    other.write_bytes(b"model-bytes-2")
    assert feature_cache.cache_key(image, other) != key


def test_entry_round_trip_is_memory_mapped(tmp_path, model_file):
    prob = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    feats = np.random.default_rng(1).random((2, 4, 4, 5)).astype(np.float16)
    assert feature_cache.load(tmp_path, "k") is None
    with feature_cache.new_entry(tmp_path, "k") as tmp:
        np.save(tmp / "probability.npy", prob)
        np.save(tmp / "features.npy", feats)
    got_prob, got_feats = feature_cache.load(tmp_path, "k")
    np.testing.assert_array_equal(got_prob, prob)
    np.testing.assert_array_equal(got_feats, feats)
    assert isinstance(got_feats, np.memmap)


@pytest.mark.parametrize("blocker", ["file", "dangling link"])
def test_a_file_where_an_entry_goes_is_replaced_by_the_entry(tmp_path, blocker):
    # A file, or a link to nothing, at an entry's path made every run on the image fail ("Not a directory").
    prob = np.zeros((2, 4, 4), np.float32)
    if blocker == "file":
        (tmp_path / "k").write_text("junk")
    else:
        if os.name != "posix":
            pytest.skip("symbolic links need privileges on Windows")
        (tmp_path / "k").symlink_to(tmp_path / "nowhere")
    with feature_cache.new_entry(tmp_path, "k") as tmp:
        np.save(tmp / "probability.npy", prob)
        np.save(tmp / "features.npy", np.zeros((2, 4, 4, 3), np.float16))
    assert (tmp_path / "k").is_dir() and not (tmp_path / "k").is_symlink()
    np.testing.assert_array_equal(feature_cache.load(tmp_path, "k")[0], prob)


def test_failed_entry_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with feature_cache.new_entry(tmp_path, "k") as tmp:
            np.save(tmp / "probability.npy", np.zeros(3))
            raise RuntimeError("inference died")
    assert list(tmp_path.iterdir()) == []
    assert feature_cache.load(tmp_path, "k") is None


def test_an_entry_stored_by_another_run_during_the_rename_is_reused(tmp_path, monkeypatch):
    """Two runs store the same entry: the other's rename lands between the check and this one's rename,
    which then fails (a folder does not replace a full one). The other's whole entry serves."""
    import os

    key = "a" * 32
    mine, other = feature_cache.FeatureCache(tmp_path), feature_cache.FeatureCache(tmp_path)
    real_replace = os.replace

    def fill(folder):
        np.save(folder / "probability.npy", np.zeros((1, 2, 2), np.float32))
        np.save(folder / "features.npy", np.zeros((1, 2, 2, 3), np.float16))

    def other_run_first(src, dst):
        monkeypatch.setattr(feature_cache.os, "replace", real_replace)
        with other.new_entry(key) as tmp:
            fill(tmp)
        return real_replace(src, dst)

    monkeypatch.setattr(feature_cache.os, "replace", other_run_first)
    with mine.new_entry(key) as tmp:
        fill(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == [key]
    assert mine.load(key) is not None


def test_a_change_to_what_the_network_computes_changes_every_key(tmp_path, monkeypatch):
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    image = np.zeros((1, 4, 4, 3), np.uint8)
    before = feature_cache.cache_key(image, model)
    monkeypatch.setattr(feature_cache, "FEATURES_VERSION", feature_cache.FEATURES_VERSION + 1)
    assert feature_cache.cache_key(image, model) != before


def _entry(tmp_path, key="0" * 32):
    """A cache entry with tiny outputs; returns its features as a run reads them (memory-mapped)."""
    with feature_cache.new_entry(tmp_path, key) as tmp:
        np.save(tmp / "probability.npy", np.zeros((2, 4, 4), np.float32))
        np.save(tmp / "features.npy", np.zeros((2, 4, 4, 3), np.float16))
    return feature_cache.load(tmp_path, key)[1]


def test_the_cuts_weights_are_kept_in_the_entry_the_features_came_from(tmp_path):
    feats = _entry(tmp_path)
    store = feature_cache.CutWeights.of(feats)
    assert store is not None and store.entry == tmp_path / ("0" * 32)
    assert feature_cache.CutWeights.of(np.zeros((2, 4, 4, 3), np.float16)) is None  # not from a cache
    rng = np.random.default_rng(3)
    weights = [rng.random((2, 3, 3)).astype(np.float32) for _ in range(3)]
    assert store.load("a", (2, 3, 3)) is None
    store.save("a", weights)
    for got, kept in zip(store.load("a", (2, 3, 3)), weights):
        np.testing.assert_array_equal(got, kept)
    # A cut that drops them after its coarse level reads them memory-mapped, not into fresh memory.
    for got, kept in zip(store.load("a", (2, 3, 3), mapped=True), weights):
        assert isinstance(got, np.memmap) and not got.flags.writeable
        np.testing.assert_array_equal(got, kept)
    assert store.load("a", (2, 3, 4)) is None  # another shape: removed, computed again
    assert not list(store.entry.glob("cut-weights-*"))
    store.save("a", weights)
    store.save("b", weights)  # one set per entry: the settings changed
    assert sorted(p.name for p in store.entry.glob("cut-weights-*")) == ["cut-weights-b.json", "cut-weights-b.npy"]
    # The entry stays whole, and its size counts the weights (the cache's cap holds them too).
    assert feature_cache.load(tmp_path, "0" * 32) is not None
    entry, = feature_cache.FeatureCache(tmp_path).entries()
    assert entry.size > sum(w.nbytes for w in weights)


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "no manifest"])
def test_damaged_cut_weights_are_removed_and_not_read(tmp_path, caplog, damage):
    store = feature_cache.CutWeights.of(_entry(tmp_path))
    store.save("a", [np.ones((4, 8, 8), np.float32)] * 3)
    data = store.entry / "cut-weights-a.npy"
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[:-100])
    elif damage == "overwritten":
        raw = bytearray(data.read_bytes())
        raw[-8:] = b"\xff" * 8
        data.write_bytes(bytes(raw))
    else:
        (store.entry / "cut-weights-a.json").unlink()
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        assert store.load("a", (4, 8, 8)) is None
    assert "not usable" in caplog.text
    assert not data.exists()
    assert feature_cache.load(tmp_path, "0" * 32) is not None  # the features stay


def test_cut_weights_that_cannot_be_kept_are_a_log_line(tmp_path, caplog, monkeypatch):
    from ScribbleSegLib import fileio

    store = feature_cache.CutWeights.of(_entry(tmp_path))
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 0)  # a full disk
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        store.save("a", [np.ones((4, 8, 8), np.float32)] * 3)
    assert "not kept" in caplog.text
    assert not list(store.entry.glob("cut-weights-*")) and not list(store.entry.glob(".*"))


def test_what_a_run_killed_while_keeping_cut_weights_left_goes_with_the_next_save(tmp_path):
    from ScribbleSegLib import fileio

    store = feature_cache.CutWeights.of(_entry(tmp_path))
    # The temporary of a save in a process that no longer runs (this one's pid, swapped for one no process has).
    name = fileio.temp_path(store.entry / "cut-weights-a.npy").name.replace(f"-{os.getpid()}-", "-999999999-")
    dead = store.entry / name
    dead.write_bytes(b"half")
    store.save("a", [np.ones((2, 2, 2), np.float32)] * 3)
    assert not dead.exists() and store.load("a", (2, 2, 2)) is not None
