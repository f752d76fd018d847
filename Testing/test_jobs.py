"""Jobs (jobs.py): what a job does around the pipeline itself."""

import subprocess
import sys

import pytest

from ScribbleSegLib import jobs


def test_the_heavy_modules_are_imported_on_their_thread():
    # In a fresh process, where nothing has imported torch yet.
    code = ("import sys; from ScribbleSegLib import jobs; assert 'torch' not in sys.modules; "
            "jobs.import_in_background().join(); print(all(m in sys.modules for m in jobs.HEAVY_MODULES + ('torch',)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_a_failed_import_on_the_thread_is_left_to_the_job(monkeypatch, capsys):
    # The job's own import says what is wrong, once; the thread adds no traceback of its own.
    monkeypatch.setattr(jobs, "HEAVY_MODULES", ("ScribbleSegLib.no_such_module", "ScribbleSegLib.ddml"))
    jobs.import_in_background().join()
    assert capsys.readouterr().err == ""


def test_a_job_of_arrays_or_of_another_type_is_one_line_naming_the_field(tmp_path):
    import numpy as np
    import pytest

    from ScribbleSegLib.errors import ScribbleSegError

    arrays = jobs.SegmentFiles(image=np.zeros((2, 8, 8), np.uint8), model="starter", labels=str(tmp_path / "o.nrrd"))
    with pytest.raises(ScribbleSegError, match=r"^image must be a file or folder name \(arrays go to "
                                               r"pipeline.segment\), got ndarray$"):
        jobs.segment_files(arrays)
    named = jobs.SegmentFiles(image=str(tmp_path / "i.nrrd"), model="starter", labels=None,
                              names={"labels": "--out"})
    with pytest.raises(ScribbleSegError, match=r"^--out must be a file or folder name"):
        jobs.check_job(named)
    with pytest.raises(ScribbleSegError, match=r"^job must be a SegmentFiles, got dict$"):
        jobs.segment_files({"image": "i.nrrd"})
    # Settings objects where the job takes dicts of settings: a TypeError from inside replace_fields before.
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.graphcut import GraphCutParams

    for field, value in (("cut", GraphCutParams()), ("ddml", DDMLConfig())):
        job = jobs.SegmentFiles(image="i", model="m", labels="o.nrrd", **{field: value})
        with pytest.raises(ScribbleSegError, match=rf"^{field} must be a dict of setting -> value, got "
                                                   rf"{type(value).__name__}$"):
            jobs.settings(job)


def test_the_heart_volume_of_a_sheared_grid_is_its_voxels_true_volume():
    # Axis lengths multiplied gave 0.8 % too much on a stack whose section axis leans (found by a new-user audit).
    import types

    import numpy as np

    from ScribbleSegLib.jobs import result_metrics

    labels = np.zeros((2, 3, 4), np.uint8)
    labels[0, :2, :2] = 1
    result = types.SimpleNamespace(labels=labels, features_cached=False, method="full", suggestions=[], warnings=[])
    lean = np.array([0.005, 0.0, 0.04]) / np.linalg.norm([0.005, 0.0, 0.04])
    sheared = (1.0, 0.0, lean[0], 0.0, 1.0, lean[1], 0.0, 0.0, lean[2])  # row-major: the z axis leans in x
    spacing = (0.02, 0.02, float(np.linalg.norm([0.005, 0.0, 0.04])))
    straight = result_metrics(result, labels.shape, spacing, None)
    leaning = result_metrics(result, labels.shape, spacing, None, sheared)
    assert straight["heart_volume_mm3"] == pytest.approx(4 * 0.02 * 0.02 * spacing[2])
    assert leaning["heart_volume_mm3"] == pytest.approx(4 * 0.02 * 0.02 * 0.04)  # the section axis's height
    assert leaning["heart_area_mm2"] == pytest.approx(straight["heart_area_mm2"])


def test_strokes_drawn_in_slicer_on_a_folder_loaded_as_an_image_series_are_placed(tmp_path):
    # Slicer loads a folder of PNG sections (Add Data) through ITK's series reader: the first file's 1 mm pixels,
    # 1 mm between sections, origin 0. Strokes saved there were refused once the folder was read with --spacing,
    # where the same strokes on a TIFF stack or a tile were placed.
    import numpy as np
    import SimpleITK as sitk

    from ScribbleSegLib import volume_io
    from ScribbleSegLib.geometry import Geometry

    folder = tmp_path / "sections"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8), isVector=True),
                        str(folder / f"s{k + 1}.png"))
    heart, background = np.zeros((4, 16, 20), np.uint8), np.zeros((4, 16, 20), np.uint8)
    heart[1, 5:8, 6:9], background[2, 1:3, 1:15] = 1, 1
    strokes = tmp_path / "strokes.seg.nrrd"
    volume_io.write_segmentation(strokes, [("heart", heart, volume_io.HEART_COLOR),
                                           ("background", background, volume_io.BACKGROUND_COLOR)], Geometry((1, 1, 1)))
    job = jobs.SegmentFiles(image=str(folder), model="starter", labels=str(tmp_path / "o.seg.nrrd"),
                            scribbles=str(strokes), spacing=(0.04, 0.04, 0.08))
    image = jobs.read_job_image(job, {})
    assert image.geometry.spacing == (0.04, 0.04, 0.08)
    read = jobs.read_job_scribbles(job, image, {})
    assert np.array_equal(read, heart + 2 * background)


