"""``scribbleseg evaluate``: precision, recall, F1 and IoU of a prediction against a label."""

import argparse
import json
from pathlib import Path

from ..errors import ScribbleSegError
from .common import IMAGE_PARAMETER_FLAGS, positive_int, spacing_mm

# The library's messages name the image options as parameters ("read it with downsample 2"): here, as flags.
PARAMETER_FLAGS = IMAGE_PARAMETER_FLAGS

#: ``--ignore-scribbles`` that leave out more than this share of the voxels are named: strokes mark a few.
IGNORED_SHARE = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--prediction", "heart.seg.nrrd", "--label", "truth.seg.nrrd", "--json"])
    >>> args.ignore_scribbles, args.downsample, args.spacing, args.json
    (None, 1, None, True)
    """
    parser.add_argument("--prediction", required=True, metavar="P",
                        help="predicted labelmap (> 0 = heart; a file or a folder of 2D sections) or .seg.nrrd "
                             "(segment 'heart', or its only segment)")
    parser.add_argument("--label", required=True, metavar="L",
                        help="ground-truth labelmap (> 0 = heart; a file or a folder of 2D sections) or .seg.nrrd "
                             "with a segment 'heart'")
    parser.add_argument("--quiet", action="store_true",
                        help="taken, as every command takes it; this one shows no progress bar")
    parser.add_argument("--ignore-scribbles", metavar="S",
                        help="scribbles (labelmap or .seg.nrrd); their voxels are left out of every count")
    parser.add_argument("--downsample", type=positive_int, default=1, metavar="N",
                        help="the prediction is of an image read with --downsample N: a full-size label (a 3D "
                             "file on the image file's grid, or 2D sections) and scribbles are reduced the same way")
    parser.add_argument("--spacing", nargs=3, type=spacing_mm, metavar=("X", "Y", "Z"),
                        help="the voxel size in mm the image was read with (segment's --spacing): a label and "
                             "scribbles on the image file's own grid (a TIFF stack's, which states no distance "
                             "between sections) are taken on the prediction's voxels; a prediction and a label "
                             "that are both folders of sections get that grid, for scribbles in a 3D file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run the command.

    Examples
    --------
    A file that is not there is refused before anything is read:

    >>> run(argparse.Namespace(prediction="/no/such/heart.seg.nrrd", label="truth.seg.nrrd", ignore_scribbles=None))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: /no/such/heart.seg.nrrd: no such file or folder (--prediction)
    """
    from .. import metrics, volume_io
    from ..geometry import Geometry

    for option, value in (("--prediction", args.prediction), ("--label", args.label),
                          ("--ignore-scribbles", args.ignore_scribbles)):
        if value is not None and not (Path(value).is_file() or Path(value).is_dir()):
            raise ScribbleSegError(f"{value}: no such file or folder ({option})")

    # Both are read on their own grids.  Slicer saves segmentations, and exports labelmaps, cropped to what they
    # mark: two boxes of one voxel grid are compared on the box that holds both.  A label that is one 2D section,
    # or a folder of them, has no grid of its own: then the prediction's is the reference, and the other way round.
    on_file_grid = _on_image_file_grid(args) if args.spacing else None
    if on_file_grid is not None:
        label, prediction = on_file_grid
    elif volume_io.takes_image_grid(args.label) and not volume_io.takes_image_grid(args.prediction):
        own = volume_io.read_label_volume(args.prediction)
        label = volume_io.Volume(volume_io.read_label(args.label, own.shape, own.geometry, reference="prediction",
                                                      downsample=args.downsample, downsample_hint=True), own.geometry)
        prediction = own.array
    elif volume_io.takes_image_grid(args.prediction):
        label = volume_io.read_label_volume(args.label)
        if args.spacing and volume_io.takes_image_grid(args.label):
            # Neither has a grid of its own: they lie on the voxels the image was read on, which strokes in a 3D
            # file are placed on (segment's sections at --spacing, origin 0).
            label = volume_io.Volume(label.array, Geometry(tuple(float(v) for v in args.spacing)))
            label = volume_io.reduce_label_volume(label, args.downsample)
        try:
            prediction = volume_io.read_label(args.prediction, label.shape, label.geometry, reference="label")
        except ScribbleSegError:
            if not volume_io.takes_image_grid(args.label):
                _refuse_a_crop(args.label, label.shape, args.prediction)  # says why, where the label is a crop
            raise
    else:
        label = volume_io.read_label_volume(args.label)
        own = volume_io.read_label_volume(args.prediction)
        label, prediction = _on_one_grid(args.prediction, args.label,
                                         _as_read_with_downsample(label, own, args.downsample), own)
    import logging

    if not label.array.any():
        logging.getLogger("ScribbleSegLib").warning(
            "%s: the label marks no heart voxel: every predicted voxel counts as a false positive", args.label)
    for path, what in ((args.label, "a label"), (args.prediction, "a segmentation")):
        why = volume_io.scribbles_like(path)
        if why is not None:  # its background strokes would count as heart
            logging.getLogger("ScribbleSegLib").warning(
                "%s: looks like scribbles, not %s (%s): every value > 0 (or the 'heart' segment) counts as heart",
                path, what, why)
    ignore = None
    if args.ignore_scribbles:
        strokes = None
        if on_file_grid is not None and not volume_io.takes_image_grid(args.ignore_scribbles):
            strokes = volume_io.marks_on_file_grid(args.ignore_scribbles, args.label, label.shape,
                                                   spacing=args.spacing, downsample=args.downsample, strokes=True)
        if strokes is None:
            # Strokes outside the voxels compared (two files Slicer cropped to what they mark) count nowhere.
            strokes = volume_io.read_scribbles(args.ignore_scribbles, label.shape, label.geometry, reference="label",
                                               downsample=args.downsample, both_classes=False, outside_dropped=True)
        ignore = strokes > 0
        share = float(ignore.mean()) if ignore.size else 0.0
        every_heart = bool(label.array.any()) and not (label.array.astype(bool) & ~ignore).any()
        if every_heart or share > IGNORED_SHARE:
            # The mask given as the scribbles (a slip between two files of one tile) left out all there was to score.
            logging.getLogger("ScribbleSegLib").warning(
                "%s: leaves out %.0f%% of the voxels%s: is it the label, not the scribbles?", args.ignore_scribbles,
                100 * share, ", every heart voxel of the label among them" if every_heart else "")
    result = metrics.evaluate(prediction, label.array, ignore)

    if args.json:
        print(json.dumps({"prediction": str(args.prediction), "label": str(args.label),
                          "ignore_scribbles": args.ignore_scribbles, **result}))
    else:
        print(format_table(result, args.ignore_scribbles is not None))
    return 0


