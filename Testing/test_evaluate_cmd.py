"""`scribbleseg evaluate`: table and JSON output, scribble exclusion, grid checks, errors."""

import json

import numpy as np
import pytest

from ScribbleSegLib import cli, volume_io
from ScribbleSegLib.geometry import Geometry

GEOMETRY = Geometry((0.5, 0.5, 2.0), (1.0, 2.0, 3.0))


@pytest.fixture
def files(tmp_path):
    """A label labelmap, a prediction .seg.nrrd (one segment, not named heart) and scribbles."""
    label = np.zeros((4, 10, 12), np.uint8)
    label[1:3, 2:8, 2:8] = 1  # 72 voxels
    pred = np.zeros_like(label)
    pred[1:3, 2:8, 3:9] = 1  # 60 right, 12 wrong, 12 missed
    scribbles = np.zeros_like(label)
    scribbles[1, 4, 3:8] = 1  # 5 heart scribbles, all true positives
    scribbles[0, 0, :] = 2  # 12 background scribbles, all true negatives
    volume_io.write_labelmap(tmp_path / "label.nrrd", label, GEOMETRY)
    volume_io.write_segmentation(tmp_path / "pred.seg.nrrd", [("Segment_1", pred, volume_io.HEART_COLOR)], GEOMETRY)
    volume_io.write_labelmap(tmp_path / "scribbles.nrrd", scribbles, GEOMETRY)
    return tmp_path


def evaluate(capsys, *argv):
    status = cli.main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def test_table(files, capsys):
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["precision", "recall", "F1 (Dice)", "IoU",
                                                       "mean section F1", "voxels"]
    # Values start in one column, two spaces after the longest name.
    column = len("mean section F1") + 2
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines)
    assert "0.8333" in lines[0] and "0.8333" in lines[1] and "0.8333" in lines[2]
    assert "0.7143" in lines[3]  # 60 / 84
    assert "2 sections" in lines[4]
    assert "TP 60, FP 12, FN 12, TN 396" in lines[5]


def test_json(files, capsys):
    status, out, _ = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                              "--json")
    assert status == 0
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (60, 12, 12, 396)
    assert result["f1"] == pytest.approx(60 / 72)
    assert result["iou"] == pytest.approx(60 / 84)
    assert result["sections"] == [1, 2]
    assert result["label"] == str(files / "label.nrrd")


def test_ignore_scribbles(files, capsys):
    status, out, _ = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                              "--ignore-scribbles", files / "scribbles.nrrd", "--json")
    assert status == 0
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (55, 12, 12, 384)
    assert result["ignored"] == 17
    status, out, _ = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                              "--ignore-scribbles", files / "scribbles.nrrd")
    assert "17 scribbled voxels" in out
    # Strokes of one class are enough to leave out of the counts.
    scribbles = volume_io.read_scribbles(files / "scribbles.nrrd", (4, 10, 12), GEOMETRY)
    volume_io.write_labelmap(files / "background.nrrd", np.where(scribbles == 2, 2, 0).astype(np.uint8), GEOMETRY)
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                                "--ignore-scribbles", files / "background.nrrd", "--json")
    assert status == 0, err
    assert json.loads(out)["ignored"] == 12


def test_cropped_prediction_is_placed_on_the_label_grid(files, capsys):
    pred = np.zeros((4, 10, 12), np.uint8)
    pred[1:3, 2:8, 3:9] = 1
    origin = np.asarray(GEOMETRY.origin) + np.array([3, 2, 1]) * np.asarray(GEOMETRY.spacing)
    cropped = Geometry(GEOMETRY.spacing, tuple(origin), GEOMETRY.direction)
    volume_io.write_segmentation(files / "crop.seg.nrrd", [("heart", pred[1:3, 2:8, 3:9], (1, 0, 0))], cropped)
    status, out, err = evaluate(capsys, "--prediction", files / "crop.seg.nrrd", "--label", files / "label.nrrd",
                                "--json")
    assert status == 0 and json.loads(out)["tp"] == 60
    # It may as well be a result for another image: one warning says what is counted.
    assert len(err.strip().splitlines()) == 1
    assert "warning" in err and "crop.seg.nrrd covers 6x6x2 voxels and the label" in err
    assert "label.nrrd 12x10x4 voxels of one grid; compared on the 12x10x4 voxels" in err
    status, _, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd")
    assert status == 0 and err == ""  # a prediction on the label's whole grid: nothing to say


