"""``scribbleseg phantom``: write synthetic H&E section stacks with labels and scribbles."""

import argparse
import contextlib

from .. import choices
from .common import check_phantom_shape, output_folder_kept_on_success, phantom_volumes, positive_int, seed_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--out", "phantoms", "--shape", "16", "96", "96"])
    >>> args.volumes, args.seed, args.shape, args.family
    (6, 0, [16, 96, 96], 'a')
    """
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created if its parent exists)")
    parser.add_argument("--volumes", type=phantom_volumes, default=6, metavar="N",
                        help="number of volumes (default 6: 2 train, 2 val, 2 test)")
    parser.add_argument("--seed", type=seed_int, default=0, metavar="S",
                        help="seed; volume i is made with seed S*100+i, as in 'scribbleseg bench' (default 0)")
    parser.add_argument("--shape", type=positive_int, nargs=3, metavar=("Z", "Y", "X"),
                        help=f"sections, rows, columns (default {' '.join(map(str, choices.PHANTOM_SHAPE))}); another "
                             "size shows the same embryo, with voxels scaled by "
                             f"{min(choices.PHANTOM_SHAPE[1:])} / min(rows, columns)")
    parser.add_argument("--family", default=choices.DEFAULT_PHANTOM_FAMILY, choices=choices.PHANTOM_FAMILIES,
                        help="phantom family: a (default) or b, another lab's stain, scale, anatomy and artefacts")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the command.

    Examples
    --------
    An output folder whose parent is not there is refused before any work:

    >>> import tempfile
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--out", f"{tempfile.mkdtemp()}/no/phantoms", "--quiet"]))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: --out .../no/phantoms: the folder .../no does not exist
    """
    import dataclasses

    from ..phantom import family_config, write_phantom_set
    from ..progress import TqdmProgress

    check_phantom_shape(args.shape)
    config = family_config(args.family)
    if args.shape is not None:
        config = dataclasses.replace(config, shape=tuple(args.shape))
    bar = TqdmProgress(disable=args.quiet)
    with output_folder_kept_on_success(args.out) as folder, contextlib.closing(bar):
        manifest = write_phantom_set(folder, n_volumes=args.volumes, seed=args.seed, config=config, progress=bar)
    print(f"wrote {args.volumes} phantom volume(s) to {manifest.parent}; manifest {manifest}")
    return 0