def _refuse_a_crop(label_path: str, label_shape, prediction_path: str) -> None:
    """Refuse a label smaller than a prediction that is a folder of sections or a 2D file, saying why: Slicer saves
    a segmentation cropped to what it marks, which its origin places on a 3D prediction, but such a prediction has
    no origin to place it by.  Called once the prediction did not fit the label: a run that fits reads it once."""
    from .. import volume_io

    shape = volume_io.read_label_volume(prediction_path).shape
    (z, y, x), (pz, py, px) = label_shape, shape
    whole_multiple = z == pz and py % y == 0 and px % x == 0 and py // y == px // x  # read_label's size hints
    # A crop is no larger than the prediction along any axis: a label of more sections is another image's.
    crop = all(a <= b for a, b in zip(label_shape, shape)) and any(a < b for a, b in zip(label_shape, shape))
    if crop and not whole_multiple:
        sizes = ["x".join(str(int(n)) for n in s[::-1]) for s in (label_shape, shape)]
        raise ScribbleSegError(
            f"{label_path}: holds {sizes[0]} voxels, the prediction {prediction_path} {sizes[1]}: a label cropped to "
            "what it marks (as Slicer saves segmentations) cannot be placed on a folder of sections or a 2D file, "
            "which has no origin; save the label at the image's full size")


def _on_image_file_grid(args: argparse.Namespace):
    """``(label Volume, prediction array)`` when the label is a 3D file on the grid of the image file that was
    read with ``--spacing`` (and ``--downsample``), as segment places strokes drawn there; None otherwise (a
    label on the prediction's own grid, or cropped: compared as without ``--spacing``)."""
    import numpy as np

    from .. import volume_io

    if volume_io.takes_image_grid(args.label) or volume_io.takes_image_grid(args.prediction):
        return None
    own = volume_io.read_label_volume(args.prediction)
    read_with = np.asarray(args.spacing, float) * (args.downsample, args.downsample, 1)
    if not _same_spacing(own.geometry.spacing, read_with):
        raise ScribbleSegError(
            f"{args.prediction}: its voxel size ({', '.join(f'{v:g}' for v in own.geometry.spacing)} mm) is not "
            f"that of an image read with --spacing {' '.join(f'{v:g}' for v in args.spacing)}"
            + (f" and --downsample {args.downsample}" if args.downsample > 1 else ""))
    marks = volume_io.marks_on_file_grid(args.label, args.label, own.shape, spacing=args.spacing,
                                         downsample=args.downsample, strokes=False)
    return None if marks is None else (volume_io.Volume(marks, own.geometry), own.array)


