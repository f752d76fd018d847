"""``scribbleseg demo``: the whole product on a synthetic embryo, in minutes on a CPU.

Makes phantom volumes (2 train, 1 validation, 1 test), trains a small M-Unet and
a plain U-Net, simulates scribbles on every 10th heart section of the test
volume, segments it, prints a Table I-style table and writes the results.
"""

from __future__ import annotations

import argparse
import time

from .common import add_device_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--out", default="scribbleseg-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms, scribbles and training")
    add_device_option(parser)
    parser.add_argument("--train-minutes", type=float, default=4.0,
                        help="training budget of each network in minutes (default: %(default)s)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="phantom size (default: the phantom's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    import dataclasses
    from pathlib import Path

    from .. import phantom, protocol, scribbles, surface, training, volume_io
    from ..errors import ScribbleSegError
    from ..model_file import load_model
    from ..nets import ModelConfig
    from ..overlay import write_overlay_png
    from ..progress import TqdmProgress

    out = Path(args.out)
    if not out.parent.is_dir():
        raise ScribbleSegError(f"--out {out}: the folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    bar = TqdmProgress(disable=args.quiet)
    config = phantom.PhantomConfig() if args.shape is None else dataclasses.replace(
        phantom.PhantomConfig(), shape=tuple(args.shape))

    def step(message: str) -> None:
        bar.close()
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    step("making 4 phantom volumes (2 train, 1 validation, 1 test)")
    vols = [phantom.make_phantom(seed=args.seed * 100 + i, config=config) for i in range(4)]
    train, val, test = vols[:2], vols[2:3], vols[3]

    models = {}
    for arch in ("munet", "unet"):
        step(f"training the small {'M-Unet' if arch == 'munet' else 'U-Net'} "
             f"(budget {args.train_minutes:g} min)")
        path = out / f"{arch}.model"
        training.train_model([v.image for v in train], [v.label for v in train], path,
                             ModelConfig.small(arch), val_images=[v.image for v in val],
                             val_labels=[v.label for v in val], max_minutes=args.train_minutes,
                             device=args.device, seed=args.seed, progress=bar)
        models[arch] = load_model(path, device=args.device)

    step("simulating scribbles on every 10th heart section of the test volume")
    scrib = scribbles.simulate_scribbles(test.label, seed=args.seed, every=10, tissue=test.tissue > 0)
    step("segmenting the test volume: M-Unet, U-Net, DDML + head, 3D graph cut")
    outputs = protocol.compute_outputs(test.image.array, models["munet"], models["unet"], device=args.device,
                                       progress=bar)
    run_, result = protocol.evaluate_pattern(test.image, test.label, scrib, models["munet"], outputs,
                                             seed=args.seed)
    final = result.labels

    step("writing results")
    geometry = test.image.geometry
    volume_io.write_rgb_volume(out / "test_image.nrrd", test.image)
    volume_io.write_segmentation(out / "test_label.seg.nrrd", [("heart", test.label, volume_io.HEART_COLOR)],
                                 geometry)
    volume_io.write_segmentation(out / "scribbles.seg.nrrd",
                                 [("heart", scrib == 1, volume_io.HEART_COLOR),
                                  ("background", scrib == 2, volume_io.BACKGROUND_COLOR)], geometry)
    volume_io.write_segmentation(out / "heart.seg.nrrd", [("heart", final, volume_io.HEART_COLOR)], geometry)
    poly = surface.labelmap_to_surface(final, geometry)
    surface.write_surface(out / "heart.stl", poly)
    surface.render_surface_png(poly, out / "heart.png")
    sections = protocol.pick_overlay_sections(test.label, scrib)
    write_overlay_png(out / "overlay.png", test.image.array, sections, prediction=final, truth=test.label,
                      scribbles=scrib)
    table = protocol.table_i([run_])
    (out / "table.md").write_text(table + "\n")

    print()
    print(f"Table I on the demo's test phantom (one scribble pattern on every 10th heart section; "
          f"metrics over all voxels):")
    print(table)
    print()
    print(f"wrote {out}/: heart.seg.nrrd (result), heart.stl + heart.png (surface), overlay.png "
          f"(red: result, green: truth outline, yellow/blue: scribbles), test_image.nrrd, test_label.seg.nrrd, "
          f"scribbles.seg.nrrd, munet.model, unet.model, table.md")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0
