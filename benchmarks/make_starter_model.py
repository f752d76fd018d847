"""Make the starter model shipped with ScribbleSeg (``ScribbleSegLib/models/starter.model``).

The starter model is what a first-time user segments with before they have
any labelled volume of their own: the small M-Unet preset, trained for a few
minutes on the project's synthetic phantoms -- every phantom family the
library defines (``phantom.FAMILIES`` when it exists, otherwise the default
:class:`~ScribbleSegLib.phantom.PhantomConfig`), ``--volumes`` training
volumes and one validation volume of each.  It is a starting point that DDML
adapts to the user's scribbles and that fine-tuning (``scribbleseg train
--init``) improves on real, corrected volumes.

The whole run is fixed by its arguments (phantom seeds, training seed, step
budget); with the step budget ending the run (not ``--minutes``) the same
command gives the same model on the CPU.  The command, the families, seeds,
steps and date are stored in the model's provenance (``meta["provenance"]``).

Run from the repository root::

    nice -n 10 python benchmarks/make_starter_model.py [--out ScribbleSegLib/models/starter.model]
        [--volumes 2] [--iters 1000] [--minutes 8] [--bank-per-class 10000] [--seed 0] [--shape Z Y X]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "ScribbleSegLib" / "models" / "starter.model"
SEED_BASE = 9000
"""Phantom seeds of the starter model (9000 + 100 * family + i): away from the seeds ``bench`` and the
tests use (0-599), so the starter model has never seen a benchmark volume."""


def phantom_families() -> Dict[str, object]:
    """``{family name: PhantomConfig}`` of every phantom family the library has.

    ``phantom.FAMILIES`` may map names to configs (or to functions making one),
    or list names that ``phantom.family_config(name)`` or
    ``PhantomConfig.family(name)`` turn into configs; without it, the default
    config is the only family.
    """
    from ScribbleSegLib import phantom

    families = getattr(phantom, "FAMILIES", None)
    if not families:
        return {"default": phantom.PhantomConfig()}
    if isinstance(families, dict):
        items = list(families.items())
    else:
        items = [(name, name) for name in families]
    out = {}
    for name, value in items:
        if isinstance(value, phantom.PhantomConfig):
            out[str(name)] = value
        elif callable(value):
            out[str(name)] = value()
        elif hasattr(phantom, "family_config"):
            out[str(name)] = phantom.family_config(name)
        elif hasattr(phantom.PhantomConfig, "family"):
            out[str(name)] = phantom.PhantomConfig.family(name)
        else:
            raise SystemExit(f"phantom.FAMILIES[{name!r}] is not a PhantomConfig and the library has no "
                             "family_config(); update make_starter_model.phantom_families")
    return out


def make_volumes(families: Dict[str, object], n_train: int, shape: Optional[Sequence[int]]):
    """Training and validation phantoms of every family, with their descriptions for the provenance."""
    from ScribbleSegLib import phantom

    train, val, train_names, val_names = [], [], [], []
    for f, (name, config) in enumerate(families.items()):
        if shape is not None:
            config = dataclasses.replace(config, shape=tuple(shape))
        for i in range(n_train + 1):
            seed = SEED_BASE + 100 * f + i
            made = phantom.make_phantom(seed=seed, config=config)
            text = f"phantom family={name} seed={seed} shape={'x'.join(map(str, config.shape))}"
            (val if i == n_train else train).append(made)
            (val_names if i == n_train else train_names).append(text)
    return train, val, train_names, val_names


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="model file to write (default: %(default)s)")
    parser.add_argument("--volumes", type=int, default=2, help="training phantoms per family (default 2)")
    parser.add_argument("--iters", type=int, default=1000, help="step budget (default 1000)")
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget of the optimisation (default 8)")
    parser.add_argument("--bank-per-class", type=int, default=10000,
                        help="DDML bank pixels per class (default 10000: half the training default, so the file "
                             "stays small)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="phantom size (default: "
                        "each family's)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                        help="where to train (default cpu, so that the run is reproducible)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    from ScribbleSegLib.model_file import load_model
    from ScribbleSegLib.nets import ModelConfig
    from ScribbleSegLib.progress import TqdmProgress
    from ScribbleSegLib.training import TrainOptions, train_model

    started = time.perf_counter()
    families = phantom_families()
    print(f"families: {', '.join(families)}; {args.volumes} training + 1 validation phantom each", flush=True)
    train, val, train_names, val_names = make_volumes(families, args.volumes, args.shape)
    command = "python benchmarks/make_starter_model.py " + " ".join(argv if argv is not None else sys.argv[1:])
    bar = TqdmProgress(disable=args.quiet)
    try:
        path = train_model([v.image for v in train], [v.label for v in train], args.out, ModelConfig.small("munet"),
                           val_images=[v.image for v in val], val_labels=[v.label for v in val],
                           options=TrainOptions(bank_per_class=args.bank_per_class), max_iters=args.iters,
                           max_minutes=args.minutes, device=args.device, seed=args.seed, names=train_names,
                           val_names=val_names, progress=bar,
                           provenance={"command": command.strip(), "families": list(families),
                                       "validation_volumes": val_names, "purpose": "starter"})
    finally:
        bar.close()
    model = load_model(path, device="cpu")
    size = Path(path).stat().st_size
    print(f"wrote {path}: {size / 2**20:.2f} MiB, {model.provenance['steps']} steps "
          f"({model.meta['training']['stopped_by']}), bank {len(model.bank_labels)} pixels, "
          f"best validation loss {model.meta['training']['best_val_loss']}; "
          f"{time.perf_counter() - started:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
