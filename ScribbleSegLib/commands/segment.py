"""``scribbleseg segment``: segment a volume from scribbles with a trained model."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from .. import choices
from .common import (DEVICE_PARAMETER_FLAGS, IMAGE_PARAMETER_FLAGS, add_device_option, add_image_options,
                     folder_path, nonnegative_float, nonnegative_int, positive_float, seed_int)

# How the job's fields are called on the command line, for its messages.
OPTION_NAMES = {"image": "--image", "scribbles": "--scribbles", "model": "--model", "labels": "--out",
                "probability": "--probability", "surface": "--surface", "render": "--render",
                "method": "--method", "device": "--device", "seed": "--seed", "cut": "graph cut options",
                "orientations": "--orientations", "spacing": "--spacing", "downsample": "--downsample",
                "cache_dir": "--cache-dir"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--image", "stack.nrrd", "--scribbles", "strokes.nrrd", "--model", "starter",
    ...                           "--out", "heart.seg.nrrd"])
    >>> args.method, args.gamma, args.orientations, args.suggest  # gamma None: the cut's own default
    ('full', None, 1, 3)
    """
    parser.add_argument("--image", required=True, help="3D image file, folder of sections, or one 2D section (a tile)")
    parser.add_argument("--scribbles", help="labelmap (1 heart, 2 background; a file, or a folder of 2D sections "
                        "like the image's) or .seg.nrrd with segments 'heart' and 'background' (not needed for "
                        "--method munet)")
    parser.add_argument("--model", required=True,
                        help="model file from 'scribbleseg train', or 'starter' for the shipped starter model")
    parser.add_argument("--out", required=True,
                        help="output segmentation (.seg.nrrd; .nrrd, .nii, .nii.gz, .mha: labelmap; .png: a tile's "
                             "mask, 0 and 255)")
    parser.add_argument("--method", default=choices.DEFAULT_METHOD, choices=choices.METHODS,
                        help="stop after the M-Unet, after DDML + head, or run the graph cut (default)")
    parser.add_argument("--probability", metavar="P.nrrd", help="also write the final probability volume")
    parser.add_argument("--surface", metavar="X.stl|X.vtp|X.obj", help="also write the closed surface (LPS mm)")
    parser.add_argument("--render", metavar="X.png", help="also render the surface offscreen to a PNG")
    add_image_options(parser)
    add_device_option(parser)
    cut = parser.add_argument_group("graph cut (paper eq. 4-6)")
    cut.add_argument("--gamma", type=nonnegative_float,
                     help=f"weight of the boundary term (default {choices.DEFAULT_GAMMA:g}, which the cut lowers for "
                          "small objects, many objects side by side and a probability sure of its outlines; lower "
                          "it where the cut erases objects that --method ddml finds)")
    cut.add_argument("--sigma", type=positive_float,
                     help=f"colour-contrast scale of the boundary term (default {choices.DEFAULT_SIGMA:g}, which "
                          "the cut lowers for images of soft contrast and sections out of focus)")
    cut.add_argument("--delta", type=nonnegative_float,
                     help=f"constant added to the contrast weight (default {choices.DEFAULT_DELTA:g})")
    cut.add_argument("--neighbourhood", type=int, choices=choices.CUT_NEIGHBOURHOODS,
                     help="6: the paper's grid; 10: in-plane diagonals too (outlines that follow round shapes; "
                          f"default {choices.DEFAULT_CUT_NEIGHBOURHOOD})")
    cut.add_argument("--data-term", choices=choices.CUT_DATA_TERMS,
                     help="the paper's |l - h| (linear) or the clipped log-likelihood ratio (log; default "
                          f"{choices.DEFAULT_CUT_DATA_TERM})")
    cut.add_argument("--seed-reach", type=nonnegative_float, metavar="PIXELS",
                     help="pull the data term within a few PIXELS of each stroke towards its label (default "
                          f"{choices.DEFAULT_SEED_REACH:g}; 0 turns it off)")
    cut.add_argument("--seed-across", type=nonnegative_float, metavar="SHARE",
                     help="how far that pull reaches across sections, as a share of its in-plane reach (default "
                          f"{choices.DEFAULT_SEED_ACROSS:g}; 0: each stroke's own section only)")
    cut.add_argument("--seed-weight", type=positive_float, metavar="TIMES",
                     help="how many times a stroke outweighs the adapted probability on its own voxels in that "
                          f"pull (default {choices.DEFAULT_SEED_WEIGHT:g})")
    cut.add_argument("--seed-edges", type=nonnegative_float, metavar="FACTOR",
                     help="how much colour edges lengthen the pull's way through the tissue (default "
                          f"{choices.DEFAULT_SEED_EDGES:g}; 0: straight-line distance)")
    parser.add_argument("--h-evaluation", choices=choices.H_EVALUATIONS, default=None,
                        help="evaluate the adapted probability coarse-to-fine (default: "
                             f"{choices.DEFAULT_H_EVALUATION}; same labels, faster) or exactly at every voxel")
    parser.add_argument("--orientations", type=int, choices=choices.ORIENTATIONS, default=choices.DEFAULT_ORIENTATIONS,
                        help="test-time flips of the M-Unet: also run it on each section flipped left-right (2), "
                             "and top-bottom and both (4), and average; 2 or 4 times its time (default "
                             f"{choices.DEFAULT_ORIENTATIONS})")
    parser.add_argument("--cache-dir", type=folder_path, default=None,
                        help=f"where M-Unet features are cached (default {choices.default_cache_dir()}, "
                             "or $SCRIBBLESEG_CACHE_DIR)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of the DDML and head training (default: %(default)s)")
    parser.add_argument("--suggest", type=nonnegative_int, default=choices.DEFAULT_SUGGESTIONS, metavar="N",
                        help="print the N sections where another stroke would most likely help (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


#: Fields of GraphCutParams the command line sets (argparse turns --data-term into data_term).
CUT_OPTIONS = ("gamma", "sigma", "delta", "neighbourhood", "data_term", "seed_reach", "seed_across", "seed_weight",
               "seed_edges")
# The library's parameters as this command's flags, in the library's messages (see cli._one_line); a cut setting
# the library refuses ("graph cut options: graph cut: seed_across must be ...") is named by its flag.
PARAMETER_FLAGS = {**IMAGE_PARAMETER_FLAGS, **DEVICE_PARAMETER_FLAGS, "method munet": "--method munet",
                   **{f"{OPTION_NAMES['cut']}: graph cut: {k}": f"--{k.replace('_', '-')}" for k in CUT_OPTIONS}}


def _cut_given(args: argparse.Namespace) -> dict:
    """The cut's options given on the command line (:data:`CUT_OPTIONS` that are not None), by field."""
    return {k: getattr(args, k) for k in CUT_OPTIONS if getattr(args, k) is not None}


def cut_params_from_args(args: argparse.Namespace):
    """``GraphCutParams`` with the defaults replaced by any of the cut's options (:data:`CUT_OPTIONS`).

    Examples
    --------
    >>> from ScribbleSegLib.cli import build_parser
    >>> args = build_parser().parse_args(["segment", "--image", "stack.nrrd", "--scribbles", "strokes.nrrd",
    ...                                   "--model", "starter", "--out", "heart.seg.nrrd", "--gamma", "4"])
    >>> params = cut_params_from_args(args)
    >>> params.gamma, params.sigma  # the option given, and a default
    (4.0, 0.1)
    """
    import dataclasses

    from ..graphcut import GraphCutParams

    return dataclasses.replace(GraphCutParams(), **_cut_given(args))


def job_from_args(args: argparse.Namespace):
    """The :class:`~ScribbleSegLib.jobs.SegmentFiles` job of the command line.

    Examples
    --------
    >>> from ScribbleSegLib.cli import build_parser
    >>> args = build_parser().parse_args(["segment", "--image", "stack.nrrd", "--scribbles", "strokes.nrrd",
    ...                                   "--model", "starter", "--out", "heart.seg.nrrd", "--gamma", "4"])
    >>> job = job_from_args(args)
    >>> job.labels, job.cut, job.name("labels")  # messages name the output by its flag
    ('heart.seg.nrrd', {'gamma': 4.0}, '--out')
    """
    from ..jobs import SegmentFiles

    # A quoted "~/x" reaches us unexpanded: the shell expands only a bare ~.
    cache_dir = (str(Path(args.cache_dir).expanduser()) if args.cache_dir is not None
                 else str(choices.default_cache_dir()))
    cache_dir = None if args.no_cache else cache_dir
    return SegmentFiles(
        image=args.image, model=args.model, labels=args.out, scribbles=args.scribbles,
        probability=args.probability, surface=args.surface, render=args.render, method=args.method,
        spacing=args.spacing, downsample=args.downsample, device=args.device, seed=args.seed, cache_dir=cache_dir,
        cut=_cut_given(args),
        ddml={} if args.h_evaluation is None else {"evaluation": args.h_evaluation},
        names=dict(OPTION_NAMES), suggest=args.suggest, orientations=args.orientations)


def run(args: argparse.Namespace) -> int:
    """Run the command.

    Examples
    --------
    An input that is not there is refused before any work:

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--image", "/no/such/stack.nrrd", "--scribbles", "strokes.nrrd", "--model", "starter",
    ...                        "--out", "heart.seg.nrrd", "--quiet"]))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: /no/such/stack.nrrd: no such file or folder (--image)
    """
    from ..jobs import segment_files
    from ..progress import TqdmProgress

    job = job_from_args(args)
    bar = TqdmProgress(disable=args.quiet)
    # On the handlers that show the library's log: a filter of the logger itself would not see its children's.
    handlers = list(logging.getLogger("ScribbleSegLib").handlers)
    named = _SectionFileNames(_section_files(args.image))
    for handler in handlers:
        handler.addFilter(named)
    try:
        done = segment_files(job, progress=bar)
    finally:
        for handler in handlers:
            handler.removeFilter(named)
        bar.close()
    for line in unused_option_notes(args):  # after the run: a refused option's error stays the one line
        logging.getLogger("ScribbleSegLib").info(line)
    metrics = done.metrics
    tile = metrics["shape_zyx"][0] == 1  # one section: an area (and no suggestion: suggest.suggest_sections)
    if not metrics["pixel_size_stated"]:  # "2913 mm^2" of a PNG's 2913 pixels, which the file gives no size
        size = "no size in mm (the image states no pixel size; give the spacing, in mm)"
    elif tile:
        size = f"{metrics['heart_area_mm2']:.4g} mm^2"
    else:
        size = f"{metrics['heart_volume_mm3']:.4g} mm^3"
    print(f"heart: {metrics['heart_voxels']} voxels, {size} ({args.method}; "
          f"features {'reused from cache' if metrics['features_cached'] else 'computed'})")
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in done.timings.items()), file=sys.stderr)
    suggestions = metrics.get("suggestions", [])
    for k, suggestion in enumerate(suggestions, start=1):
        # Sections count from 0, as Slicer's voxel indices do; a folder's files are named as their scanner or the
        # user numbered them (often from 1): the file is named too.
        file = named.file_of(suggestion["section"])
        text = suggestion["text"] + (f"; file {file}" if file else "")
        print(f"look next at {text}" if k == 1 else f"        then {text}")
    print(f"wrote {', '.join(done.outputs.values())}")
    return 0


