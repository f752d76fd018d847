"""The M-Unet output cache: keys, atomic entries, memory-mapped features."""

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
