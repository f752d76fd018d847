"""The ``scribbleseg`` command line.

Each subcommand lives in ``ScribbleSegLib.commands.<name>`` and provides
``add_arguments(parser)`` and ``run(args) -> int``.  Command modules import
heavy packages inside ``run`` so that ``scribbleseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from . import __version__
from .errors import ScribbleSegError

COMMANDS = {
    "demo": "make a phantom, train a small M-Unet, scribble, segment and print a Table I",
    "phantom": "write synthetic H&E serial-section volumes with labels and scribbles",
    "train": "train an M-Unet (or plain U-Net) on labelled volumes",
    "segment": "segment a volume from scribbles with a trained model",
    "evaluate": "compare a prediction with a label: precision, recall, F1, IoU",
    "bench": "reproduce the paper's evaluation on phantoms and write BENCHMARKS tables",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="scribbleseg",
        description="Scribble-guided 3D segmentation of histological section stacks "
        "(M-Unet + DDML + 3D graph cut).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f".commands.{name}", __package__)
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except ScribbleSegError as exc:
        print(f"scribbleseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scribbleseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
