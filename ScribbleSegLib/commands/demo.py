"""``scribbleseg demo``: the whole product on a synthetic embryo, in minutes on a CPU.

Makes phantom volumes (2 train, 1 validation, 1 test), trains a small M-Unet and
a plain U-Net, simulates scribbles on every 10th heart section of the test
volume, segments it with the library's default adaptation and cut, prints a Table
I-style table and writes the results.
"""

from __future__ import annotations

import argparse
import time

from .common import add_experiment_options, check_phantom_shape, make_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    add_experiment_options(parser, "scribbleseg-demo", 6.0)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from .. import protocol, scribbles, surface, volume_io
    from ..overlay import write_overlay_png
    from ..progress import TqdmProgress

    check_phantom_shape(args.shape)  # before any work: a shape the phantom or the memory cannot take
    out = make_output_folder(args.out)
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
    # evaluate_pattern ran the library's default adaptation and cut: name the rows for what they ran.
    table = protocol.table_i([run_], labels=protocol.DEFAULT_ROWS)
    (out / "table.md").write_text(table + "\n")

    print()
    print("Table I on the demo's test phantom (one scribble pattern on every 10th heart section; "
          "metrics over all voxels; the adaptation and cut rows use the library's defaults, the paper column "
          "the paper's M-Unet+DDML and +GC):")
    print(table)
    print()
    print(f"wrote {out}/: heart.seg.nrrd (result), heart.stl + heart.png (surface), overlay.png "
          f"(red: result, green: truth outline, yellow/blue: scribbles), test_image.nrrd, test_label.seg.nrrd, "
          f"scribbles.seg.nrrd, munet.model, unet.model, table.md")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0