def test_a_segmentation_other_than_a_result_at_the_output_is_not_replaced(tmp_path):
    # --out naming a stroke file (or a segmentation of several segments) replaced it without a word.
    import numpy as np

    from ScribbleSegLib import volume_io
    from ScribbleSegLib.errors import ScribbleSegError
    from ScribbleSegLib.geometry import Geometry

    image = tmp_path / "image.nrrd"
    image.write_bytes(b"")  # check_job reads no input: it only has to exist
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, 1:3, 1:3] = 1
    strokes = tmp_path / "strokes.seg.nrrd"
    volume_io.write_segmentation(strokes, [("heart", mask, (1, 0, 0)), ("background", 1 - mask, (0, 0, 1))],
                                 Geometry((1.0, 1.0, 1.0)))
    job = jobs.SegmentFiles(image=str(image), model="starter", labels=str(strokes), method="munet",
                            names={"labels": "--out"})
    with pytest.raises(ScribbleSegError) as caught:
        jobs.check_job(job)
    assert str(caught.value) == (f"{strokes}: holds a segmentation with the segments 'heart', 'background' (--out); a "
                                 "run writes one 'heart' segment and replaces only such a file: give another path, "
                                 "or remove the file")
    before = strokes.read_bytes()
    with pytest.raises(ScribbleSegError):
        jobs.segment_files(job)
    assert strokes.read_bytes() == before
    # A result of an earlier run (one 'heart' segment, any case) is replaced, as every re-run does.
    result = tmp_path / "result.seg.nrrd"
    volume_io.write_segmentation(result, [("Heart", mask, (1, 0, 0))], Geometry((1.0, 1.0, 1.0)))
    jobs.check_job(jobs.SegmentFiles(image=str(image), model="starter", labels=str(result), method="munet"))


def test_a_colour_image_at_an_output_is_not_replaced(tmp_path):
    # --out (or --probability) naming a copy of the stack or a tile beside it replaced the scan by a mask, exit 0.
    import numpy as np
    import SimpleITK as sitk

    from ScribbleSegLib.errors import ScribbleSegError

    image = tmp_path / "image.nrrd"
    image.write_bytes(b"")  # check_job reads no input: it only has to exist
    scan = tmp_path / "copy of the stack.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 4, 3), np.uint8), isVector=True), str(scan))
    before = scan.read_bytes()
    for key, name in (("labels", "--out"), ("probability", "--probability")):
        fields = {"labels": str(tmp_path / "result.nrrd"), key: str(scan)}
        job = jobs.SegmentFiles(image=str(image), model="starter", method="munet", names={key: name}, **fields)
        with pytest.raises(ScribbleSegError) as caught:
            jobs.check_job(job)
        assert str(caught.value) == (f"{scan}: holds an image of 3 channels, a scan rather than a result ({name}); a "
                                     "run writes one value a voxel there and replaces only such a file: give another "
                                     "path, or remove the file")
    assert scan.read_bytes() == before
    # An earlier result (one value a voxel) and a file that is no image are replaced, as every re-run does.
    result = tmp_path / "result.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 4), np.uint8)), str(result))
    (tmp_path / "notes.png").write_text("not an image")
    for out in (result, tmp_path / "notes.png"):
        jobs.check_job(jobs.SegmentFiles(image=str(image), model="starter", labels=str(out), method="munet"))