def unused_option_notes(args: argparse.Namespace) -> list:
    """One line for each group of options that ``--method`` leaves unused (they were ignored without a word).

    Examples
    --------
    >>> unused_option_notes(argparse.Namespace(method="ddml", scribbles="s.nrrd", gamma=4, sigma=None, delta=None,
    ...                     neighbourhood=None, data_term=None, seed_reach=None, seed_across=None, seed_weight=None,
    ...                     seed_edges=None, h_evaluation=None))
    ['--method ddml stops before the graph cut: --gamma is not used']
    """
    notes = []
    stages = choices.METHODS.index(args.method)  # munet, ddml, full: each runs the stages of the ones before
    cut = [f"--{k.replace('_', '-')}" for k in _cut_given(args)]
    if stages < 2 and cut:
        notes.append(f"--method {args.method} stops before the graph cut: {', '.join(cut)} "
                     f"{'is' if len(cut) == 1 else 'are'} not used")
    adapt = [flag for flag, given in (("--scribbles", args.scribbles), ("--h-evaluation", args.h_evaluation))
             if given is not None]
    if stages < 1 and adapt:
        notes.append(f"--method {args.method} is the network alone: {', '.join(adapt)} "
                     f"{'is' if len(adapt) == 1 else 'are'} not used")
    if getattr(args, "no_cache", False) and getattr(args, "cache_dir", None) is not None:
        notes.append("--no-cache reads and writes no cache: --cache-dir is not used")
    return notes


