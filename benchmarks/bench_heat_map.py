"""The panel's first step, "Show heat map": how long it takes, and the README's heat-map figure.

The Slicer panel shows the heat map through its warm worker: the worker
starts, reads the volume, loads the model and runs the M-Unet once (a
``task: session`` request), then a ``munet`` run writes the probability,
which the panel shows and ranks sections from (``ScribbleSegLib.loop``).
This script does exactly that with the worker process (everything but
Slicer's own import of the result), timed from the start of the process
to the probability on disk, with an empty feature cache.  It then draws
the three sections the panel would list first, with the heat map as the
panel blends it (``overlay.write_heat_map_png``) and the true heart
outlined in green.

Usage::

    scribbleseg phantom --out /tmp/phantom --volumes 1
    python benchmarks/bench_heat_map.py /tmp/phantom --figure Resources/HeatMap.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ScribbleSegLib import loop, overlay, starter, volume_io, worker


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phantom", type=Path, help="folder written by 'scribbleseg phantom'")
    parser.add_argument("--volume", type=int, default=0, help="volume number NN of volNN_image.nrrd (default 0)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figure", type=Path, help="write the heat-map figure (PNG) here")
    parser.add_argument("--opacity", type=float, default=0.5)
    args = parser.parse_args(argv)

    image_path = args.phantom.resolve() / f"vol{args.volume:02d}_image.nrrd"  # the worker runs in a folder of its own
    model = starter.starter_model_path()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        request = worker.write_request(folder / "session.json", {
            "task": "session", "image": str(image_path), "model": str(model), "device": args.device,
            "cache_dir": str(folder / "cache")})  # empty: the M-Unet runs
        t0 = time.perf_counter()
        process = worker.SessionProcess(request)
        process.start()
        ready = process.wait_ready()
        if ready is None:
            print(process.failure_message(), file=sys.stderr)
            return 1
        t_ready = time.perf_counter() - t0
        run_id = process.send({"method": "munet", "outputs": {"labels": str(folder / "labels.nrrd"),
                                                              "probability": str(folder / "probability.nrrd")}})
        done = process.wait_run(run_id)
        t_done = time.perf_counter() - t0
        process.close()
        process.wait()
        if done is None or done["event"] != "done":
            print(done or process.failure_message(), file=sys.stderr)
            return 1
        volume = volume_io.read_image(image_path)
        probability = _read_float(folder / "probability.nrrd")
    suggestions = loop.heat_map_suggestions(probability, None, 3)
    print(json.dumps({
        "volume": str(image_path), "shape_zyx": list(volume.shape), "model": model.name, "device": args.device,
        "seconds_to_ready": round(t_ready, 1), "seconds_to_heat_map": round(t_done, 1),
        "worker_timings": ready.get("timings", {}),
        "suggested": [loop.suggestion_row(s) for s in suggestions]}, indent=1))
    if args.figure:
        truth = volume_io.read_label(args.phantom / f"vol{args.volume:02d}_label.seg.nrrd", volume.shape,
                                     volume.geometry)
        sections = sorted(s["section"] for s in suggestions)
        overlay.write_heat_map_png(args.figure, volume.array, probability, sections, truth=truth,
                                   opacity=args.opacity, columns=len(sections))
        print(f"wrote {args.figure} (sections {', '.join(map(str, sections))})")
    return 0


def _read_float(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())
