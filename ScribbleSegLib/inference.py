"""Tiled inference: heart probability and per-pixel features of a whole volume.

Each section is cut into tiles whose origins are multiples of the network's
alignment; every tile reads its inputs with the network's full receptive field
around it (:func:`multifov.tile_geometry`), so a tile's core equals what the
network would compute for the whole section at once.  Tiles therefore meet
without seams and need no blending, and the result does not depend on the tile
size.  The outer fields of view read past the section border by reflection.

Memory is the section, its pyramid (1/3 of the section), the probability and
one batch of tiles; twice that on a 2-core CPU, which runs two sections at a
time, and up to four times beside a GPU, which runs up to four (:func:`section_workers`).
With ``orientations`` > 1 (test-time flips) each section is also run flipped and
the outputs averaged, which adds float32 sums of the section's logit and features.
Features go to a ``.npy`` file, returned memory-mapped, when a path is given or
when they would be large; they are written tile by tile and never sit in memory whole.
On a CUDA out-of-memory error the tile batch halves and the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import choices, multifov
from .checks import check_orientations
from .errors import ScribbleSegError
from .fileio import atomic_output
from .geometry import Volume
from .nets import NetOutput, geometry_for_tile, to_input
from .padding import padding_to_glass
from .progress import CancelToken, LinkedToken, ProgressCallback, check, report
from .runtime import in_order, resolve_device, section_workers, torch_threads
from .white_point import glass_white, white_glass

#: Features larger than this go to a temporary memory-mapped file when no path is given.
IN_MEMORY_FEATURE_BYTES = 2 * 1024 ** 3
#: Sections are stain-normalized in slabs of about this size.
NORMALIZE_SLAB_BYTES = 256 * 1024 ** 2

_STAGE = "M-Unet inference"


def default_tile(device: torch.device) -> Tuple[int, int]:
    """Tile core size and tiles per batch: what fits a GPU well, and what runs fastest on a CPU.

    Examples
    --------
    >>> default_tile(torch.device("cpu")), default_tile(torch.device("cuda"))
    ((512, 1), (1024, 4))
    """
    if device.type == "cuda":
        return 1024, 4
    return 512, 1


def cpu_threads() -> int:
    """Torch intra-op threads for convolution work on the CPU.

    On a 2-core machine with other processes busy, two threads ran 2.4-2.9x
    slower than one (``benchmarks/bench_inference.py --threads``, small M-Unet,
    1024x1024 section), and at best 1.2x faster when the machine was idle, so
    machines with two cores or fewer use one.
    """
    return 1 if (os.cpu_count() or 1) <= 2 else torch.get_num_threads()


def tile_origins(length: int, tile: int, align: int) -> List[int]:
    """Origins of tiles of ``tile`` pixels covering ``length``; all multiples of ``align``.

    The last tile is moved back to end on the first multiple of ``align`` past
    the section, so that it overlaps its neighbour instead of sticking far out.

    Examples
    --------
    >>> tile_origins(100, 64, 16)  # the last tile moved back to end at 112, the first multiple of 16 past 100
    [0, 48]
    >>> tile_origins(40, 64, 16)  # one tile covers it
    [0]
    """
    end = -(-length // align) * align
    origins = list(range(0, end - tile + 1, tile))
    if not origins or origins[-1] + tile < end:
        origins.append(max(0, end - tile))
    return origins


#: The flips of a section, as ``(H, W)`` axes, in the order ``orientations`` takes them: none, left-right,
#: top-bottom, both.
FLIPS: Tuple[Tuple[int, ...], ...] = ((), (1,), (0,), (0, 1))
#: Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the flips' logits are averaged.
LOGIT_EPS = 1e-6


class SectionPredictor:
    """Runs a network over whole sections, tile by tile.

    Parameters
    ----------
    net : torch.nn.Module
        A :func:`nets.build_net` network, in eval mode, on ``device``.
    device : torch.device
    tile : int
        Side of a tile's core in full-magnification pixels (rounded to the alignment).
    batch : int
        Tiles per forward pass; halves on CUDA out-of-memory.
    orientations : int
        How many of the section's :data:`FLIPS` the network sees (``choices.ORIENTATIONS``);
        their logits and features, flipped back, are averaged.  1: the section as it is.

    Examples
    --------
    The tile is rounded down to the network's alignment (4 pixels for two fields of view and depth 2):

    >>> from ScribbleSegLib.nets import ModelConfig, build_net
    >>> net = build_net(ModelConfig(patch=16, width=4, depth=2, n_fov=2, aggregator=(8,), feature_channels=8))
    >>> predictor = SectionPredictor(net.eval(), torch.device("cpu"), tile=50, batch=2)
    >>> predictor.align, predictor.tile, predictor.channels
    (4, 48, 8)
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, tile: int, batch: int,
                 orientations: int = choices.DEFAULT_ORIENTATIONS) -> None:
        self.net = net
        self.config = net.config
        self.device = device
        self.align = multifov.tile_alignment(self.config)
        self.tile = max(self.align, int(tile) // self.align * self.align)
        self.batch = max(1, int(batch))
        self.channels = self.config.feature_channels
        self.orientations = check_orientations(orientations)
        self._geoms = {}

    def _geometry(self, core: Tuple[int, int]) -> multifov.FovGeometry:
        if core not in self._geoms:
            self._geoms[core] = geometry_for_tile(self.net, core)
        return self._geoms[core]

    def predict(self, section: np.ndarray, prob_out: np.ndarray, feat_out=None,
                cancel: Optional[CancelToken] = None) -> None:
        """Write the probability and features of one ``(H, W, 3)`` section.

        Parameters
        ----------
        section : numpy.ndarray
        prob_out : numpy.ndarray
            float32 ``(H, W)``, filled in place.
        feat_out : numpy.ndarray or FeatureWriter or None
            float16 ``(H, W, C)`` filled in place, or a writer that receives
            tile by tile (so that the features of a huge section never sit in
            memory whole), or None for no features.
        cancel : CancelToken, optional

        Examples
        --------
        >>> from ScribbleSegLib.nets import ModelConfig, build_net
        >>> net = build_net(ModelConfig(patch=16, width=4, depth=2, n_fov=2, aggregator=(8,), feature_channels=8))
        >>> predictor = SectionPredictor(net.eval(), torch.device("cpu"), tile=48, batch=2, orientations=1)
        >>> prob, feats = np.full((40, 70), -1, np.float32), np.zeros((40, 70, 8), np.float16)
        >>> predictor.predict(np.full((40, 70, 3), 200, np.uint8), prob, feats)  # two tiles across
        >>> bool(0 <= prob.min() <= prob.max() <= 1), bool(np.abs(feats).max() > 0)
        (True, True)
        """
        run = self._predict if self.orientations == 1 else self._predict_flipped
        if self.device.type == "cpu":
            with torch_threads(cpu_threads()):
                run(section, prob_out, feat_out, cancel)
        else:
            run(section, prob_out, feat_out, cancel)

    def _predict_flipped(self, section: np.ndarray, prob_out: np.ndarray, feat_out,
                         cancel: Optional[CancelToken]) -> None:
        """The mean of the logits and features of the section's first ``orientations`` flips."""
        h, w = section.shape[:2]
        prob = np.empty((h, w), np.float32)
        logit_sum = np.zeros((h, w), np.float32)
        feats = None if feat_out is None else np.empty((h, w, self.channels), np.float16)
        feat_sum = None if feat_out is None else np.zeros((h, w, self.channels), np.float32)
        for axes in FLIPS[:self.orientations]:
            flipped = np.ascontiguousarray(np.flip(section, axes)) if axes else section
            # Into flipped views of the buffers: they then hold the outputs the right way round.
            self._predict(flipped, np.flip(prob, axes), None if feats is None else np.flip(feats, axes), cancel)
            with torch.inference_mode():
                logit_sum += torch.logit(torch.from_numpy(prob), LOGIT_EPS).numpy()
            if feat_sum is not None:
                feat_sum += feats
        n = np.float32(self.orientations)
        with torch.inference_mode():
            prob_out[...] = torch.sigmoid(torch.from_numpy(logit_sum / n)).numpy()
        if feat_out is None:
            return
        block = (feat_sum / n).astype(np.float16)
        if isinstance(feat_out, np.ndarray):
            feat_out[...] = block
        else:
            feat_out.write(0, 0, block)

    def _predict(self, section: np.ndarray, prob_out: np.ndarray, feat_out, cancel: Optional[CancelToken]) -> None:
        h, w = section.shape[:2]
        core = (min(self.tile, -(-h // self.align) * self.align), min(self.tile, -(-w // self.align) * self.align))
        geom = self._geometry(core)
        pyramid = multifov.build_pyramid(section, max(win.level for win in geom.windows) + 1)
        xs = tile_origins(w, core[1], self.align)
        anchors = [(y, x) for y in tile_origins(h, core[0], self.align) for x in xs]
        i = 0
        while i < len(anchors):
            check(cancel)
            group = anchors[i:i + self.batch]
            out = self._run(pyramid, geom, group)
            if out is None:  # out of GPU memory: try again with half the batch
                continue
            prob = torch.sigmoid(out.logit.float())[:, 0].cpu().numpy()
            feats = None if feat_out is None else out.features.to(torch.float16).permute(0, 2, 3, 1).cpu().numpy()
            for j, (y, x) in enumerate(group):
                ye, xe = min(h, y + core[0]), min(w, x + core[1])
                prob_out[y:ye, x:xe] = prob[j, :ye - y, :xe - x]
                if feats is None:
                    continue
                if isinstance(feat_out, np.ndarray):
                    feat_out[y:ye, x:xe] = feats[j, :ye - y, :xe - x]
                else:
                    feat_out.write(y, x, feats[j, :ye - y, :xe - x])
            i += len(group)

    def _run(self, pyramid: Sequence[np.ndarray], geom: multifov.FovGeometry,
             anchors: Sequence[Tuple[int, int]]) -> Optional[NetOutput]:
        crops = [multifov.extract(pyramid, geom.windows, a) for a in anchors]
        inputs = [to_input(np.stack([c[k] for c in crops]), self.device) for k in range(len(geom.windows))]
        try:
            with torch.inference_mode(), _autocast(self.device):
                return self.net(inputs, geom)
        except torch.cuda.OutOfMemoryError:
            del inputs
            torch.cuda.empty_cache()
            if self.batch == 1:
                raise ScribbleSegError(
                    f"out of GPU memory with a single {geom.core[1][0]}x{geom.core[1][1]} tile; "
                    "use a smaller tile or device 'cpu'") from None
            self.batch //= 2
            return None


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _as_array(image: Union[Volume, np.ndarray]) -> np.ndarray:
    array = image.array if isinstance(image, Volume) else np.asarray(image)
    if array.ndim == 3:  # one section
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ScribbleSegError(f"image must be (Z, Y, X, 3) uint8 RGB, got {array.dtype} {array.shape}")
    return array


class FeatureWriter:
    """Writes tiles of one section's features into a float16 ``(Z, Y, X, C)`` file.

    Ordinary file writes, one per tile row, not a memory map: the pages go to
    the page cache, not into the process, so a section's features are never in
    memory whole.

    Examples
    --------
    A block of ones at row 2, column 1 of section 1 of a ``.npy`` file:

    >>> path = os.path.join(tempfile.mkdtemp(), "features.npy")
    >>> offset = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(2, 4, 4, 3)).offset
    >>> with open(path, "r+b") as handle:
    ...     FeatureWriter(handle, offset, (2, 4, 4, 3), section=1).write(2, 1, np.ones((1, 2, 3)))
    >>> saved = np.load(path)
    >>> saved[1, :, :, 0].astype(int).tolist(), int(saved[0].sum())
    ([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], 0)
    """

    def __init__(self, handle, offset: int, shape: Tuple[int, ...], section: int,
                 lock: Optional[threading.Lock] = None) -> None:
        self.handle = handle
        self.lock = lock or threading.Lock()  # one per file when sections are written from several threads
        self.pixel_bytes = int(shape[3]) * 2
        self.row_bytes = int(shape[2]) * self.pixel_bytes
        self.base = offset + section * int(shape[1]) * self.row_bytes

    def write(self, y: int, x: int, block: np.ndarray) -> None:
        """Write ``block`` ``(h, w, C)`` at rows ``y ..`` and columns ``x ..`` of this section."""
        block = np.ascontiguousarray(block, dtype=np.float16)
        with self.lock:  # a seek and its write must not be split by another thread's
            for r in range(block.shape[0]):
                self.handle.seek(self.base + (y + r) * self.row_bytes + x * self.pixel_bytes)
                self.handle.write(block[r].tobytes())


def _feature_file(shape: Tuple[int, ...], path: Optional[os.PathLike]):
    """An open file for the features and the data offset: ``path`` as ``.npy``, or an unnamed temporary file."""
    if path is not None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        offset = header.offset
        del header
        return open(path, "r+b"), offset
    # The operating system removes an unnamed temporary file once it is closed and unmapped.
    handle = tempfile.TemporaryFile(prefix="scribbleseg-features-")
    handle.truncate(int(np.prod(shape)) * 2)
    return handle, 0


def predict_volume(model, image: Union[Volume, np.ndarray], *, device: Optional[str] = None,
                   tile: Optional[int] = None, batch: Optional[int] = None, normalize: bool = True,
                   feature_path: Optional[Union[str, os.PathLike]] = None,
                   scale: Tuple[float, float] = (1.0, 1.0),
                   progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None,
                   orientations: int = choices.DEFAULT_ORIENTATIONS) -> Tuple[np.ndarray, np.ndarray]:
    """Heart probability and per-pixel features of every section of a volume.

    Parameters
    ----------
    model : model_file.SegModel
        A loaded model.
    image : Volume or numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 RGB (one ``(Y, X, 3)`` section is also accepted).
    device : str, optional
        ``auto``, ``cpu`` or ``cuda``; default the model's device.
    tile : int, optional
        Tile core side in pixels; default 512 on a CPU, 1024 on a GPU.  The
        result does not depend on it.
    batch : int, optional
        Tiles per forward pass; default 1 on a CPU, 4 on a GPU.
    normalize : bool
        Render the sections in the model's reference stain first (when the model has one).
    feature_path : path, optional
        Write the features to this ``.npy`` file (atomically) and return it memory-mapped.
    scale : (float, float)
        ``(y, x)`` factors by which each section is resized before the network, so
        that its pixels have the size the network was trained on (see
        :func:`network_scale`); the outputs are resized back to the section's grid.
    progress, cancel
        See :mod:`progress`.
    orientations : int
        Test-time flips (``choices.ORIENTATIONS``): the network also sees each section
        flipped left-right (2), and top-bottom and both (4), and the logits and features
        are averaged; as many times the network's time.  1: no flips.

    Returns
    -------
    probability : numpy.ndarray
        float32 ``(Z, Y, X)`` in [0, 1].
    features : numpy.ndarray
        float16 ``(Z, Y, X, C)``; a read-only memory map of ``feature_path`` when given.

    Examples
    --------
    >>> from ScribbleSegLib.model_file import load_model
    >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    >>> from ScribbleSegLib.starter import starter_model_path
    >>> model = load_model(starter_model_path(), device="cpu")
    >>> phantom = make_phantom(seed=3, config=PhantomConfig(shape=(4, 96, 96)))
    >>> probability, features = predict_volume(model, phantom.image)
    >>> probability.shape, probability.dtype, features.shape, features.dtype
    ((4, 96, 96), dtype('float32'), (4, 96, 96, 32), dtype('float16'))
    """
    from .checks import check_progress_cancel

    if not all(hasattr(model, a) for a in ("net", "device", "config")):
        raise ScribbleSegError(f"model must be a loaded model (model_file.load_model, or pipeline.as_model for a "
                               f"file name), got {type(model).__name__}")
    check_progress_cancel(progress, cancel)
    array = _as_array(image)
    try:
        scale = tuple(float(f) for f in scale)
    except (TypeError, ValueError):
        scale = ()
    if len(scale) != 2 or not all(0.05 <= f <= 20 for f in scale):
        raise ScribbleSegError(f"scale must be two factors (y, x) between 0.05 and 20, got {scale!r}")
    dev = resolve_device(device) if device is not None else model.device
    net = model.net
    if next(net.parameters()).device != dev:
        net = net.to(dev)
    default_core, default_batch = default_tile(dev)
    predictor = SectionPredictor(net.eval(), dev, tile or default_core, batch or default_batch, orientations)
    target = _target_stain(model) if normalize else None
    z = array.shape[0]
    prob = np.empty(array.shape[:3], dtype=np.float32)
    shape = array.shape[:3] + (predictor.channels,)
    on_disk = feature_path is not None or int(np.prod(shape)) * 2 > IN_MEMORY_FEATURE_BYTES
    # Stain normalization copies its input: do it in slabs of sections to bound the memory.
    slab = max(1, NORMALIZE_SLAB_BYTES // max(1, array[0].nbytes))
    network_pixels = int(np.prod([max(1, round(n * f)) for n, f in zip(array.shape[1:3], scale)]))
    workers = section_workers(dev, max(array.shape[1] * array.shape[2], network_pixels))
    with contextlib.ExitStack() as stack:
        feats = handle = None
        if not on_disk:
            feats = np.empty(shape, dtype=np.float16)
        else:
            tmp = stack.enter_context(atomic_output(feature_path)) if feature_path is not None else None
            handle, offset = _feature_file(shape, tmp)
            if tmp is not None:
                stack.callback(handle.close)  # runs before the rename
        lock = threading.Lock()
        white = glass_white(array)  # the stack's glass: for sections with too little glass of their own
        # The sections' threads stop at their next tile when the caller cancels, and when a signal (SIGTERM,
        # Ctrl-C) interrupts the main thread's wait: one large section otherwise ran on to its end (35 s).
        stop = LinkedToken(cancel)

        def run(k: int, section: np.ndarray) -> None:
            out = feats[k] if feats is not None else FeatureWriter(handle, offset, shape, k, lock)
            if scale == (1.0, 1.0):
                predictor.predict(section, prob[k], out, stop)
            else:
                _predict_rescaled(predictor, section, scale, prob[k], out, stop)

        def done(item: Tuple[int, np.ndarray], _) -> None:
            report(progress, _STAGE, (item[0] + 1) / z, f"section {item[0] + 1}/{z}")
            check(cancel)

        # The threads' torch runs on one thread each (set once: the setting is the process's).
        stack.enter_context(torch_threads(1) if workers > 1 else contextlib.nullcontext())
        for z0 in range(0, z, slab):
            check(cancel)
            # Copies only where a section has black fill, or glass that is not white.
            sections = padding_to_glass(white_glass(array[z0:z0 + slab], white))
            if target is not None:
                report(progress, _STAGE, z0 / z, f"stain normalization of sections {z0 + 1}-{z0 + len(sections)}")
                sections = _normalize(sections, target, cancel)
            if workers > 1:
                in_order(lambda item: run(*item), list(enumerate(sections, start=z0)), workers, done, stop)
                continue
            for k, section in enumerate(sections, start=z0):
                check(cancel)
                report(progress, _STAGE, k / z, f"section {k + 1}/{z}")
                run(k, section)
        if handle is not None:
            handle.flush()
            if feature_path is None:
                feats = np.memmap(handle, dtype=np.float16, mode="r", shape=shape)
    report(progress, _STAGE, 1.0, f"{z} sections")
    if feature_path is not None:
        feats = np.load(feature_path, mmap_mode="r")
    return prob, feats


def network_scale(image_spacing_xy: Sequence[float], model_spacing_xy: Sequence[float],
                  tolerance: float = 0.05) -> Tuple[float, float]:
    """``(y, x)`` factors that bring a stack's pixels to the size the network was trained on.

    1 where the sizes agree within ``tolerance`` (relative), so a stack scanned like
    the training data is never resampled.

    Examples
    --------
    >>> network_scale((0.0154, 0.0154), (0.02, 0.02))
    (0.77, 0.77)
    >>> network_scale((0.0202, 0.02), (0.02, 0.02))
    (1.0, 1.0)
    >>> network_scale((0.03, 0.03), (0.0177, 0.0177)) == network_scale((0.0299999993, 0.0299999993), (0.0177, 0.0177))
    True
    >>> network_scale((2e-9, 2e-9), (0.02, 0.02))  # a spacing typed wrong is far off, but not 0
    (1e-07, 1e-07)
    """
    factors = []
    for image_mm, model_mm in zip(image_spacing_xy[::-1], model_spacing_xy[::-1]):
        # Rounded: a NIfTI stores its spacing in float32 (0.0299999993 for 0.03), and the same stack saved as NRRD
        # and as NIfTI ran the network at two scales a billionth apart, each with its own cache entry.  A ratio under
        # 1e-3 keeps 6 significant digits: rounded to 6 decimals, a spacing of 1e-9 mm became 0 (a division by zero).
        ratio = float(image_mm) / float(model_mm)
        ratio = round(ratio, 6) if ratio >= 1e-3 else float(f"{ratio:.6g}")
        factors.append(1.0 if abs(ratio - 1.0) <= tolerance else ratio)
    return factors[0], factors[1]


def _resize(block: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` float, with antialiasing when shrinking."""
    shrink = size[0] < block.shape[-2] or size[1] < block.shape[-1]
    return torch.nn.functional.interpolate(block, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _predict_rescaled(predictor: "SectionPredictor", section: np.ndarray, scale: Tuple[float, float],
                      prob_out: np.ndarray, feat_out, cancel: Optional[CancelToken]) -> None:
    """Run the network on the section resized by ``scale`` and resize its outputs back."""
    rows, cols = section.shape[:2]
    small = (max(1, int(round(rows * scale[0]))), max(1, int(round(cols * scale[1]))))
    with torch.inference_mode():
        rgb = torch.from_numpy(np.ascontiguousarray(section)).permute(2, 0, 1)[None].float()
        resized = _resize(rgb, small).round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    prob_small = np.empty(small, np.float32)
    feat_small = np.empty(small + (predictor.channels,), np.float16)
    predictor.predict(np.ascontiguousarray(resized), prob_small, feat_small, cancel)
    with torch.inference_mode():
        # Interpolation weights summing to 1 can still round a little past [0, 1].
        prob_out[...] = _resize(torch.from_numpy(prob_small)[None, None], (rows, cols))[0, 0].clamp_(0, 1).numpy()
        # Back to the section's grid in bands of rows, so the full-size float32 copy is never whole.
        band = max(1, (1 << 22) // max(1, cols * predictor.channels))
        # (1, C, H, W) in channels-last memory, as torch's fast bilinear kernel wants it: a view made by
        # permuting (H, W, C) before adding the batch axis has a batch stride that it does not take
        # for channels-last, and a generic kernel was then 5x slower (a third of the M-Unet stage).
        feats = torch.from_numpy(feat_small)[None].permute(0, 3, 1, 2).float()
        full = _resize(feats, (rows, cols)) if rows * cols * predictor.channels <= (1 << 26) else None
        for y0 in range(0, rows, band):
            y1 = min(rows, y0 + band)
            if full is not None:
                part = full[0, :, y0:y1]
            else:  # rows y0:y1 of the bilinear resize, from the small rows that feed them
                s0 = max(0, int(np.floor((y0 + 0.5) / rows * small[0] - 0.5)) - 1)
                s1 = min(small[0], int(np.ceil((y1 - 0.5) / rows * small[0] - 0.5)) + 2)
                part = _resize_rows(feats[:, :, s0:s1], s0, small[0], rows, y0, y1, cols)
            block = part.permute(1, 2, 0).to(torch.float16).numpy()
            if isinstance(feat_out, np.ndarray):
                feat_out[y0:y1] = block
            else:
                feat_out.write(y0, 0, block)


def _resize_rows(src: torch.Tensor, s0: int, n_small: int, rows: int, y0: int, y1: int, cols: int) -> torch.Tensor:
    """Rows ``y0:y1`` of a bilinear resize of ``n_small`` rows to ``rows``, from source rows ``s0:``."""
    y = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) * n_small / rows - 0.5
    y = y.clamp(0, n_small - 1)
    lo = y.floor().long().clamp(max=n_small - 1)
    hi = (lo + 1).clamp(max=n_small - 1)
    w = (y - lo.float())[None, :, None]
    src = torch.nn.functional.interpolate(src, size=(src.shape[2], cols), mode="bilinear", align_corners=False)[0]
    return src[:, lo - s0] * (1 - w) + src[:, hi - s0] * w


def _target_stain(model):
    """The model's reference stain as a fitted normalizer, or None."""
    if getattr(model, "stain", None) is None:
        return None
    from .stain import VahadaneNormalizer

    return VahadaneNormalizer.from_dict(model.stain)


def _normalize(sections: np.ndarray, target, cancel) -> np.ndarray:
    from .stain_volume import normalize_volume

    return normalize_volume(sections, target, cancel=cancel)
