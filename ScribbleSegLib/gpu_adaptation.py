"""The adaptation on a CUDA GPU: training steps replayed as one CUDA graph, ``h`` from features kept there.

On a GPU the adaptation's arithmetic is nothing; what costs is the host.  A DDML step is about 40 small
operations on 512 pixels: launched one by one they cost about 1.1 ms a step on an H200, as much as the
CPU's arithmetic (BENCHMARKS.md, "Interactive speed" item 37).  :func:`replay` launches a step's
operations once, as a CUDA graph, and replays the graph for every other step.  ``h`` over a volume reads
all of its features: :func:`upload` keeps them, with the network's probability, on the GPU for the warm
session's runs, and :func:`evaluate_h` computes ``h`` exactly at every voxel there.

On a CPU nothing here runs: :func:`upload` returns None and :mod:`ScribbleSegLib.ddml` trains as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from .progress import CancelToken, check

#: The GPU keeps a volume's features only when, after them, this much of its memory stays free: ``h`` is
#: computed in chunks of :data:`H_CHUNK_VOXELS` (a few hundred MB), and the M-Unet's next volume needs room.
RESIDENT_HEADROOM_GIB = 4.0
#: Voxels per chunk of :func:`evaluate_h`: 2**21 voxels make activations of 512 MB at width 64.
H_CHUNK_VOXELS = 1 << 21


def is_gpu(device) -> bool:
    """Whether ``device`` (a ``torch.device``, a name, or None) is a CUDA device.

    Examples
    --------
    >>> is_gpu("cpu"), is_gpu(None)
    (False, False)
    """
    return device is not None and torch.device(device).type == "cuda"


def replay(step: Callable[[], None], count: int, device, cancel: Optional[CancelToken] = None,
           between: Optional[Callable[[int], None]] = None) -> None:
    """Run ``step()`` ``count`` times on ``device``; on a GPU, steps 2 to ``count`` as replays of one CUDA graph.

    ``step`` must keep all it changes in tensors whose memory stays the same (parameters and optimiser
    state updated in place, a step counter as a tensor) and must not wait for the GPU (no ``float(t)``,
    no ``.item()``): a graph holds the kernels with their memory, not the Python around them.  The first
    step runs as it is, on a side stream (it sets up cuBLAS and the allocator, as graph capture needs);
    the graph is then captured from the second, which capture does not run.

    Parameters
    ----------
    step : callable
        One training step.
    count : int
        Steps.
    device : torch.device or str
        On a CPU every step is a plain call.
    cancel : CancelToken, optional
        Checked before every step.
    between : callable, optional
        ``between(i)`` after step ``i`` (0-based), e.g. for progress; it may wait for the GPU.

    Examples
    --------
    >>> count = torch.zeros(())
    >>> replay(lambda: count.add_(1), 3, "cpu")
    >>> int(count)
    3
    """
    if count <= 0:
        return
    if not is_gpu(device):
        for i in range(count):
            check(cancel)
            step()
            if between is not None:
                between(i)
        return
    check(cancel)
    with torch.cuda.device(device):  # capture takes the current device's streams: this GPU's, not cuda:0's
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        if between is not None:
            between(0)
        if count == 1:
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        for i in range(1, count):
            check(cancel)
            graph.replay()
            if between is not None:
                between(i)


@dataclass
class Resident:
    """A volume's M-Unet outputs on the GPU, for :func:`evaluate_h` (made by :func:`upload`).

    Attributes
    ----------
    features : torch.Tensor
        ``(Z, Y, X, C)`` float16.
    probability : torch.Tensor
        ``(Z, Y, X)`` float32, the network's probability.

    Examples
    --------
    :func:`upload` makes one on a GPU only; its :attr:`device` is where the features are (here the CPU's):

    >>> kept = Resident(torch.zeros(1, 2, 2, 4, dtype=torch.float16), torch.zeros(1, 2, 2))
    >>> kept.device, tuple(kept.features.shape)
    (device(type='cpu'), (1, 2, 2, 4))
    """

    features: torch.Tensor
    probability: torch.Tensor

    @property
    def device(self) -> torch.device:
        """Where the features are: the GPU that :func:`upload` put them on (any device for one made by hand)."""
        return self.features.device


def upload(probability: np.ndarray, features: np.ndarray, device) -> Optional[Resident]:
    """The M-Unet outputs copied to ``device``'s GPU, or None: on a CPU, or when they would leave less than
    :data:`RESIDENT_HEADROOM_GIB` of its memory free (``h`` is then computed on the CPU from ``features``).

    Examples
    --------
    >>> upload(np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2, 4), np.float16), "cpu") is None
    True
    """
    if not is_gpu(device) or features is None:
        return None
    device = torch.device(device)
    need = features.size * 2 + probability.size * 4
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError, ValueError):  # no CUDA build, no such device
        return None
    if free - need < RESIDENT_HEADROOM_GIB * 2**30:
        return None
    try:
        feats = torch.empty(tuple(features.shape), dtype=torch.float16, device=device)
        prob = torch.empty(tuple(probability.shape), dtype=torch.float32, device=device)
    except torch.cuda.OutOfMemoryError:  # another process took the memory since it was measured
        return None
    # A section at a time: a memory-mapped cache never enters RAM whole.  Copied first: the session's
    # arrays are read-only views, which torch will not wrap.
    for z in range(features.shape[0]):
        feats[z].copy_(torch.from_numpy(np.array(features[z], np.float16)))
        prob[z].copy_(torch.from_numpy(np.array(probability[z], np.float32)))
    return Resident(feats, prob)


def evaluate_h(resident: Resident, layers: List[Tuple[torch.Tensor, torch.Tensor]],
               network_weight: float) -> np.ndarray:
    """``h`` at every voxel from the features on the GPU, blended with the network's probability.

    Parameters
    ----------
    resident : Resident
    layers : list of (W, b)
        :func:`ScribbleSegLib.h_evaluation.fused_layers` of ``f`` and the head (on any device): a
        sigmoid follows each.
    network_weight : float
        ``h = (1 - w) head(f(x)) + w p`` (0: the head alone).

    Returns
    -------
    numpy.ndarray
        float32 ``(Z, Y, X)``.

    Examples
    --------
    >>> from ScribbleSegLib.ddml import DDMLNet, Head
    >>> from ScribbleSegLib.h_evaluation import fused_layers
    >>> kept = Resident(torch.zeros(1, 2, 2, 4, dtype=torch.float16), torch.full((1, 2, 2), 0.8))  # CPU tensors
    >>> h = evaluate_h(kept, fused_layers(DDMLNet(4, (8,), 2), Head(2)), network_weight=1.0)
    >>> h.shape, round(float(h.max()), 3)  # all the network's
    ((1, 2, 2), 0.8)
    """
    device = resident.device
    layers = [(w.to(device), b.to(device)) for w, b in layers]
    depth = resident.features.shape[0]
    flat = resident.features.reshape(-1, resident.features.shape[-1])
    prob = resident.probability.reshape(-1)
    h = torch.empty(flat.shape[0], dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start in range(0, flat.shape[0], H_CHUNK_VOXELS):
            a = flat[start:start + H_CHUNK_VOXELS].float()
            for w, b in layers[:-1]:
                a = torch.sigmoid_(torch.addmm(b, a, w.T))
            w, b = layers[-1]
            part = torch.sigmoid_(torch.addmm(b, a, w.T).reshape(-1))
            if network_weight > 0:
                part.mul_(1.0 - network_weight).add_(prob[start:start + len(part)], alpha=network_weight)
            h[start:start + len(part)] = part
        return h.reshape(depth, *resident.features.shape[1:3]).cpu().numpy()
