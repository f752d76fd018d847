"""Time and steadiness of the Vahadane stain normalization.

1. A synthetic Beer–Lambert H&E image of ``--size`` x ``--size`` pixels with
   known stain vectors (Ruifrok & Johnston): fit time and transform time with
   1 and 2 torch threads (the fit's small-matrix loop is forced to the same
   count, to show why ``stain.py`` runs it on one thread), the accuracy of the
   fitted stains, and the colour-table path used for images of 2**25 pixels or
   more.
2. ``--sklearn``: the same dictionary objective minimised by scikit-learn's
   ``DictionaryLearning`` (bench extra), for time and objective value.
3. ``--volume``: two phantom stacks; the first is the target, the second is
   normalized per section and with one volume stain.  Prints the time and the
   section-to-section flicker: the mean over sections of the relative change of
   the mean tissue concentrations (decomposed with the target's stains).

    python benchmarks/bench_stain.py --size 2048 --repeats 5 --sklearn --volume
"""

import argparse
import os
import statistics
import time
from contextlib import contextmanager
from unittest import mock

import numpy as np
import torch

from ScribbleSegLib import runtime, stain, stain_volume

RUIFROK = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105]])
RUIFROK /= np.linalg.norm(RUIFROK, axis=1, keepdims=True)
OTHER = np.array([[0.49, 0.77, 0.41], [0.21, 0.86, 0.46]])
OTHER /= np.linalg.norm(OTHER, axis=1, keepdims=True)


def synthetic_image(size: int, stains: np.ndarray, seed: int) -> np.ndarray:
    """Glass, H-only, E-only and mixed pixels with gamma-distributed concentrations."""
    rng = np.random.default_rng(seed)
    n = size * size
    stained = rng.random(n) < 0.6
    which = rng.random(n)
    h = np.where(stained & (which < 0.6), rng.gamma(2.0, 0.3, n), 0).astype(np.float32)
    e = np.where(stained & (which > 0.4), rng.gamma(2.0, 0.25, n), 0).astype(np.float32)
    od = h[:, None] * stains[0].astype(np.float32) + e[:, None] * stains[1].astype(np.float32)
    return stain.od_to_rgb(od).reshape(size, size, 3)


@contextmanager
def loop_threads(n: int):
    """Run stain.py's one-thread blocks with ``n`` threads instead."""
    with mock.patch.object(stain, "torch_threads", lambda _: runtime.torch_threads(n)), runtime.torch_threads(n):
        yield