def _section_files(image: str) -> list:
    """The section files of a folder image, in the order they were stacked; [] for a file, or for a folder the run
    will refuse (it says why itself)."""
    from pathlib import Path

    from ..errors import ScribbleSegError
    from ..volume_io import list_section_files

    try:
        return list_section_files(image) if Path(image).is_dir() else []
    except ScribbleSegError:
        return []


class _SectionFileNames(logging.Filter):
    """Names the file beside each section the library's warnings give by its index (``section 6``, ``first: 6``),
    for an image that is a folder of sections: their files are numbered as the lab numbered them (often from 1,
    with gaps where sections were left out), so the index alone sent the user to another file.

    Examples
    --------
    >>> from pathlib import Path
    >>> named = _SectionFileNames([Path("Section 001.png"), Path("Section 002.png")])
    >>> named.with_files("all strokes lie on section 1; touch on 2 section(s) (first: 0)")
    'all strokes lie on section 1 (file Section 002.png); touch on 2 section(s) (first: 0, file Section 001.png)'
    """

    PATTERN = re.compile(r"\bsection (\d+)\b|\(first: (\d+)\)")

    def __init__(self, files: list) -> None:
        super().__init__()
        self.files = files

    def file_of(self, section: int) -> str:
        """The name of the file of ``section`` (0-based), or "" when the image is no folder."""
        return self.files[section].name if 0 <= section < len(self.files) else ""

    def with_files(self, text: str) -> str:
        """``text`` with each section index followed by its file."""
        def named(match: re.Match) -> str:
            if match.group(1) is not None:
                file = self.file_of(int(match.group(1)))
                return f"{match.group(0)} (file {file})" if file else match.group(0)
            file = self.file_of(int(match.group(2)))
            return f"(first: {match.group(2)}, file {file})" if file else match.group(0)

        return self.PATTERN.sub(named, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.files and record.levelno >= logging.INFO:
            record.msg, record.args = self.with_files(record.getMessage()), ()
        return True