@pytest.mark.parametrize("kind", ["label.seg.nrrd", "label.nrrd"])
def test_a_cropped_label_is_compared_on_the_box_that_holds_both(files, capsys, kind):
    # Slicer saves a segmentation, and by default exports a labelmap, cropped to what it marks.
    label = np.zeros((4, 10, 12), np.uint8)
    label[1:3, 2:8, 2:8] = 1
    origin = np.asarray(GEOMETRY.origin) + np.array([2, 2, 1]) * np.asarray(GEOMETRY.spacing)
    cropped = Geometry(GEOMETRY.spacing, tuple(origin), GEOMETRY.direction)
    if kind.endswith(".seg.nrrd"):
        volume_io.write_segmentation(files / kind, [("heart", label[1:3, 2:8, 2:8], (1, 0, 0))], cropped)
    else:
        volume_io.write_labelmap(files / kind, label[1:3, 2:8, 2:8], cropped)
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / kind,
                                "--ignore-scribbles", files / "scribbles.nrrd", "--json")
    assert status == 0, err
    result = json.loads(out)
    # As against the full label (test_ignore_scribbles): the prediction's heart outside the label's box counts.
    assert (result["tp"], result["fp"], result["fn"], result["ignored"]) == (55, 12, 12, 17)
    assert len(err.strip().splitlines()) == 1 and "compared on the 12x10x4 voxels that hold both" in err


def test_strokes_beyond_two_cropped_files_are_left_out_of_nothing_and_not_refused(files, capsys):
    # Prediction and label both cropped as Slicer saves them: the strokes of the whole image were refused as
    # "marked voxels outside the label", though outside the box compared nothing is counted.
    label = np.zeros((4, 10, 12), np.uint8)
    label[1:3, 2:8, 2:8] = 1
    pred = np.zeros_like(label)
    pred[1:3, 2:8, 3:9] = 1
    for name, array, lo in (("lab.seg.nrrd", label[1:3, 2:8, 2:8], (2, 2, 1)), ("pre.seg.nrrd", pred[1:3, 2:8, 3:9],
                                                                               (3, 2, 1))):
        origin = np.asarray(GEOMETRY.origin) + np.array(lo) * np.asarray(GEOMETRY.spacing)
        volume_io.write_segmentation(files / name, [("heart", array, (1, 0, 0))],
                                     Geometry(GEOMETRY.spacing, tuple(origin), GEOMETRY.direction))
    status, out, err = evaluate(capsys, "--prediction", files / "pre.seg.nrrd", "--label", files / "lab.seg.nrrd",
                                "--ignore-scribbles", files / "scribbles.nrrd", "--json")
    assert status == 0, err
    result = json.loads(out)
    # On the 7x6x2 box that holds both: the 5 heart strokes in it are left out, the background row lies beyond.
    assert (result["tp"], result["fp"], result["fn"], result["ignored"]) == (55, 12, 12, 5)
    assert "scribbles.nrrd: 12 marked voxels lie outside the label" in err


def test_predictions_on_another_grid_or_elsewhere_are_refused(files, capsys):
    pred = np.ones((2, 3, 3), np.uint8)
    half = np.asarray(GEOMETRY.origin) + 0.5 * np.asarray(GEOMETRY.spacing)
    far = np.asarray(GEOMETRY.origin) + 100.0
    for name, geometry, needle in (("half.nrrd", Geometry(GEOMETRY.spacing, tuple(half)), "voxel grid"),
                                   ("far.nrrd", Geometry(GEOMETRY.spacing, tuple(far)), "lies outside the label")):
        volume_io.write_labelmap(files / name, pred, geometry)
        status, out, err = evaluate(capsys, "--prediction", files / name, "--label", files / "label.nrrd")
        assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert name in err and needle in err, err


def test_geometry_mismatch_is_one_line_error(files, capsys):
    volume_io.write_labelmap(files / "other.nrrd", np.zeros((4, 10, 12), np.uint8), Geometry((0.25, 0.25, 2.0)))
    status, out, err = evaluate(capsys, "--prediction", files / "other.nrrd", "--label", files / "label.nrrd")
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "other.nrrd" in err and "spacing" in err and "label's" in err


