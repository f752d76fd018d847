"""``scribbleseg segment``: segment a volume from scribbles with a trained model."""

from __future__ import annotations

import argparse
import sys

from .common import add_device_option, add_image_options, default_cache_dir

SURFACE_SUFFIXES = (".stl", ".vtp", ".obj")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--image", required=True, help="3D image file or folder of sections")
    parser.add_argument("--scribbles", help="labelmap (1 heart, 2 background) or .seg.nrrd with segments "
                        "'heart' and 'background' (not needed for --method munet)")
    parser.add_argument("--model", required=True,
                        help="model file from 'scribbleseg train', or 'starter' for the shipped starter model")
    parser.add_argument("--out", required=True, help="output segmentation (.seg.nrrd; other extensions: labelmap)")
    parser.add_argument("--method", default="full", choices=("munet", "ddml", "full"),
                        help="stop after the M-Unet, after DDML + head, or run the graph cut (default)")
    parser.add_argument("--probability", metavar="P.nrrd", help="also write the final probability volume")
    parser.add_argument("--surface", metavar="X.stl|X.vtp|X.obj", help="also write the closed surface (LPS mm)")
    parser.add_argument("--render", metavar="X.png", help="also render the surface offscreen to a PNG")
    add_image_options(parser)
    add_device_option(parser)
    cut = parser.add_argument_group("graph cut (paper eq. 4-6)")
    cut.add_argument("--gamma", type=float, help="weight of the boundary term")
    cut.add_argument("--sigma", type=float, help="colour-contrast scale of the boundary term")
    cut.add_argument("--delta", type=float, help="constant added to the contrast weight")
    parser.add_argument("--cache-dir", default=None,
                        help=f"where M-Unet features are cached (default {default_cache_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    parser.add_argument("--seed", type=int, default=0, help="seed of the DDML and head training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cut_params_from_args(args: argparse.Namespace):
    """``GraphCutParams`` with the defaults replaced by any of --gamma/--sigma/--delta."""
    import dataclasses

    from ..graphcut import GraphCutParams

    given = {k: getattr(args, k) for k in ("gamma", "sigma", "delta") if getattr(args, k) is not None}
    return dataclasses.replace(GraphCutParams(), **given)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from pathlib import Path

    from .. import pipeline, volume_io
    from ..errors import ScribbleSegError
    from ..fileio import check_output_path
    from ..progress import TqdmProgress

    outputs = [args.out] + [p for p in (args.probability, args.surface, args.render) if p]
    for path in outputs:
        check_output_path(path)
    if args.surface and not args.surface.lower().endswith(SURFACE_SUFFIXES):
        raise ScribbleSegError(f"--surface {args.surface}: expected a .stl, .vtp or .obj file name")
    if args.render and not args.render.lower().endswith(".png"):
        raise ScribbleSegError(f"--render {args.render}: expected a .png file name")
    if args.method != "munet" and not args.scribbles:
        raise ScribbleSegError(f"--method {args.method} needs --scribbles")

    image = volume_io.read_image(args.image, spacing=args.spacing, downsample=args.downsample)
    scribbles = (volume_io.read_scribbles(args.scribbles, image.shape, image.geometry)
                 if args.scribbles else None)
    cache_dir = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    bar = TqdmProgress(disable=args.quiet)
    try:
        from ..starter import resolve_model

        result = pipeline.segment(image, scribbles, str(resolve_model(args.model)), method=args.method,
                                  cut_params=cut_params_from_args(args), device=args.device,
                                  cache_dir=cache_dir, seed=args.seed, progress=bar)
    finally:
        bar.close()

    if args.out.lower().endswith(".seg.nrrd"):
        volume_io.write_segmentation(args.out, [("heart", result.labels, volume_io.HEART_COLOR)], image.geometry)
    else:
        volume_io.write_labelmap(args.out, result.labels, image.geometry)
    if args.probability:
        volume_io.write_probability(args.probability, result.probability, image.geometry)
    if args.surface or args.render:
        from .. import surface

        poly = surface.labelmap_to_surface(result.labels, image.geometry)
        if args.surface:
            surface.write_surface(args.surface, poly)
        if args.render:
            surface.render_surface_png(poly, args.render)

    voxels = int(result.labels.sum())
    sx, sy, sz = image.geometry.spacing
    print(f"heart: {voxels} voxels, {voxels * sx * sy * sz:.4g} mm^3 ({args.method}; "
          f"features {'reused from cache' if result.features_cached else 'computed'})")
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()), file=sys.stderr)
    print(f"wrote {', '.join(outputs)}")
    return 0
