"""The phantom: deterministic, well-formed, with a heart that touches look-alike organs; files on disk."""

import dataclasses
import json

import numpy as np
import pytest

from ScribbleSegLib import cli, phantom, volume_io
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.phantom import Phantom, PhantomConfig, Tissue

TINY = PhantomConfig(shape=(12, 48, 48))
SMALL = PhantomConfig(shape=(24, 80, 80))


@pytest.fixture(scope="module")
def small() -> Phantom:
    return phantom.make_phantom(seed=3, config=SMALL)


def test_same_seed_same_arrays_other_seed_other_arrays():
    a = phantom.make_phantom(seed=5, config=TINY)
    b = phantom.make_phantom(seed=5, config=TINY)
    c = phantom.make_phantom(seed=6, config=TINY)
    assert np.array_equal(a.image.array, b.image.array)
    assert np.array_equal(a.label, b.label) and np.array_equal(a.tissue, b.tissue)
    assert a.info == b.info
    assert not np.array_equal(a.image.array, c.image.array)
    assert not np.array_equal(a.label, c.label)
    # A seed of 2^32 and more is a phantom of its own, not that of the seed's low 32 bits.
    assert not np.array_equal(phantom.make_phantom(seed=2 ** 32 + 5, config=TINY).image.array, a.image.array)


def test_shapes_dtypes_geometry(small):
    z, y, x = SMALL.shape
    assert small.image.array.shape == (z, y, x, 3) and small.image.array.dtype == np.uint8
    assert small.label.shape == (z, y, x) and small.label.dtype == np.uint8
    assert set(np.unique(small.label)) == {0, 1}
    assert small.tissue.shape == (z, y, x)
    assert set(np.unique(small.tissue)) <= {int(t) for t in Tissue}
    assert small.image.geometry.spacing == pytest.approx(tuple(s * 192 / 80 for s in SMALL.spacing))
    assert small.image.shape == (z, y, x)


def test_heart_on_a_plausible_number_of_sections(small):
    on = small.label.reshape(len(small.label), -1).any(axis=1)
    # The default anatomy puts the heart on about two thirds of the stack, never on all of it.
    assert 0.4 * len(on) <= on.sum() < len(on)


def test_label_is_the_heart_tissues(small):
    heart_tissue = np.isin(small.tissue, [int(t) for t in phantom.HEART_TISSUES])
    # Every heart-tissue voxel is labelled; labelled voxels that show something else are torn (glass).
    assert np.all(small.label[heart_tissue] == 1)
    other = (small.label == 1) & ~heart_tissue
    assert np.all(small.tissue[other] == Tissue.EMPTY)


def test_heart_touches_a_neighbouring_organ(small):
    heart = small.label.astype(bool)
    organs = np.isin(small.tissue, [Tissue.LIVER, Tissue.BODY_WALL, Tissue.LUNG, Tissue.HEMATOPOIETIC,
                                    Tissue.LIVER_BLOOD])
    touching = np.zeros_like(heart)
    for axis in range(3):
        for shift in (1, -1):
            touching |= heart & np.roll(organs, shift, axis=axis)
    assert touching.sum() > 20


def test_stains_are_eosin_pink_and_haematoxylin_blue(small):
    rgb = small.image.array.astype(float)
    myocardium = rgb[small.tissue == Tissue.MYOCARDIUM].mean(axis=0)
    neural = rgb[small.tissue == Tissue.NEURAL].mean(axis=0)
    glass = rgb[small.tissue == Tissue.EMPTY].mean(axis=0)
    assert myocardium[0] > myocardium[1] + 40  # eosin: red over green
    assert neural[2] > neural[0]  # nuclei-dense tissue: blue over red
    assert glass.min() > 225  # empty glass is white


def test_volumes_differ_in_stain():
    a = phantom.make_phantom(seed=0, config=TINY).info["stains"]
    b = phantom.make_phantom(seed=1, config=TINY).info["stains"]
    assert a["eosin"] != b["eosin"] and a["intensity"] != b["intensity"]


def test_repeated_section_is_a_copy_of_its_neighbour():
    config = dataclasses.replace(TINY, skipped_sections=3)
    for seed in range(10):
        ph = phantom.make_phantom(seed=seed, config=config)
        if ph.info["repeated_sections"]:
            k = ph.info["repeated_sections"][0]
            assert np.array_equal(ph.label[k], ph.label[k - 1])
            assert np.array_equal(ph.tissue[k], ph.tissue[k - 1])
            return
    pytest.fail("no repeated section in 10 seeds")


def test_no_artefacts_config_is_clean():
    config = dataclasses.replace(TINY, tears=0, folds=0, skipped_sections=0)
    info = phantom.make_phantom(seed=2, config=config).info
    assert info["tears"] == [] and info["folds"] == []
    assert info["lost_sections"] == [] and info["repeated_sections"] == []