@pytest.mark.parametrize("which", ["--prediction", "--label", "--ignore-scribbles"])
def test_missing_file_names_it(files, capsys, which):
    argv = {"--prediction": files / "pred.seg.nrrd", "--label": files / "label.nrrd",
            "--ignore-scribbles": files / "scribbles.nrrd"}
    argv[which] = files / "absent.nrrd"
    status, _, err = evaluate(capsys, *[str(x) for pair in argv.items() for x in pair])
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "absent.nrrd" in err and which in err


def test_a_2d_label_tile_is_compared_on_the_prediction_grid(tmp_path, capsys):
    import SimpleITK as sitk

    label = np.zeros((10, 12), np.uint8)
    label[2:8, 2:8] = 255  # 36 pixels
    pred = np.zeros((1, 10, 12), np.uint8)
    pred[0, 2:8, 3:9] = 1  # 30 right, 6 wrong, 6 missed
    sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / "label.png"))
    volume_io.write_segmentation(tmp_path / "pred.seg.nrrd", [("heart", pred, volume_io.HEART_COLOR)], GEOMETRY)
    status, out, err = evaluate(capsys, "--prediction", tmp_path / "pred.seg.nrrd", "--label", tmp_path / "label.png",
                                "--json")
    assert status == 0, err
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"]) == (30, 6, 6)


def test_a_folder_of_label_sections_is_compared_on_the_prediction_grid(files, tmp_path, capsys):
    # The label of the fixture as one PNG per section (natural order: s2 before s10); no spacing needed.
    import SimpleITK as sitk

    label = volume_io.read_label_volume(files / "label.nrrd").array
    folder = tmp_path / "label_sections"
    folder.mkdir()
    for z, name in enumerate(["s1.png", "s2.png", "s10.png", "s11.png"]):
        sitk.WriteImage(sitk.GetImageFromArray(label[z] * 255), str(folder / name))
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", folder, "--json")
    assert status == 0, err
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (60, 12, 12, 396)
    assert result["sections"] == [1, 2]
    (folder / "s11.png").unlink()  # one section short of the prediction: one line naming the folder
    status, _, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", folder)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "label_sections" in err and "12x10x4" in err


def test_a_full_size_folder_label_against_a_downsampled_prediction(files, tmp_path, capsys):
    # The fixture's label as sections at twice the prediction's in-plane size (each pixel a 2x2 block):
    # --downsample 2 reduces it back, and the counts are the fixture's.
    import SimpleITK as sitk

    label = volume_io.read_label_volume(files / "label.nrrd").array
    folder = tmp_path / "full_size"
    folder.mkdir()
    for z in range(label.shape[0]):
        big = np.kron(label[z], np.ones((2, 2), np.uint8)) * 255
        sitk.WriteImage(sitk.GetImageFromArray(big), str(folder / f"s{z + 1}.png"))
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", folder, "--downsample",
                                2, "--json")
    assert status == 0, err
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (60, 12, 12, 396)
    status, _, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", folder)
    assert status == 2 and "24x20x4" in err and "12x10x4" in err and "--downsample 2" in err
    # The command's flag, never the library's parameter name, in what it tells the user.
    assert "with downsample" not in err and " downsample 2" not in err.replace("--downsample 2", "")


def test_a_full_size_3d_label_against_a_downsampled_prediction(files, tmp_path, capsys):
    # The label of the image file itself (its own grid, as the phantom and Slicer save it) and a prediction of
    # that image read with --downsample 2: the label is reduced as the image was, on the grid the image had.
    label = volume_io.read_label_volume(files / "label.nrrd")
    fine = Geometry((0.25, 0.25, 2.0), (1.0 - 0.125, 2.0 - 0.125, 3.0))  # 2x2 voxels per fixture voxel
    assert fine.scaled((2, 2, 1)).mismatch(GEOMETRY) == ""
    big = np.kron(label.array, np.ones((1, 2, 2), np.uint8))
    volume_io.write_segmentation(tmp_path / "full.seg.nrrd", [("heart", big, volume_io.HEART_COLOR)], fine)
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", tmp_path / "full.seg.nrrd",
                                "--downsample", 2, "--json")
    assert status == 0, err
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (60, 12, 12, 396)
    # Without it: the grids differ, and the error says which --downsample would compare them.
    status, _, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", tmp_path / "full.seg.nrrd")
    assert status == 2 and len(err.splitlines()) == 1
    assert "spacing" in err and "give --downsample 2" in err
    # Another factor than the prediction's: the one it was read with, not "read the stack again" as before.
    status, _, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", tmp_path / "full.seg.nrrd",
                              "--downsample", 4)
    assert status == 2 and err.strip() == (
        "scribbleseg evaluate: error: --downsample 4: the prediction's voxels are 2x2 of the label's in-plane (0.5 "
        "against 0.25 mm): the image was segmented with --downsample 2; give --downsample 2"), err
    # A label already on the prediction's grid is used as it is, --downsample or not.
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                                "--downsample", 2, "--json")
    assert status == 0 and json.loads(out)["tp"] == 60


