"""``scribbleseg train`` (not implemented yet)."""

import argparse

from ..errors import ScribbleSegError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise ScribbleSegError("'train' is not implemented yet")