@pytest.mark.parametrize("change", [
    {"shape": (2, 48, 48)}, {"spacing": (0.02, 0.0, 0.04)}, {"mimicry": 1.5}, {"tears": -1}, {"heart_scale": 5.0},
    # Once an empty or black phantom without a word, or a traceback:
    {"zoom": float("inf")}, {"zoom": 1e-9}, {"misalignment_px": 1e9}, {"noise": float("inf")},
    {"intensity": (float("inf"), 1.0)}, {"striation": float("nan")}, {"max_tilt_deg": float("inf")},
    {"tears": 2.5}, {"spacing": "abc"}, {"nucleus_px": 1e9}, {"shape": (100000, 10000, 10000)}])
def test_bad_config_is_a_one_line_error(change):
    with pytest.raises(ScribbleSegError) as err:
        phantom.make_phantom(config=dataclasses.replace(TINY, **change))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"config": {"zoom": 2}}, "config must be a PhantomConfig or None, got dict"),
    ({"seed": -1}, "seed must be an integer")])
def test_bad_arguments_of_make_phantom_are_one_line_errors(kwargs, words):
    with pytest.raises(ScribbleSegError, match=words):
        phantom.make_phantom(**kwargs)


def test_roles():
    assert phantom.volume_roles(6) == ["train", "train", "val", "val", "test", "test"]
    assert phantom.volume_roles(1) == ["test"]
    for n in range(1, 10):
        roles = phantom.volume_roles(n)
        assert len(roles) == n and "test" in roles
        assert roles == sorted(roles, key=["train", "val", "test"].index)


def test_command_writes_files_that_volume_io_and_slicerio_read(tmp_path):
    import slicerio

    out = tmp_path / "set"
    assert cli.main(["phantom", "--out", str(out), "--volumes", "2", "--shape", "12", "48", "48", "--quiet"]) == 0
    manifest = json.loads((out / "phantom.json").read_text())
    assert manifest["format_version"] == phantom.MANIFEST_VERSION
    assert manifest["shape"] == [12, 48, 48] and manifest["spacing"] == pytest.approx([s * 4 for s in TINY.spacing])
    assert [v["role"] for v in manifest["volumes"]] == ["train", "test"]
    expected = phantom.make_phantom(seed=1, config=TINY)
    entry = manifest["volumes"][1]
    image = volume_io.read_image(out / entry["image"])
    assert np.array_equal(image.array, expected.image.array)
    assert image.geometry.mismatch(expected.image.geometry) == ""
    label = volume_io.read_label(out / entry["label"], image.shape, image.geometry)
    assert np.array_equal(label > 0, expected.label > 0)
    assert len(entry["scribbles"]) == 3
    for file, sections in zip(entry["scribbles"], entry["scribbled_sections"]):
        strokes = volume_io.read_scribbles(out / file, image.shape, image.geometry)
        assert np.all(label[strokes == 1] == 1) and np.all(label[strokes == 2] == 0)
        assert sorted(np.flatnonzero(strokes.reshape(12, -1).any(axis=1))) == sections
        assert set(slicerio.segment_names(slicerio.read_segmentation(str(out / file)))) == {"heart", "background"}


def test_a_smaller_set_over_a_larger_one_names_the_files_left_of_it(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["phantom", "--out", str(out), "--shape", "8", "48", "48", "--quiet", "--volumes"]
    assert cli.main(args + ["2"]) == 0
    assert "earlier set" not in capsys.readouterr().err  # a new folder: nothing to say
    assert cli.main(args + ["1"]) == 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "5 file(s) of an earlier set are still there (first: vol01_" in err
    assert len(json.loads((out / "phantom.json").read_text())["volumes"]) == 1


def test_a_count_of_volumes_beyond_the_limit_is_refused_before_any_work(tmp_path, capsys):
    # 100 million volumes filled the memory with their names before the free space was checked.
    from ScribbleSegLib import choices

    out = tmp_path / "set"
    too_many = str(choices.MAX_PHANTOM_VOLUMES + 1)
    with pytest.raises(SystemExit):
        cli.main(["phantom", "--out", str(out), "--quiet", "--volumes", "100000000"])
    assert "--volumes" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ScribbleSegError, match="n_volumes must be a whole number from 1 to"):
        phantom.write_phantom_set(out, n_volumes=int(too_many), config=TINY)
    assert not out.exists()