def _as_read_with_downsample(label, prediction, downsample: int):
    """The label (on its own grid) reduced as the image was read with ``downsample``, unless it already has the
    prediction's voxel size (a label drawn on the reduced image)."""
    from .. import volume_io

    if downsample == 1:
        return label
    if _same_spacing(label.geometry.spacing, prediction.geometry.spacing):
        import logging

        logging.getLogger("ScribbleSegLib").info("the label already has the prediction's voxel size: --downsample %d "
                                                 "is left unused", downsample)
        return label
    (lx, ly, lz), (px, py, pz) = label.geometry.spacing, prediction.geometry.spacing
    used = round(px / lx)
    if used not in (0, downsample) and _same_spacing((px, py, pz), (lx * used, ly * used, lz)):
        # Told that the label was "drawn on the stack at 2 times this resolution", a user who gave the wrong factor
        # was sent to read the stack again.
        raise ScribbleSegError(f"--downsample {downsample}: the prediction's voxels are {used}x{used} of the label's "
                               f"in-plane ({px:g} against {lx:g} mm): the image was segmented with --downsample "
                               f"{used}; give --downsample {used}")
    return volume_io.reduce_label_volume(_on_whole_blocks(label, prediction.geometry, downsample,
                                                          prediction.shape), downsample)


def _on_whole_blocks(label, reduced, downsample: int, shape):
    """The label padded with empty voxels to whole blocks of the image's full-resolution grid, as ``reduced`` (the
    grid of an image read with ``downsample``, ``shape`` voxels) was made of: Slicer crops a segmentation to what it
    marks, and a crop that starts on an odd voxel would otherwise be reduced in blocks that straddle the image's.
    What lies in the image's last part block, which the reading drops, is dropped too: padded, it made a label
    one block larger than the image, and a warning that it was cropped or of another image."""
    import numpy as np

    from .. import grids
    from ..geometry import Geometry, Volume

    n = int(downsample)
    full = reduced.scaled((1 / n, 1 / n, 1))  # the grid ``reduced`` was made from (Geometry.scaled, undone)
    direction = np.asarray(reduced.direction, float).reshape(3, 3)
    offset = grids.whole_voxel_offset(full, label.geometry)
    if offset is None:  # not on that grid: reduced as it is, and the grids compared as before
        return label
    _, y, x = label.shape
    lead_y, lead_x = int(offset[1]) % n, int(offset[2]) % n
    pad = ((0, 0), (lead_y, (-(lead_y + y)) % n), (lead_x, (-(lead_x + x)) % n))
    keep = []
    for axis, (_, trail) in ((1, pad[1]), (2, pad[2])):
        end = int(offset[axis]) + label.shape[axis] + trail  # where the padded label ends, on the image
        beyond = end - n * int(shape[axis])
        keep.append(slice(None, -beyond) if 0 < beyond <= n else slice(None))
    if not any(sum(p) for p in pad):
        return label if keep == [slice(None)] * 2 else Volume(label.array[:, keep[0], keep[1]], label.geometry)
    moved = np.asarray(label.geometry.origin) - direction @ (np.asarray(label.geometry.spacing) * (lead_x, lead_y, 0))
    return Volume(np.pad(label.array, pad)[:, keep[0], keep[1]],
                  Geometry(label.geometry.spacing, tuple(moved), label.geometry.direction))


def _same_spacing(a, b) -> bool:
    import numpy as np

    return bool(np.allclose(b, a, rtol=1e-3, atol=0))  # as Geometry.mismatch compares spacings