def test_a_prediction_of_as_many_voxels_at_another_spacing_is_not_sent_to_downsample(files, tmp_path, capsys):
    # The image segmented with a --spacing twice its file's: the prediction holds the label's voxels, each twice
    # the size (and the file's origin).  --downsample 2 would not help; the --spacing it was segmented with would.
    label = volume_io.read_label_volume(files / "label.nrrd")
    coarse = Geometry((1.0, 1.0, 2.0), GEOMETRY.origin)
    volume_io.write_segmentation(tmp_path / "coarse.seg.nrrd", [("heart", label.array, volume_io.HEART_COLOR)],
                                 coarse)
    status, _, err = evaluate(capsys, "--prediction", tmp_path / "coarse.seg.nrrd", "--label", files / "label.nrrd")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "--downsample" not in err and "--spacing" in err


def test_a_full_size_3d_label_with_a_part_block_left_over_against_a_downsampled_prediction(files, tmp_path, capsys):
    # An image of 21x25 pixels read with --downsample 2 is 10x12: segment drops the last row and column.
    # evaluate padded its label to 11x13 blocks instead, counted that row and column, and warned that the
    # prediction looked cropped or of another image.
    label = volume_io.read_label_volume(files / "label.nrrd")
    fine = Geometry((0.25, 0.25, 2.0), (1.0 - 0.125, 2.0 - 0.125, 3.0))
    big = np.pad(np.kron(label.array, np.ones((1, 2, 2), np.uint8)), ((0, 0), (0, 1), (0, 1)))
    big[1, -1, :] = big[1, :, -1] = 1  # heart in the left-over row and column: not in the image as read
    volume_io.write_segmentation(tmp_path / "full.seg.nrrd", [("heart", big, volume_io.HEART_COLOR)], fine)
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", tmp_path / "full.seg.nrrd",
                                "--downsample", 2, "--json")
    assert status == 0 and err == ""
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (60, 12, 12, 396)


def test_a_full_size_label_cropped_at_an_odd_voxel_against_a_downsampled_prediction(files, tmp_path, capsys):
    # Slicer crops a segmentation to what it marks; a crop starting on an odd voxel was reduced in blocks that
    # straddled the image's, and refused as "not on the label's voxel grid".
    label = volume_io.read_label_volume(files / "label.nrrd")
    fine = Geometry((0.25, 0.25, 2.0), (1.0 - 0.125, 2.0 - 0.125, 3.0))
    big = np.kron(label.array, np.ones((1, 2, 2), np.uint8))
    big[1, 3, 3] = 1  # a voxel of the crop's first row and column (on odd voxels of the full grid)
    crop = Geometry(fine.spacing, (fine.origin[0] + 3 * 0.25, fine.origin[1] + 3 * 0.25, fine.origin[2]))
    volume_io.write_segmentation(tmp_path / "full.seg.nrrd", [("heart", big, volume_io.HEART_COLOR)], fine)
    volume_io.write_segmentation(tmp_path / "crop.seg.nrrd", [("heart", big[:, 3:17, 3:17], volume_io.HEART_COLOR)],
                                 crop)
    results = []
    for name in ("full.seg.nrrd", "crop.seg.nrrd"):
        status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", tmp_path / name,
                                    "--downsample", 2, "--json")
        assert status == 0, err
        results.append({k: json.loads(out)[k] for k in ("tp", "fp", "fn")})
    assert results[0] == results[1]


