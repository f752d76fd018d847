"""``scribbleseg train``: train an M-Unet (or a plain U-Net) on labelled volumes, or fine-tune a model.

With ``--init MODEL`` the command fine-tunes MODEL (``starter`` names the shipped
starter model) on the given volumes instead of training from random weights;
the new file keeps the parent's architecture and reference stain and records
its parent in its provenance (see ``ScribbleSegLib.training``).
"""

import argparse
import os
from typing import Optional, Tuple

from .. import choices
from .common import (DEVICE_PARAMETER_FLAGS, IMAGE_PARAMETER_FLAGS, add_device_option, add_image_options,
                     check_device_flag, positive_float, positive_int, seed_int)

#: Added to "interrupted" (cli.main): Ctrl-C ended a long training without a word of what became of it.
INTERRUPTED_NOTE = "; a model is written only when training ends: --max-minutes or --max-iters stop it early with one"
# The library's parameters this command takes as flags: its messages are shown with the flags' names.
PARAMETER_FLAGS = {"max_minutes": "--max-minutes", "max_iters": "--max-iters", "lr": "--lr", "batch": "--batch",
                   "val_images": "--val-images", **IMAGE_PARAMETER_FLAGS, **DEVICE_PARAMETER_FLAGS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--images", "a.nrrd", "--labels", "a.seg.nrrd", "--images", "b.nrrd",
    ...                           "--labels", "b.seg.nrrd", "--out", "heart.model"])
    >>> args.images, args.arch, args.config, args.max_minutes  # None: the preset's, or the parent's with --init
    (['a.nrrd', 'b.nrrd'], None, None, None)
    """
    parser.add_argument("--images", nargs="+", action="extend", required=True, metavar="IMAGE",
                        help="training images: 3D RGB files, folders of sections or 2D section files (tiles)")
    parser.add_argument("--labels", nargs="+", action="extend", required=True, metavar="LABEL",
                        help="one label per image: a labelmap (>0 = heart; a file, or a folder of 2D sections like "
                             "the image's) or a .seg.nrrd with a 'heart' segment")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    parser.add_argument("--arch", choices=choices.ARCHITECTURES, default=None,
                        help=f"multi-field-of-view U-Net or plain U-Net (default: {choices.DEFAULT_ARCHITECTURE}; "
                             "with --init, the parent's)")
    parser.add_argument("--config", choices=tuple(choices.PRESETS), default=None,
                        help="network size: small trains on a CPU in minutes, paper is the published "
                             f"size for a GPU (default: {choices.DEFAULT_PRESET}; with --init, the parent's)")
    parser.add_argument("--init", metavar="MODEL", default=None,
                        help="fine-tune this model file on the volumes instead of training from scratch "
                             "('starter': the shipped starter model)")
    add_device_option(parser)
    parser.add_argument("--val-images", nargs="+", action="extend", default=[], metavar="IMAGE",
                        help="validation images for early stopping (default: every 5th training section; with "
                             "tiles alone, the training patches, with a warning)")
    parser.add_argument("--val-labels", nargs="+", action="extend", default=[], metavar="LABEL", help="their labels")
    add_image_options(parser)
    budgets = {name: (p.max_minutes, p.max_iters) for name, p in choices.PRESETS.items()}
    parser.add_argument("--max-minutes", type=positive_float, default=None,
                        help="time budget of the optimisation (default: " + ", ".join(
                            f"{m if m is not None else 'none'} for --config {n}" for n, (m, _) in budgets.items())
                        + f", {choices.FINETUNE_MINUTES:g} with --init)")
    parser.add_argument("--max-iters", type=positive_int, default=None,
                        help="iteration budget (default: " + ", ".join(
                            f"{i} for --config {n}" for n, (_, i) in budgets.items())
                        + f", {choices.FINETUNE_ITERS} with --init)")
    parser.add_argument("--batch", type=positive_int, default=choices.TRAIN_BATCH,
                        help="patches per step (default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"Adam learning rate (default: {choices.TRAIN_LR:g}, or {choices.FINETUNE_LR:g} "
                             "with --init)")
    parser.add_argument("--no-stain-normalization", action="store_true",
                        help="train on the colours as they are")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of initialisation and sampling (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the command.

    Examples
    --------
    An output that is one of the inputs is refused before any work:

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--images", "a.nrrd", "--labels", "a.seg.nrrd", "--out", "a.nrrd"]))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: a.nrrd (--out): is the input --images a.nrrd; choose another output ...
    """
    import shlex
    import sys

    from ..errors import ScribbleSegError
    from ..fileio import check_outputs
    from ..model_file import check_model_output
    from ..nets import ModelConfig
    from ..progress import TqdmProgress
    from ..starter import resolve_model
    from ..training import TrainOptions
    from ..training_files import check_pairs, train_from_files

    check_pairs(args.images, args.labels, ("--images", "--labels"))  # before any work
    check_pairs(args.val_images, args.val_labels, ("--val-images", "--val-labels"))
    inputs = {f"{option} {path}": path for option, paths in (("--images", args.images), ("--labels", args.labels),
                                                             ("--val-images", args.val_images),
                                                             ("--val-labels", args.val_labels)) for path in paths}
    if args.init is not None:  # the shipped starter model too: a fine-tune never replaces its parent
        inputs[f"--init {args.init}"] = resolve_model(args.init) if args.init == "starter" else args.init
    check_outputs({"--out": args.out}, inputs)  # the gravest mistake first: an output that is an input
    check_model_output(args.out, "--out")
    check_device_flag(args.device)  # a clear error before reading anything
    parent = None
    if args.init is not None:
        from ..model_file import load_model

        parent = load_model(resolve_model(args.init), device=args.device)  # a bad model fails before reading
        if args.arch is not None and args.arch != parent.config.arch:
            raise ScribbleSegError(f"--arch {args.arch}: --init {args.init} is a {parent.config.arch}; a "
                                   "fine-tuned model keeps its parent's architecture")
        if args.config is not None and ModelConfig.preset(args.config, parent.config.arch) != parent.config:
            # The parent's own size is accepted, as --arch with the parent's architecture is.
            raise ScribbleSegError(f"--config {args.config}: a fine-tuned model keeps the size of its parent "
                                   f"(--init {args.init}); leave --config out")
        if args.no_stain_normalization and parent.stain is not None:
            raise ScribbleSegError(f"--no-stain-normalization: a fine-tuned model keeps the reference stain of its "
                                   f"parent (--init {args.init}), in which it sees every image; leave the flag out")
        config = None
    else:
        config = ModelConfig.preset(args.config or choices.DEFAULT_PRESET,
                                    args.arch or choices.DEFAULT_ARCHITECTURE)
    max_iters, max_minutes, lr = choices.training_budget(args.config, parent is not None, max_iters=args.max_iters,
                                                         max_minutes=args.max_minutes, lr=args.lr)
    options = TrainOptions(batch=args.batch, lr=lr, normalize=not args.no_stain_normalization)
    command = "scribbleseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["train"] \
        else "scribbleseg train"
    # Said after the work: a model an hour's training replaced without a word looked like the same file.
    before = _file_stamp(args.out)
    bar = TqdmProgress(disable=args.quiet)
    try:
        path = train_from_files(args.images, args.labels, args.out, config, val_images=args.val_images,
                                val_labels=args.val_labels, init=parent, options=options, max_iters=max_iters,
                                max_minutes=max_minutes, spacing=args.spacing, downsample=args.downsample,
                                device=args.device, seed=args.seed, provenance={"command": command},
                                names=("--images", "--labels", "--val-images", "--val-labels"), progress=bar)
    except KeyboardInterrupt:
        if _file_stamp(args.out) not in (before, None):
            # The signal came after the model was in place: "a model is written only when training ends" told
            # the user there was none.
            args.interrupted_note = f"; after the model was written whole: {args.out}"
        raise
    finally:
        bar.close()
    print(f"wrote {path}" + (" (in place of the model that was there)" if before is not None else ""))
    return 0


def _file_stamp(path: str) -> Optional[Tuple[int, int, int]]:
    """``(inode, size, modification time in ns)`` of the file at ``path``, or None where there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns
