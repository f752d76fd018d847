"""``python -m ScribbleSegLib`` runs the command line."""

from .cli import run

run()