def test_a_label_on_the_same_voxels_with_an_axis_flipped_counts_as_the_label(files, tmp_path, capsys):
    # Another tool wrote the label with x running the other way (direction -1, origin at the far end): the same
    # voxels. It was refused as "direction differs".
    label = volume_io.read_label_volume(files / "label.nrrd")
    x_axis = np.asarray(GEOMETRY.direction).reshape(3, 3)[:, 0] * GEOMETRY.spacing[0] * (label.shape[2] - 1)
    flipped = Geometry(GEOMETRY.spacing, tuple(np.asarray(GEOMETRY.origin) + x_axis), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    volume_io.write_labelmap(tmp_path / "flipped.nrrd", label.array[..., ::-1].copy(), flipped)
    counts = []
    for path in (files / "label.nrrd", tmp_path / "flipped.nrrd"):
        status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", path, "--json")
        assert status == 0, err
        counts.append({k: json.loads(out)[k] for k in ("tp", "fp", "fn", "tn")})
    assert counts[0] == counts[1] == {"tp": 60, "fp": 12, "fn": 12, "tn": 396}


def test_an_empty_label_gets_one_warning(files, capsys):
    empty = np.zeros((4, 10, 12), np.uint8)
    volume_io.write_labelmap(files / "empty.nrrd", empty, GEOMETRY)
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "empty.nrrd",
                                "--json")
    assert status == 0 and json.loads(out)["fp"] == 72
    assert err.splitlines() == [f"scribbleseg evaluate: warning: {files / 'empty.nrrd'}: the label marks no heart "
                                "voxel: every predicted voxel counts as a false positive"]


def test_scribbles_given_as_the_label_get_one_warning_as_a_file_and_as_a_folder(files, tmp_path, capsys):
    import SimpleITK as sitk

    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "scribbles.nrrd")
    assert status == 0
    assert err.splitlines() == [f"scribbleseg evaluate: warning: {files / 'scribbles.nrrd'}: looks like scribbles, "
                                "not a label (its values are 0, 1 and 2, as those of scribbles are): every value > 0 "
                                "(or the 'heart' segment) counts as heart"]
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(files / "scribbles.nrrd")))  # 0, 1, 2 per section
    folder = tmp_path / "scribble_sections"
    folder.mkdir()
    for z in range(len(raw)):
        sitk.WriteImage(sitk.GetImageFromArray(raw[z]), str(folder / f"s{z + 1}.png"))
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", folder)
    assert status == 0 and "looks like scribbles" in err and len(err.splitlines()) == 1
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd")
    assert status == 0 and err == ""


def test_scribbles_given_as_the_prediction_get_one_warning(files, capsys):
    # Its background strokes count as heart: the scores look plausible and are wrong.
    status, _, err = evaluate(capsys, "--prediction", files / "scribbles.nrrd", "--label", files / "label.nrrd")
    assert status == 0
    assert err.splitlines() == [f"scribbleseg evaluate: warning: {files / 'scribbles.nrrd'}: looks like scribbles, "
                                "not a segmentation (its values are 0, 1 and 2, as those of scribbles are): every "
                                "value > 0 (or the 'heart' segment) counts as heart"]


def test_a_complete_label_with_a_background_segment_is_not_taken_for_scribbles(files, capsys):
    # Heart, and every other voxel as 'background': a label, which was warned about as scribbles by its names alone.
    label = volume_io.read_label(files / "label.nrrd", (4, 10, 12), GEOMETRY)
    volume_io.write_segmentation(files / "full.seg.nrrd", [("heart", label, volume_io.HEART_COLOR),
                                                           ("background", 1 - label, volume_io.BACKGROUND_COLOR)],
                                 GEOMETRY)
    status, _, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "full.seg.nrrd")
    assert status == 0 and err == ""
    strokes = volume_io.read_scribbles(files / "scribbles.nrrd", (4, 10, 12), GEOMETRY)
    volume_io.write_segmentation(files / "strokes.seg.nrrd", [("heart", strokes == 1, volume_io.HEART_COLOR),
                                                              ("background", strokes == 2, volume_io.BACKGROUND_COLOR)],
                                 GEOMETRY)
    status, _, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "strokes.seg.nrrd")
    assert status == 0 and "looks like scribbles, not a label (it has a 'background' segment" in err