def test_a_file_that_no_phantom_set_wrote_is_not_replaced(tmp_path, capsys):
    out = tmp_path / "set"
    out.mkdir()
    own = out / "vol00_label.seg.nrrd"
    own.write_text("my precious data")
    args = ["phantom", "--out", str(out), "--shape", "8", "48", "48", "--quiet", "--volumes", "1"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vol00_label.seg.nrrd: exists and is not a file of a phantom set" in err
    assert own.read_text() == "my precious data" and sorted(p.name for p in out.iterdir()) == [own.name]
    own.unlink()
    assert cli.main(args) == 0 and cli.main(args) == 0, "a set replaces its own files"


def test_command_needs_an_existing_parent(tmp_path, capsys):
    assert cli.main(["phantom", "--out", str(tmp_path / "no" / "set"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "no").exists()


def test_cancel_stops_before_the_manifest(tmp_path):
    from ScribbleSegLib.errors import CancelledError
    from ScribbleSegLib.progress import CancelToken

    token = CancelToken()
    stages = []

    def progress(stage, fraction, message):
        stages.append(fraction)
        if fraction >= 0.5:
            token.cancel()

    with pytest.raises(CancelledError):
        phantom.write_phantom_set(tmp_path / "set", n_volumes=2, config=TINY, progress=progress, cancel=token)
    assert stages and not (tmp_path / "set" / "phantom.json").exists()
    # The volumes written before the cancel go with it: a set is whole or absent.
    assert list((tmp_path / "set").iterdir()) == []


def test_an_interrupted_command_leaves_neither_files_nor_the_folder_it_made(tmp_path, capsys, monkeypatch):
    real = phantom.make_phantom
    made = []

    def interrupted_second(*args, **kwargs):
        if made:
            raise KeyboardInterrupt
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(phantom, "make_phantom", interrupted_second)
    status = cli.main(["phantom", "--out", str(tmp_path / "set"), "--volumes", "2", "--shape", "8", "48", "48",
                       "--quiet"])
    assert status == 130 and capsys.readouterr().err.strip() == "scribbleseg phantom: interrupted"
    assert made and list(tmp_path.iterdir()) == []
    # A folder that was there before is kept, and left as it was.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    made.clear()
    assert cli.main(["phantom", "--out", str(tmp_path / "mine"), "--volumes", "2", "--shape", "8", "48", "48",
                     "--quiet"]) == 130
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_set_that_cannot_fit_is_refused_before_any_volume(tmp_path, capsys, monkeypatch):
    from ScribbleSegLib import fileio

    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 100_000)
    monkeypatch.setattr(phantom, "make_phantom", lambda *a, **k: pytest.fail("made a volume"))
    status = cli.main(["phantom", "--out", str(tmp_path / "set"), "--shape", "8", "48", "48", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "disk full writing" in err and "set" in err
    assert list(tmp_path.iterdir()) == []


def test_a_smaller_shape_is_the_same_embryo_in_mm():
    """Smaller phantoms have larger voxels, so the heart keeps its size in mm (a model's resampling relies on it)."""
    from ScribbleSegLib.phantom import make_phantom, voxel_size

    big, small = (PhantomConfig(shape=s, skipped_sections=0) for s in ((32, 96, 96), (16, 48, 48)))
    assert voxel_size(small) == pytest.approx(tuple(2 * s for s in voxel_size(big)))
    volumes = []
    for config in (big, small):
        ph = make_phantom(seed=3, config=config)
        sx, sy, sz = ph.image.geometry.spacing
        volumes.append(np.count_nonzero(ph.label) * sx * sy * sz)
    assert volumes[1] == pytest.approx(volumes[0], rel=0.25)


@pytest.mark.parametrize("family", ["a", "b"])
def test_a_phantom_made_in_slabs_is_the_phantom_made_whole(monkeypatch, family):
    """Large phantoms are made a few sections at a time; that must not change the phantom."""
    config = phantom.family_config(family, (15, 40, 56))
    whole = phantom.make_phantom(seed=2, config=config)
    monkeypatch.setattr(phantom, "_SLAB_VOXELS", 4 * 40 * 56 + 7)  # slabs of 4 sections, the last of 3
    assert len(phantom._slabs(config.shape)) == 4
    slabs = phantom.make_phantom(seed=2, config=config)
    # Anatomy is per-voxel arithmetic: exactly equal.  The image goes through per-section FFTs that a
    # CPU may batch differently: at most one grey level apart, and rarely.
    assert np.array_equal(slabs.label, whole.label) and np.array_equal(slabs.tissue, whole.tissue)
    difference = np.abs(slabs.image.array.astype(int) - whole.image.array.astype(int))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= 1e-4 * difference.size
    assert slabs.info == whole.info


def test_a_family_shape_of_fractions_is_refused():
    # (4.5, 64, 64) became 4 sections without a word; every other count refuses fractions.
    from ScribbleSegLib.errors import ScribbleSegError
    from ScribbleSegLib.phantom import family_config

    with pytest.raises(ScribbleSegError, match=r"shape must be three positive integers \(Z, Y, X\), "
                                               r"got \(4.5, 64, 64\)"):
        family_config("a", shape=(4.5, 64, 64))
    assert family_config("b", shape=[4, 64, np.int64(64)]).shape == (4, 64, 64)