def _downsample_hint(label, prediction) -> str:
    """`` (... --downsample K)`` when the prediction's voxels are K x K of the label's in-plane over the label's
    extent; `` (... --spacing)`` when the two have as many voxels of other sizes; else ``""``."""
    (lx, ly, lz), (px, py, pz) = label.geometry.spacing, prediction.geometry.spacing
    factor = round(px / lx)
    if factor > 1 and _same_spacing((px, py, pz), (lx * factor, ly * factor, lz)):
        # Read with --downsample K, a section of n pixels has n // K: the label then covers K times as many.
        if all(n // factor == m for n, m in zip(label.shape[1:], prediction.shape[1:])):
            return (f" (the label has {factor}x{factor} voxels in-plane to each of the prediction's, as the image "
                    f"has when it is read with --downsample {factor}: give --downsample {factor} to reduce the "
                    "label so)")
    if tuple(label.shape) == tuple(prediction.shape) and not _same_spacing((px, py, pz), (lx, ly, lz)):
        # The same voxels at another size: the image was segmented with a --spacing other than its file's.
        return (" (the two have as many voxels, of other sizes: if the image was segmented with --spacing, give "
                "evaluate the same --spacing)")
    return ""


def _thickness_of(volume, reference):
    """``volume``'s geometry with ``reference``'s section spacing, and its origin along the sections."""
    import numpy as np

    from ..geometry import Geometry

    geometry, other = volume.geometry, reference.geometry
    normal = np.asarray(geometry.direction).reshape(3, 3)[:, 2]
    # The origin moved along the sections' normal to the reference's plane: in-plane it stays.
    along = float(normal @ (np.asarray(other.origin) - np.asarray(geometry.origin)))
    return Geometry((geometry.spacing[0], geometry.spacing[1], other.spacing[2]),
                    tuple(np.asarray(geometry.origin) + along * normal), geometry.direction)


def _on_one_grid(prediction_path: str, label_path: str, label, own):
    """The label (a Volume) and the prediction (an array) on one grid: the label's, or the box of its grid that
    holds both files' boxes, with one warning when the boxes differ.  A prediction on no box of the label's grid
    is refused as :func:`ScribbleSegLib.volume_io.read_label` words it."""
    import logging

    from .. import grids, volume_io

    if own.shape == label.shape and not label.geometry.mismatch(own.geometry):
        return label, own.array
    if own.shape == label.shape and own.shape[0] == 1 and not label.geometry.mismatch(_thickness_of(own, label)):
        # One section each, apart only in the thickness a tile's Z spacing states (which no pixel depends on).
        return label, own.array
    if own.shape == label.shape and volume_io.states_no_grid(label.geometry):
        # A label saved from numpy states 1 mm voxels at the origin: of the prediction's size, it is on its voxels
        # (as segment and train read such a label on the image's).
        logging.getLogger("ScribbleSegLib").info(volume_io.NO_GRID_NOTE, label_path, "prediction", "prediction")
        return volume_io.Volume(label.array, own.geometry), own.array
    offset = grids.whole_voxel_offset(label.geometry, own.geometry)
    if offset is None or not grids.overlaps(label.geometry, label.shape, own.geometry, own.shape):
        # Not a box of the label's grid: placed by read_label if it can be (the label's voxels with an axis
        # flipped, as another tool writes them), refused as it words it otherwise.
        try:
            placed = volume_io.read_label(prediction_path, label.shape, label.geometry, reference="label")
        except ScribbleSegError as exc:
            raise ScribbleSegError(f"{exc}{_downsample_hint(label, own)}") from None
        return label, placed
    shape, at_label, at_prediction = grids.union_box(label.shape, own.shape, offset)
    if tuple(shape) != tuple(label.shape) or tuple(own.shape) != tuple(label.shape):
        logging.getLogger("ScribbleSegLib").warning(
            "%s covers %s voxels and the label %s %s voxels of one grid; compared on the %s voxels that hold both, "
            "each counting as not heart outside its own box (check that the prediction is for this image: a "
            "segmentation saved cropped in Slicer looks the same)", prediction_path, _size(own.shape), label_path,
            _size(label.shape), _size(shape))
    geometry = grids.box_geometry(label.geometry, -at_label)
    return (volume_io.Volume(grids.place(label.array, at_label, shape)[0], geometry),
            grids.place(own.array, at_prediction, shape)[0])


def _size(shape_zyx) -> str:
    return "x".join(str(int(n)) for n in reversed(tuple(shape_zyx)))


def format_table(result: dict, scribbles_ignored: bool) -> str:
    """The human-readable report of one :func:`ScribbleSegLib.metrics.evaluate` result.

    Examples
    --------
    >>> import numpy as np
    >>> from ScribbleSegLib.metrics import evaluate
    >>> label = np.zeros((2, 4, 4), np.uint8); label[0, 1:3, 1:3] = 1
    >>> print(format_table(evaluate(label, label), False).splitlines()[3])
    IoU              1.0000
    """
    rows = [
        ("precision", f"{result['precision']:.4f}"),
        ("recall", f"{result['recall']:.4f}"),
        ("F1 (Dice)", f"{result['f1']:.4f}"),
        ("IoU", f"{result['iou']:.4f}"),
        ("mean section F1", f"{result['mean_section_f1']:.4f}"
                            f"  over {len(result['sections'])} sections with heart in label or prediction"),
        ("voxels", f"{result['voxels']:,}  (TP {result['tp']:,}, FP {result['fp']:,}, "
                   f"FN {result['fn']:,}, TN {result['tn']:,})"),
    ]
    if scribbles_ignored:
        rows.append(("ignored", f"{result['ignored']:,} scribbled voxels"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