def test_a_tiff_stack_label_is_scored_against_a_run_given_a_spacing(files, tmp_path, capsys):
    import SimpleITK as sitk

    # A TIFF stack states no distance between sections: its label and scribbles lie on a 1 mm grid, the run's
    # prediction (image read with --spacing) on the spacing given.  Without --spacing they cannot be compared.
    label = volume_io.read_label_volume(files / "label.nrrd").array
    strokes = volume_io.read_scribbles(files / "scribbles.nrrd", label.shape, GEOMETRY)
    sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / "label.tif"))
    sitk.WriteImage(sitk.GetImageFromArray(strokes), str(tmp_path / "strokes.tif"))
    args = ["--prediction", files / "pred.seg.nrrd", "--label", tmp_path / "label.tif", "--json"]
    status, _, err = evaluate(capsys, *args)
    assert status != 0 and "spacing" in err
    status, out, err = evaluate(capsys, *args, "--ignore-scribbles", tmp_path / "strokes.tif",
                                "--spacing", "0.5", "0.5", "2")
    assert status == 0, err
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["ignored"]) == (55, 12, 12, 17)  # as test_ignore_scribbles
    status, _, err = evaluate(capsys, *args, "--spacing", "0.5", "0.6", "2")
    assert status != 0 and "pred.seg.nrrd: its voxel size (0.5, 0.5, 2 mm) is not that of an image read with " \
                           "--spacing 0.5 0.6 2" in err and len(err.strip().splitlines()) == 1


def test_a_prediction_tile_twice_the_labels_size_is_not_sent_to_downsample(tmp_path, capsys):
    # --downsample reduces the label, not the prediction: for a prediction larger than the label it cannot help.
    import SimpleITK as sitk

    mask = np.zeros((8, 10), np.uint8)
    mask[2:6, 3:7] = 255
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "label.png"))
    sitk.WriteImage(sitk.GetImageFromArray(np.kron(mask, np.ones((2, 2), np.uint8))), str(tmp_path / "pred.png"))
    for extra in ((), ("--downsample", 2)):
        status, _, err = evaluate(capsys, "--prediction", tmp_path / "pred.png", "--label", tmp_path / "label.png",
                                  *extra)
        assert status == 2 and len(err.strip().splitlines()) == 1
        assert "pred.png" in err and "an image 2 times as large" in err and "--downsample" not in err


def test_the_label_given_as_the_scribbles_to_ignore_is_named(files, capsys):
    # The mask given to --ignore-scribbles left out every heart voxel: IoU 0 with exit 0 and no word.
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                                "--ignore-scribbles", files / "label.nrrd")
    assert status == 0
    assert "label.nrrd: leaves out 15% of the voxels, every heart voxel of the label among them: is it the label" in err
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                                "--ignore-scribbles", files / "scribbles.nrrd")
    assert status == 0 and err == ""


def test_two_section_folders_take_a_3d_scribble_file_on_the_spacing_given(files, tmp_path, capsys):
    # A prediction and a label as PNG folders have no grid of their own; strokes saved as a 3D file on the
    # voxels the image folder was read on (--spacing, origin 0) lie on them only with that spacing.
    import SimpleITK as sitk

    label = volume_io.read_label_volume(files / "label.nrrd").array
    pred = volume_io.read_label_volume(files / "pred.seg.nrrd").array
    strokes = volume_io.read_scribbles(files / "scribbles.nrrd", label.shape, GEOMETRY)
    for name, planes in (("label_png", label), ("pred_png", pred)):
        (tmp_path / name).mkdir()
        for z, plane in enumerate(planes):
            sitk.WriteImage(sitk.GetImageFromArray(plane * 255), str(tmp_path / name / f"s{z + 1}.png"))
    volume_io.write_labelmap(tmp_path / "strokes.nrrd", strokes, Geometry((0.5, 0.5, 2.0)))
    args = ["--prediction", tmp_path / "pred_png", "--label", tmp_path / "label_png",
            "--ignore-scribbles", tmp_path / "strokes.nrrd", "--json"]
    status, _, err = evaluate(capsys, *args)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "strokes.nrrd" in err
    status, out, err = evaluate(capsys, *args, "--spacing", "0.5", "0.5", "2")
    assert status == 0, err
    result = json.loads(out)
    assert (result["tp"], result["fp"], result["fn"], result["ignored"]) == (55, 12, 12, 17)  # as test_ignore_scribbles
    # The same strokes on a copy of the stack placed 40 mm away: only the origin differs, and the error says so.
    volume_io.write_labelmap(tmp_path / "elsewhere.nrrd", strokes, Geometry((0.5, 0.5, 2.0), (40.0, 0.0, 0.0)))
    args[5] = tmp_path / "elsewhere.nrrd"
    status, _, err = evaluate(capsys, *args, "--spacing", "0.5", "0.5", "2")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "elsewhere.nrrd: lies outside the label" in err and "its origin lies (40, 0, 0) mm from the label's" in err