def timed(fn, repeats: int):
    """Median and minimum wall time of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def bench_image(args) -> None:
    image = synthetic_image(args.size, RUIFROK, seed=1)
    target = stain.VahadaneNormalizer().fit(synthetic_image(512, OTHER, seed=2))
    source = stain.VahadaneNormalizer().fit(image, max_pixels=args.max_pixels)
    cosine = np.sum(source.stain_matrix * RUIFROK, axis=1)
    print(f"image {args.size}x{args.size}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}; fitted stain cosines H {cosine[0]:.4f} E {cosine[1]:.4f}")
    jobs = {"fit": lambda threads: stain.VahadaneNormalizer().fit(image, max_pixels=args.max_pixels)}
    for tile in (256, 512, 1024):
        jobs[f"transform tile {tile}"] = lambda threads, tile=tile: source.transform(image, target, tile, threads)
    lasso = stain.VahadaneNormalizer(concentration_method="lasso")
    lasso.stain_matrix, lasso.max_concentrations = source.stain_matrix, source.max_concentrations
    jobs["transform lasso 512"] = lambda threads: lasso.transform(image, target, 512, threads)
    # Other processes come and go on a shared machine: interleave the thread counts so both see the same load.
    times = {(name, threads): [] for name in jobs for threads in (1, 2)}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            for threads in (1, 2):
                with loop_threads(threads):
                    start = time.perf_counter()
                    job(threads)
                    times[name, threads].append(time.perf_counter() - start)
    print(f"  median (min) of {args.repeats} interleaved runs; the fit's loop forced to the same thread count")
    for name in jobs:
        cells = [f"{n} thread(s) {statistics.median(times[name, n]):.3f} s ({min(times[name, n]):.3f})"
                 for n in (1, 2)]
        print(f"  {name:20s} " + "   ".join(cells))
    with loop_threads(1):
        med, _, mapping = timed(lambda: stain._StainMapping(source, target, use_table=True), 1)
        print(f"  colour table build (the map of 2**24 pixels), 1 thread: {med:.3f} s")
        out = np.empty_like(image)
        med, low, _ = timed(lambda: mapping.apply(image, out, 512, None), args.repeats)
        print(f"  transform through the table, tile 512, 1 thread: {med:.3f} s ({low:.3f})")
    print(f"  load average now {os.getloadavg()[0]:.2f}")


def bench_sklearn(args) -> None:
    from sklearn.decomposition import DictionaryLearning

    image = synthetic_image(args.size, RUIFROK, seed=1)
    pixels = image[stain.tissue_mask(image)]
    pixels = pixels[np.random.default_rng(0).choice(len(pixels), args.max_pixels, replace=False)]
    od = stain.rgb_to_od(pixels).astype(np.float64)

    def objective(stains):
        s = torch.as_tensor(stains)
        conc = stain._solve_concentrations(torch.as_tensor(od) @ s.T, s @ s.T, 0.1).numpy()
        return 0.5 * np.sum((od - conc @ stains) ** 2) + 0.1 * conc.sum()

    med, _, ours = timed(lambda: stain.learn_stains(od), args.repeats)
    start = time.perf_counter()
    learner = DictionaryLearning(n_components=2, alpha=0.1, positive_code=True, positive_dict=True,
                                 fit_algorithm="cd", transform_algorithm="lasso_cd", random_state=0).fit(od)
    sk_time = time.perf_counter() - start
    theirs = stain.order_stains(learner.components_ / np.linalg.norm(learner.components_, axis=1, keepdims=True))
    print(f"dictionary learning on {len(od)} OD pixels, lambda 0.1:")
    print(f"  stain.learn_stains: {med:.3f} s, objective {objective(ours):.4f}, "
          f"cosines to truth {np.round(np.sum(ours * RUIFROK, axis=1), 4).tolist()}")
    print(f"  sklearn DictionaryLearning: {sk_time:.3f} s, objective {objective(theirs):.4f}, "
          f"cosines to truth {np.round(np.sum(theirs * RUIFROK, axis=1), 4).tolist()}")


def flicker(volume: np.ndarray, reference: stain.VahadaneNormalizer) -> list:
    """Mean relative section-to-section change of the mean tissue H and E concentrations, in %."""
    means = np.array([reference.concentrations(s[stain.tissue_mask(s)]).mean(axis=0) for s in volume], np.float64)
    return np.round(100 * np.abs(np.diff(means, axis=0)).mean(axis=0) / means.mean(axis=0), 1).tolist()


def bench_volume(args) -> None:
    from ScribbleSegLib.phantom import PhantomConfig, make_phantom

    shape = tuple(args.volume_shape)
    for seeds in ((3, 4), (5, 6)):
        target_volume, volume = (make_phantom(s, PhantomConfig(shape=shape)).image.array for s in seeds)
        target = stain_volume.fit_reference([target_volume])
        print(f"phantom {shape} seed {seeds[1]} -> target seed {seeds[0]}; "
              f"input flicker H/E {flicker(volume, target)} %")
        for per_section in (True, False):
            med, low, out = timed(lambda: stain_volume.normalize_volume(volume, target, per_section=per_section),
                                  args.repeats)
            label = "per section" if per_section else "volume stain"
            print(f"  {label:12s}: {med:.2f} s ({low:.2f}), "
                  f"flicker H/E {flicker(out, target)} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-pixels", type=int, default=50_000)
    parser.add_argument("--sklearn", action="store_true", help="compare with scikit-learn (bench extra)")
    parser.add_argument("--volume", action="store_true", help="per-section vs volume stain on phantoms")
    parser.add_argument("--volume-shape", type=int, nargs=3, default=(24, 512, 512), metavar=("Z", "Y", "X"))
    args = parser.parse_args()
    bench_image(args)
    if args.sklearn:
        bench_sklearn(args)
    if args.volume:
        bench_volume(args)


if __name__ == "__main__":
    main()
