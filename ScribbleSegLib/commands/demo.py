"""``scribbleseg demo``: the whole product on a synthetic embryo, in minutes on a CPU.

Makes phantom volumes (2 train, 1 validation, 1 test), trains a small M-Unet and
a plain U-Net, simulates scribbles on every 10th heart section (``choices.SCRIBBLE_EVERY``) of the test
volume, segments it with the library's default adaptation and cut, prints a Table
I-style table and writes the results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import choices
from .common import (EXPERIMENT_PARAMETER_FLAGS, add_experiment_options, check_device_flag, check_phantom_shape,
                     output_folder_kept_on_success)

# The library's parameters this command takes as flags: its messages are shown with the flags' names.
PARAMETER_FLAGS = EXPERIMENT_PARAMETER_FLAGS

#: What the demo writes besides its two models, all at once at the end (``demo.json`` lists all its files).
RESULT_FILES = ("test_image.nrrd", "test_label.seg.nrrd", "scribbles.seg.nrrd", "heart.seg.nrrd", "heart.stl",
                "heart.png", "overlay.png", "table.md", "demo.json")
#: The models it trains into the folder first.
MODEL_FILES = ("munet.model", "unet.model")
#: ``demo.json``'s ``format``: what says a folder's files are an earlier demo's, which a demo replaces.
MANIFEST_FORMAT = "scribbleseg-demo"


def check_replaced(out: Path) -> None:
    """Refuse a demo whose files would replace files in ``out`` that no earlier demo wrote (its ``demo.json`` lists
    them): a user's own ``table.md`` or ``heart.seg.nrrd`` in the folder was replaced without a word.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> check_replaced(out)  # an empty folder
    >>> _ = (out / "table.md").write_text("my notes")
    >>> check_replaced(out)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: .../table.md: exists and is not a file of an earlier demo (its demo.json \
does not list it); the demo would replace it: choose another folder (--out), or move the file
    """
    from ..errors import ScribbleSegError

    try:
        stored = json.loads((out / "demo.json").read_text())
        ours = set(stored["files"]) if stored.get("format") == MANIFEST_FORMAT else set()
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        ours = set()  # no manifest of ours: none of the files is an earlier demo's
    for name in MODEL_FILES + RESULT_FILES:
        if name not in ours and (out / name).exists():
            raise ScribbleSegError(f"{out / name}: exists and is not a file of an earlier demo (its demo.json does not "
                                   "list it); the demo would replace it: choose another folder (--out), or move the "
                                   "file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args([])
    >>> args.out, args.train_minutes, args.shape
    ('scribbleseg-demo', 6.0, None)
    """
    add_experiment_options(parser, "scribbleseg-demo", 6.0)


def run(args: argparse.Namespace) -> int:
    """Run the command.

    Examples
    --------
    A phantom shape too small is refused before any work (and before the output folder is made):

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--shape", "2", "64", "64"]))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: --shape 2 64 64: phantom shape 2 64 64 is too small: at least 4 ...
    """
    check_phantom_shape(args.shape)  # before any work: a shape the phantom or the memory cannot take
    check_device_flag(args.device)
    # A demo that fails leaves no folder it made (the models are the demo's own): it is the same demo again.
    if args.out and Path(args.out).is_dir():
        check_replaced(Path(args.out))
    with output_folder_kept_on_success(args.out, with_contents=True) as out:
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    from .. import protocol, scribbles, surface, volume_io
    from ..fileio import OutputSet
    from ..overlay import write_overlay_png
    from ..progress import TqdmProgress

    started = time.perf_counter()
    bar = TqdmProgress(disable=args.quiet)

    def step(message: str) -> None:
        bar.close()
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    step("making 4 phantom volumes (2 train, 1 validation, 1 test)")
    vols = protocol.make_volumes(4, args.seed, args.shape)
    train, val, test = vols[:2], vols[2:3], vols[3]
    models = protocol.train_networks(train, val, out, args.train_minutes, args.device, args.seed, progress=bar,
                                     log=step)

    step(f"simulating scribbles on {choices.every_nth(choices.SCRIBBLE_EVERY)} heart section of the test volume")
    scrib = scribbles.simulate_scribbles(test.label, seed=args.seed, every=choices.SCRIBBLE_EVERY,
                                         tissue=test.tissue > 0)
    step("segmenting the test volume: M-Unet, U-Net, DDML + head, 3D graph cut")
    outputs = protocol.compute_outputs(test.image.array, models["munet"], models["unet"], device=args.device,
                                       progress=bar)
    run_, result = protocol.evaluate_pattern(test.image, test.label, scrib, models["munet"], outputs,
                                             seed=args.seed)
    final = result.labels

    step("writing results")
    geometry = test.image.geometry
    # evaluate_pattern ran the library's default adaptation and cut: name the rows for what they ran.
    table = protocol.table_i([run_], labels=protocol.DEFAULT_ROWS)
    # Staged and renamed together: a fault while writing leaves none of them.
    with OutputSet({name: out / name for name in RESULT_FILES}) as results:
        volume_io.write_rgb_volume(results.path("test_image.nrrd"), test.image)
        volume_io.write_segmentation(results.path("test_label.seg.nrrd"),
                                     [("heart", test.label, volume_io.HEART_COLOR)], geometry)
        volume_io.write_segmentation(results.path("scribbles.seg.nrrd"),
                                     [("heart", scrib == 1, volume_io.HEART_COLOR),
                                      ("background", scrib == 2, volume_io.BACKGROUND_COLOR)], geometry)
        volume_io.write_segmentation(results.path("heart.seg.nrrd"), [("heart", final, volume_io.HEART_COLOR)],
                                     geometry)
        poly = surface.labelmap_to_surface(final, geometry)
        surface.write_surface(results.path("heart.stl"), poly)
        surface.render_surface_png(poly, results.path("heart.png"))
        sections = protocol.pick_overlay_sections(test.label, scrib)
        write_overlay_png(results.path("overlay.png"), test.image.array, sections, prediction=final,
                          truth=test.label, scribbles=scrib)
        results.path("table.md").write_text(table + "\n")
        results.path("demo.json").write_text(json.dumps({"format": MANIFEST_FORMAT,
                                                         "files": list(MODEL_FILES + RESULT_FILES)}, indent=1) + "\n")
        results.commit()

    print()
    print(f"Table I on the demo's test phantom (one scribble pattern on {choices.every_nth(choices.SCRIBBLE_EVERY)} "
          "heart section; "
          "metrics over all voxels; the adaptation and cut rows use the library's defaults, the paper column "
          "the paper's M-Unet+DDML and +GC):")
    print(table)
    print()
    print(f"wrote {out}/: heart.seg.nrrd (result), heart.stl + heart.png (surface), overlay.png "
          f"(red: result, green: truth outline, yellow/blue: scribbles), test_image.nrrd, test_label.seg.nrrd, "
          f"scribbles.seg.nrrd, munet.model, unet.model, table.md")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0
