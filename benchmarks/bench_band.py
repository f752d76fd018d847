"""The banded cut's full-resolution band with thick sections: its size, its max-flow, its energy.

Uses a work folder of ``bench_interactive.py prepare`` (image, truth, ``more`` strokes,
cached features, the starter model by default).  Adapts to ``more`` once (DDML + head, as a
session's run does), then, for each ``--thickness`` k, declares the sections k times as thick
as the pixels (the same arrays) and cuts from scratch.  It prints the cut's time, the nodes and
time of every PyMaxflow ``maxflow()`` call (the levels' cuts and their band re-cuts, in order),
the energy above the full cut's (``mode="full"``, the optimum; about 380 B/voxel, its labels kept
in the work folder per thickness and ``h``), the Dice against it and the IoU against the truth::

    python benchmarks/bench_band.py --work /tmp/w100 --thickness 2 5 10

Run it with ``PYTHONPATH`` set to another checkout to compare two versions of the cut.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np


class _TimedGraph:
    """A PyMaxflow graph whose ``maxflow()`` calls are recorded as ``(nodes, seconds)``."""

    def __init__(self, graph, calls: list) -> None:
        self._graph, self._calls = graph, calls

    def maxflow(self):
        t0 = time.perf_counter()
        flow = self._graph.maxflow()
        self._calls.append((self._graph.get_node_count(), round(time.perf_counter() - t0, 2)))
        return flow

    def __getattr__(self, name):
        return getattr(self._graph, name)


def main(argv=None) -> int:
    import maxflow
    import SimpleITK as sitk

    from ScribbleSegLib import cut_band, graphcut, volume_io
    from ScribbleSegLib.session import Session
    from ScribbleSegLib.starter import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder of bench_interactive.py prepare")
    parser.add_argument("--model", default="starter", help="model file (default: the shipped starter model)")
    parser.add_argument("--thickness", type=float, nargs="+", default=[2.0],
                        help="section thickness in pixel sizes (the phantom's own: 2)")
    args = parser.parse_args(argv)

    image = volume_io.read_image(args.work / "image.nrrd")
    strokes = volume_io.read_scribbles(args.work / "more.nrrd", image.shape, image.geometry)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(args.work / "truth.nrrd"))) > 0
    session = Session(image, resolve_model(args.model), device="cpu", cache_dir=args.work / "cache")
    h = session.run(strokes, method="ddml").probability
    del session
    tag = hashlib.sha1(h.tobytes()).hexdigest()[:12]
    pixel = min(image.geometry.spacing_zyx[1:])
    calls: list = []
    timed = type("TimedMaxflow", (), {"Graph": {float: lambda *a: _TimedGraph(maxflow.Graph[float](*a), calls)}})

    def iou(labels):
        return np.count_nonzero(truth & labels) / np.count_nonzero(truth | labels)

    for k in args.thickness:
        spacing = (pixel * k, pixel, pixel)
        calls.clear()
        graphcut.maxflow = cut_band.maxflow = timed  # the coarse levels' full cuts and the band's graph
        t0 = time.perf_counter()
        labels = graphcut.graph_cut(h, image.array, strokes, spacing_zyx=spacing) > 0
        seconds = time.perf_counter() - t0
        graphcut.maxflow = cut_band.maxflow = maxflow
        path = args.work / f"full_cut_{tag}_z{k:g}.npy"
        if not path.exists():
            full = graphcut.graph_cut(h, image.array, strokes, spacing_zyx=spacing, mode="full",
                                      memory_budget=int(0.9 * graphcut.available_memory())) > 0
            np.save(path, full)
        full = np.load(path)
        e, e_full = (graphcut.energy(x, h, image.array, strokes, spacing) for x in (labels, full))
        dice = 2 * np.count_nonzero(full & labels) / (np.count_nonzero(full) + np.count_nonzero(labels))
        print(f"sections x{k:g}: cut {seconds:.2f} s; maxflow (nodes, s) {calls}; energy "
              f"{100 * (e - e_full) / e_full:+.3f}% above the full cut's, Dice {dice:.5f} against it; IoU "
              f"{iou(labels):.4f} (full cut {iou(full):.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
