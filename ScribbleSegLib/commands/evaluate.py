"""``scribbleseg evaluate``: precision, recall, F1 and IoU of a prediction against a label."""

import argparse
import json
from pathlib import Path

from ..errors import ScribbleSegError
from .common import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--prediction", required=True, metavar="P",
                        help="predicted labelmap (> 0 = heart; a file or a folder of 2D sections) or .seg.nrrd "
                             "(segment 'heart', or its only segment)")
    parser.add_argument("--label", required=True, metavar="L",
                        help="ground-truth labelmap (> 0 = heart; a file or a folder of 2D sections) or .seg.nrrd "
                             "with a segment 'heart'")
    parser.add_argument("--ignore-scribbles", metavar="S",
                        help="scribbles (labelmap or .seg.nrrd); their voxels are left out of every count")
    parser.add_argument("--downsample", type=positive_int, default=1, metavar="N",
                        help="the prediction is of an image read with --downsample N: a label (or scribbles) "
                             "given as 2D sections at full size is reduced the same way")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from .. import metrics, volume_io

    for option, value in (("--prediction", args.prediction), ("--label", args.label),
                          ("--ignore-scribbles", args.ignore_scribbles)):
        if value is not None and not (Path(value).is_file() or Path(value).is_dir()):
            raise ScribbleSegError(f"{value}: no such file or folder ({option})")

    # The label's grid is the reference; a prediction saved cropped by Slicer is placed back onto it.  A label
    # that is one 2D section, or a folder of them, has no grid of its own: then the prediction's is the reference.
    if volume_io.takes_image_grid(args.label) and not volume_io.takes_image_grid(args.prediction):
        own = volume_io.read_label_volume(args.prediction, single_segment=True)
        label = volume_io.Volume(volume_io.read_label(args.label, own.shape, own.geometry, reference="prediction",
                                                      downsample=args.downsample), own.geometry)
        prediction = own.array
    else:
        label = volume_io.read_label_volume(args.label)
        prediction = volume_io.read_label(args.prediction, label.shape, label.geometry,
                                          single_segment=True, reference="label")
        if volume_io.is_segmentation_file(args.prediction):
            _warn_if_cropped(args.prediction, label.shape)
    ignore = None
    if args.ignore_scribbles:
        ignore = volume_io.read_scribbles(args.ignore_scribbles, label.shape, label.geometry, reference="label",
                                          downsample=args.downsample) > 0
    result = metrics.evaluate(prediction, label.array, ignore)

    if args.json:
        print(json.dumps({"prediction": str(args.prediction), "label": str(args.label),
                          "ignore_scribbles": args.ignore_scribbles, **result}))
    else:
        print(format_table(result, args.ignore_scribbles is not None))
    return 0


def _warn_if_cropped(path: str, shape) -> None:
    """One warning when a .seg.nrrd prediction covers only part of the label's grid: the rest counts as not
    heart.  Slicer can save a segmentation cropped to its segments, but ``segment`` writes the whole image grid,
    so a smaller grid may as well be another image's result."""
    import logging

    from .. import volume_io

    grid = volume_io.image_file_grid(path)  # the header only: the voxels were read already
    own = grid[0] if grid is not None else tuple(shape)
    if tuple(own) != tuple(shape):
        size = "x".join(str(int(n)) for n in reversed(tuple(own)))
        full = "x".join(str(int(n)) for n in reversed(tuple(shape)))
        logging.getLogger("ScribbleSegLib").warning(
            "%s: covers %s voxels of the label's %s; the rest counts as not heart (check that it is a result "
            "for this image: a segmentation saved cropped in Slicer looks the same)", path, size, full)


def format_table(result: dict, scribbles_ignored: bool) -> str:
    """The human-readable report of one :func:`ScribbleSegLib.metrics.evaluate` result."""
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
