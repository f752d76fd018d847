"""Inference throughput and peak memory of the M-Unet / U-Net (tiled, probability + features).

Each case runs in its own process so that its peak memory (``ru_maxrss``) is
its own.  Weights are random (throughput does not depend on them).  Sections
are random pixels without stain normalization, or, with ``--stain``, a phantom
section repeated over the area and normalized to the phantom's fitted stain
(the whole inference path).  Per case it reports megapixels per second, the
network's floating-point operations per output pixel (counted by
``torch.utils.flop_counter`` on one tile, halo included) and the rate they
reach, and the peak resident memory.  With CUDA it also reports the peak GPU
memory and the ratio of the reached rate to a measured bf16 matmul peak (on
the CPU, to a float32 matmul peak).

Run from the repository root::

    python benchmarks/bench_inference.py [--configs small paper] [--archs munet unet]
        [--size H W] [--tile N] [--threads N] [--device auto]
    python benchmarks/bench_inference.py --configs small --archs munet --size 5700 10000 --features-to-disk --stain

``--features-to-disk`` writes the features to a temporary ``.npy`` file (what a
full-size section needs: 3.6 GB of float16 features for 5700 x 10000 pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _matmul_peak(device, dtype, n: int, repeats: int) -> float:
    """Measured dense matmul rate in FLOP/s."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)


def _flops_per_pixel(net, predictor, section) -> float:
    """FLOPs of one tile's forward pass (halo included) per kept output pixel."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ScribbleSegLib import multifov
    from ScribbleSegLib.nets import geometry_for_tile, to_input

    h, w = section.shape[:2]
    a = predictor.align
    core = (min(predictor.tile, -(-h // a) * a), min(predictor.tile, -(-w // a) * a))
    geom = geometry_for_tile(net, core)
    pyramid = multifov.build_pyramid(section, max(win.level for win in geom.windows) + 1)
    crops = multifov.extract(pyramid, geom.windows, (0, 0))
    inputs = [to_input(np.stack([c]), predictor.device) for c in crops]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(inputs, geom)
    return counter.get_total_flops() / (core[0] * core[1])


def child(args) -> dict:
    import numpy as np
    import torch

    from ScribbleSegLib import inference
    from ScribbleSegLib.model_file import SegModel
    from ScribbleSegLib.nets import ModelConfig, build_net
    from ScribbleSegLib.runtime import resolve_device

    if args.threads:
        inference.cpu_threads = lambda: args.threads
    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = ModelConfig.preset(args.configs[0], args.archs[0])
    net = build_net(config).to(device).eval()
    model = SegModel(config=config, net=net, stain=None, voxel_size=(1.0, 1.0, 1.0),
                     bank_features=np.zeros((0, 32), np.float32), bank_labels=np.zeros(0, np.uint8), device=device)
    h, w = args.size
    section = np.empty((1, h, w, 3), np.uint8)
    if args.stain:
        # A phantom section repeated over the area, normalized to the phantom's fitted stain.
        from ScribbleSegLib import phantom, stain_volume

        vol = phantom.make_phantom(seed=0).image.array
        model.stain = stain_volume.fit_reference([vol]).to_dict()
        tile_img = vol[vol.shape[0] // 2]
        reps = (-(-h // tile_img.shape[0]), -(-w // tile_img.shape[1]), 1)
        section[0] = np.tile(tile_img, reps)[:h, :w]
        del vol
    else:
        rng = np.random.default_rng(0)
        for y in range(0, h, 512):  # random texture in row blocks (a 5700 x 10000 section is 171 MB)
            section[0, y:y + 512] = rng.integers(0, 256, section[0, y:y + 512].shape, dtype=np.uint8)
    default_core, default_batch = inference.default_tile(device)
    tile = args.tile or default_core
    predictor = inference.SectionPredictor(net, device, tile, default_batch)
    flops_px = _flops_per_pixel(net, predictor, section[0])
    # Warm up on a small crop (allocator, kernels), then time the whole section.
    inference.predict_volume(model, section[:, :min(h, 2 * tile), :min(w, 2 * tile)], tile=tile,
                             normalize=args.stain)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "features.npy") if args.features_to_disk else None
        t = time.perf_counter()
        prob, feats = inference.predict_volume(model, section, tile=tile, normalize=args.stain, feature_path=path)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        del feats
    mpix = h * w / 1e6
    result = {"config": args.configs[0], "arch": args.archs[0], "device": str(device), "size": [h, w],
              "tile": tile, "threads": inference.cpu_threads() if device.type == "cpu" else None,
              "seconds": round(seconds, 2), "mpix_per_s": round(mpix / seconds, 4),
              "gflop_per_pixel": round(flops_px / 1e9, 6), "tflop_per_s": round(flops_px * h * w / seconds / 1e12, 4),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 3),
              "rss_before_run_gb": round(rss_before / 1024, 3), "features_to_disk": bool(args.features_to_disk),
              "stain_normalization": bool(args.stain)}
    if device.type == "cuda":
        peak = _matmul_peak(device, torch.bfloat16, 8192, 20)
        result.update(gpu=torch.cuda.get_device_name(device),
                      peak_gpu_gb=round(torch.cuda.max_memory_allocated(device) / 1024 ** 3, 3),
                      matmul_bf16_tflop_per_s=round(peak / 1e12, 2),
                      fraction_of_matmul_peak=round(flops_px * h * w / seconds / peak, 4))
    else:
        with torch.inference_mode():
            from ScribbleSegLib.runtime import torch_threads

            with torch_threads(inference.cpu_threads()):
                peak = _matmul_peak(device, torch.float32, 2048, 5)
        result.update(matmul_fp32_gflop_per_s=round(peak / 1e9, 1),
                      fraction_of_matmul_peak=round(flops_px * h * w / seconds / peak, 4))
    del prob
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "paper"], choices=("small", "paper"))
    parser.add_argument("--archs", nargs="+", default=["munet", "unet"], choices=("munet", "unet"))
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="section size (default: 1024 1024 on a CPU for small, 512 512 for paper; "
                             "4096 4096 on a GPU)")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: the library's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--features-to-disk", action="store_true")
    parser.add_argument("--stain", action="store_true",
                        help="tiled phantom sections with stain normalization instead of random pixels")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    import torch

    gpu = args.device != "cpu" and torch.cuda.is_available()
    results = []
    for config in args.configs:
        for arch in args.archs:
            size = args.size or ([4096, 4096] if gpu else [1024, 1024] if config == "small" else [512, 512])
            cmd = [sys.executable, __file__, "--child", "--configs", config, "--archs", arch, "--size",
                   *map(str, size), "--device", args.device]
            if args.tile:
                cmd += ["--tile", str(args.tile)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.features_to_disk:
                cmd.append("--features-to-disk")
            if args.stain:
                cmd.append("--stain")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results.append(result)
            print(json.dumps(result), flush=True)
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