def test_a_cropped_label_against_a_folder_prediction_is_refused_saying_why(files, tmp_path, capsys):
    # A folder of sections has no origin to place a crop by (a 3D prediction has: the test above).
    import SimpleITK as sitk

    pred = volume_io.read_label_volume(files / "pred.seg.nrrd").array
    (tmp_path / "pred_png").mkdir()
    for z, plane in enumerate(pred):
        sitk.WriteImage(sitk.GetImageFromArray(plane * 255), str(tmp_path / "pred_png" / f"s{z + 1}.png"))
    label = volume_io.read_label_volume(files / "label.nrrd").array
    origin = np.asarray(GEOMETRY.origin) + np.array([2, 2, 1]) * np.asarray(GEOMETRY.spacing)
    volume_io.write_segmentation(tmp_path / "crop.seg.nrrd", [("heart", label[1:3, 2:8, 2:8], (1, 0, 0))],
                                 Geometry(GEOMETRY.spacing, tuple(origin), GEOMETRY.direction))
    status, _, err = evaluate(capsys, "--prediction", tmp_path / "pred_png", "--label", tmp_path / "crop.seg.nrrd")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "crop.seg.nrrd: holds 6x6x2 voxels, the prediction" in err and "12x10x4: a label cropped to what it" in err
    # A label of more sections than the folder is another image's, not a crop: the sizes alone are named.
    volume_io.write_labelmap(tmp_path / "other.nrrd", np.zeros((6, 4, 4), np.uint8), GEOMETRY)
    status, _, err = evaluate(capsys, "--prediction", tmp_path / "pred_png", "--label", tmp_path / "other.nrrd")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "has size 12x10x4, the label 4x4x6" in err and "a label cropped" not in err
    # The full label is compared on the folder's sections as they are.
    status, out, err = evaluate(capsys, "--prediction", tmp_path / "pred_png", "--label", files / "label.nrrd",
                                "--json")
    assert status == 0, err
    assert (json.loads(out)["tp"], json.loads(out)["fp"]) == (60, 12)


def test_two_tiles_apart_only_in_their_section_thickness_are_compared(tmp_path, capsys):
    # Two runs on one tile given --spacing 0.02 0.02 0.04 and 0.02 0.02 0.02: "spacing ... differs" refused them,
    # though no pixel of one section depends on its thickness.  Another in-plane size is still refused.
    mask = np.zeros((1, 8, 10), np.uint8)
    mask[0, 2:6, 3:7] = 1
    volume_io.write_labelmap(tmp_path / "label.nrrd", mask, Geometry((0.02, 0.02, 0.04), (1.0, 2.0, 0.0)))
    volume_io.write_labelmap(tmp_path / "pred.nrrd", mask, Geometry((0.02, 0.02, 0.02), (1.0, 2.0, 5.0)))
    status, out, err = evaluate(capsys, "--prediction", tmp_path / "pred.nrrd", "--label", tmp_path / "label.nrrd",
                                "--json")
    assert status == 0, err
    assert json.loads(out)["iou"] == pytest.approx(1.0)
    volume_io.write_labelmap(tmp_path / "other.nrrd", mask, Geometry((0.03, 0.02, 0.02), (1.0, 2.0, 0.0)))
    status, _, err = evaluate(capsys, "--prediction", tmp_path / "other.nrrd", "--label", tmp_path / "label.nrrd")
    assert status == 2 and "spacing" in err


def test_a_downsample_a_label_of_the_predictions_voxel_size_does_not_need_is_said_to_be_left_unused(files, capsys):
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", files / "label.nrrd",
                                "--downsample", 2, "--json")
    assert status == 0 and "--downsample 2 is left unused" in err
    assert json.loads(out)["iou"] == pytest.approx(60 / 84)


def test_a_label_saved_without_a_geometry_is_compared_on_the_predictions_voxels(files, tmp_path, capsys):
    # A truth label saved from numpy (1 mm voxels at the origin) against a prediction on the image's grid:
    # "does not match the label" refused it.
    import SimpleITK as sitk

    label = volume_io.read_label_volume(files / "label.nrrd").array
    sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / "bare.nrrd"))
    status, out, err = evaluate(capsys, "--prediction", files / "pred.seg.nrrd", "--label", tmp_path / "bare.nrrd",
                                "--json")
    assert status == 0, err
    assert json.loads(out)["iou"] == pytest.approx(60 / 84) and "states no voxel size" in err
