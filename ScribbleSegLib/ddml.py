"""Scribble adaptation: DDML metric learning and the 1x1 head (Harada et al. 2019, §III-B).

The M-Unet gives every voxel a feature vector ``x`` (the activation just before
its output layer).  This module re-trains, for one volume, the two small
networks that turn those features into the data term ``h`` of the graph cut:

1. ``f``, the DDML network (Hu, Lu & Tan, CVPR 2014): a tanh MLP trained on
   pixel pairs so that same-class pairs come closer than a threshold ``tau``
   and different-class pairs move farther apart (paper eq. 1-3);
2. the head, a 1x1 ("discriminating") layer on ``f(x)`` fine-tuned with the
   M-Unet and ``f`` frozen, whose sigmoid output is ``h`` in [0, 1].

Training pixels come from this volume's scribbles and from the model file's
training-pixel bank (features of pixels of the training volumes with their
labels).  Everything runs on the CPU in a few seconds (on a GPU, see
:mod:`ScribbleSegLib.gpu_adaptation`)::

    from ScribbleSegLib import ddml
    result = ddml.adapt(features, scribbles, model.bank_features, model.bank_labels)
    result.h            # float32 (Z, Y, X), probability of heart
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import choices, feature_cache
from .errors import DamagedFeatures, ScribbleSegError
from .ddml_loss import _PairTerms, _pair_blocks, _pair_gradient, _pair_terms, _pair_value
from .feature_reader import FeatureReader
from .gpu_adaptation import Resident, evaluate_h, is_gpu, replay
from .h_evaluation import fused_layers, predict_h
from .network_doubt import blend_network
from .progress import CancelToken, ProgressCallback, check, report
from .runtime import torch_threads

_log = logging.getLogger(__name__)

SOURCE_SCRIBBLE = 0
"""``source`` value of a pixel drawn from this volume's scribbles."""
SOURCE_BANK = 1
"""``source`` value of a pixel drawn from the model file's training-pixel bank."""

_HEART, _BACKGROUND = 1, 2  # scribble values


@dataclass(frozen=True)
class DDMLConfig:
    """Hyper-parameters of the DDML network ``f`` and of the head.

    The defaults were chosen by ``scribbleseg bench`` on the validation volumes of
    two phantom families, in-family and cross-family together (BENCHMARKS.md):
    a scribble share of 0.3 and the network's probability blended in at 0.5.
    :meth:`paper` gives the paper's own adaptation (share 0.05, no blend).

    Attributes
    ----------
    hidden : tuple of int
        Widths of the hidden tanh layers of ``f``.  With ``out_dim`` this makes
        ``M = len(hidden) + 1`` layers in eq. 3.
    out_dim : int
        Width of ``f``'s output (also tanh, as in DDML), i.e. of the space in
        which eq. 1 measures distances.
    tau : float
        The threshold of eq. 2.  Outputs lie in [-1, 1]^out_dim, so
        ``d^2 <= 4 out_dim``; same-class pairs are pushed below ``tau - 1`` and
        different-class pairs above ``tau + 1``.
    beta : float
        Sharpness of the generalised logistic loss ``g(z) = softplus(beta z) / beta``.
    weight_decay : float
        lambda of eq. 3, applied to every weight matrix and bias of ``f``
        (see :func:`~ScribbleSegLib.ddml_loss.ddml_loss` for its scale).
    lr : float
        Adam learning rate for ``f`` (the paper's Adam used 0.001).
    steps : int
        Adam steps for ``f``; each sees one minibatch and all its pairs.
    batch_size : int
        Pixels per minibatch (half heart, half background), so
        ``batch_size * (batch_size - 1) / 2`` pairs per step.
    pool_size : int
        Pixels drawn once by :func:`sample_pixels` (half per class); minibatches
        are drawn from this pool.
    scribble_share : float
        Share of each class's pool drawn from the scribbles; the rest comes from
        the bank.  1.0 ignores the bank.
    head_steps : int
        Full-batch Adam steps for the head on the whole pool.
    head_lr : float
        Adam learning rate for the head.
    head_weight_decay : float
        L2 weight decay of the head.
    network_weight : float
        Share of the network's own probability in the result:
        ``h = (1 - w) head(f(x)) + w p_network``.  0 is the paper's method; a
        positive weight anchors the adaptation to the network where the scribbles
        say little (see :meth:`paper` for the paper's settings).
    bank_doubt : float or None
        When the network labels more than this share of one class's strokes the other way
        (:func:`ScribbleSegLib.pipeline.network_doubt`), the strokes may mark another target than the
        model's, whose bank labels do not hold for it: :func:`ScribbleSegLib.pipeline.adapt_and_cut`
        then also adapts with the whole pool drawn from the scribbles (``scribble_share`` 1), and blends
        that ``h`` in, in proportion to how far the doubt lies towards ``bank_doubt_full``, both moved up
        where the network agrees with the strokes (``bank_agreement``).  None never does; the paper's settings
        do not.  Default :data:`ScribbleSegLib.choices.NETWORK_DOUBT`.
    bank_doubt_full : float
        The doubt from which only the adaptation without the bank counts (at least ``bank_doubt``; equal,
        it switches at one value), both moved up where the network agrees with the strokes
        (``bank_agreement``).  Default :data:`ScribbleSegLib.choices.BANK_LEFT_OUT_DOUBT`.
    bank_agreement : tuple of 2 float or None
        The agreement of the network's labels with the strokes' own adaptation
        (:func:`ScribbleSegLib.pipeline.network_agreement`) at or below which the doubt's interval stays as
        it is, and at or above which it moves up by ``bank_agreement_shift``, in proportion between.  None:
        it stays.  Default :data:`ScribbleSegLib.choices.BANK_AGREEMENT`.
    bank_agreement_shift : float
        See ``bank_agreement``; 0 leaves the interval as it is.  Default
        :data:`ScribbleSegLib.choices.BANK_AGREEMENT_SHIFT`.
    doubted_network_weight : float
        ``network_weight`` at most, where ``bank_doubt`` leaves the bank out: the network's
        probability is then evidence for the model's target, not the strokes'.  Blended in at 0.5
        it held ``h`` under 1/2 over nuclei that a heart model calls background, and the cut
        erased them (real and synthetic H&E tiles); left out, the cut lost the organs that the
        strokes grow into (the phantom's liver, lung and neural tube).  Default 0.25
        (BENCHMARKS.md, "Strokes on another organ than the model's").
    doubted_network_share : tuple of 2 float or None
        The share of the stack that the adaptation without the bank calls target up to which the network
        is blended at ``doubted_network_weight``, and from which it is not blended at all, in proportion
        between (:func:`ScribbleSegLib.network_doubt.doubted_network_weight`); None: always at
        ``doubted_network_weight``.  Default :data:`ScribbleSegLib.choices.DOUBTED_NETWORK_SHARE`.
    doubted_colour_weight : float
        Where ``bank_doubt`` leaves the bank out, ``h`` is blended at this weight with a
        classifier of each pixel's own colour fitted to the strokes
        (:mod:`ScribbleSegLib.stroke_colour`): the network's features, learnt for the model's
        target, may hardly tell the strokes' target from its surroundings.  Default 0.5
        (BENCHMARKS.md, "Real H&E tiles with pathologists' outlines").
    keep_last : float
        Where the bank is left out, ``h``'s log-odds move towards the last result of the same chain of strokes by
        this many logits (times the share without the bank), less near the new strokes (``keep_last_reach``):
        a classifier of the strokes alone moves its decision over the whole image with each stroke, and correct
        strokes flipped regions far from them (:mod:`ScribbleSegLib.last_result`).  0 never does.  Default
        :data:`ScribbleSegLib.choices.KEEP_LAST`.
    keep_last_reach : float
        Pixels from the nearest new stroke at which ``keep_last`` is 63 % whole (``1 - exp(-d / reach)``); positive.
        Default :data:`ScribbleSegLib.choices.KEEP_LAST_REACH`.
    keep_last_pixels : float
        In [0, 1): where the bank is left out and the last result of the chain is kept (``keep_last`` > 0), this
        share of each class of the adaptation's pool is drawn from that result's pixels farther than
        ``last_result.ANCHOR_REACHES`` times ``keep_last_reach`` from the new strokes, in the bank's place
        (:func:`ScribbleSegLib.last_result.anchor_pixels`); the rest from the strokes.  0: the strokes alone.
        Default :data:`ScribbleSegLib.choices.KEEP_LAST_PIXELS`.
    head_bias : {"network", "balanced"}
        Where the head puts its threshold (``choices.HEAD_BIASES``): ``balanced`` leaves it
        where the class-balanced training put it (the paper's); ``network`` moves the head's
        bias so that it calls as many of the bank's pixels heart as the network does
        (:func:`network_rate_shift`).  Only when the pool holds bank pixels and the network's
        logits of them are given (:func:`adapt`'s ``bank_network_logit``).  Default
        :data:`ScribbleSegLib.choices.DEFAULT_HEAD_BIAS`.
    warm_steps : int
        Adam steps for ``f`` when a warm session starts it from its last run's ``f``
        (:class:`AdaptMemory`) instead of from random weights: the last ``f`` has learnt the
        earlier strokes, and a few steps on the new pool add what the new strokes say.  0
        trains every run from scratch, as :func:`ScribbleSegLib.pipeline.segment` does.
        Default :data:`ScribbleSegLib.choices.WARM_DDML_STEPS`.
    evaluation : {"coarse", "exact"}
        How :func:`predict_h` evaluates ``h`` over the volume (``choices.H_EVALUATIONS``):
        ``coarse`` on an in-plane grid, exactly only where interpolation could
        change the result (same final labels, several times faster); ``exact``
        at every voxel.  It does not change what is learnt.

    Examples
    --------
    >>> DDMLConfig().steps, DDMLConfig().scribble_share, DDMLConfig().network_weight
    (400, 0.3, 0.5)
    >>> DDMLConfig.paper().scribble_share, DDMLConfig.paper().network_weight
    (0.05, 0.0)
    """

    hidden: Tuple[int, ...] = (64, 64)
    out_dim: int = 32
    tau: float = 2.0
    beta: float = 2.0
    weight_decay: float = 1e-4
    lr: float = 1e-3
    steps: int = 400
    batch_size: int = 512
    pool_size: int = 20000
    scribble_share: float = 0.3
    head_steps: int = 200
    head_lr: float = 0.05
    head_weight_decay: float = 0.0
    network_weight: float = 0.5
    bank_doubt: Optional[float] = choices.NETWORK_DOUBT
    bank_doubt_full: float = choices.BANK_LEFT_OUT_DOUBT
    bank_agreement: Optional[Tuple[float, float]] = choices.BANK_AGREEMENT
    bank_agreement_shift: float = choices.BANK_AGREEMENT_SHIFT
    doubted_network_weight: float = 0.25
    doubted_network_share: Optional[Tuple[float, float]] = choices.DOUBTED_NETWORK_SHARE
    doubted_colour_weight: float = 0.5
    keep_last: float = choices.KEEP_LAST
    keep_last_reach: float = choices.KEEP_LAST_REACH
    keep_last_pixels: float = choices.KEEP_LAST_PIXELS
    head_bias: str = choices.DEFAULT_HEAD_BIAS
    evaluation: str = choices.DEFAULT_H_EVALUATION
    warm_steps: int = choices.WARM_DDML_STEPS

    @classmethod
    def paper(cls) -> "DDMLConfig":
        """The paper's adaptation as published: DDML + head alone (no network anchor), scribble share 0.05,
        the head as trained, ``f`` trained from scratch on every run.

        Examples
        --------
        >>> DDMLConfig.paper().network_weight
        0.0
        """
        return cls(scribble_share=0.05, network_weight=0.0, bank_doubt=None, head_bias="balanced", warm_steps=0)

    #: Upper bounds of the sizes, far above any useful value, so that a typo is an error and not hours of
    #: work or the machine's memory: layer widths, the batch (its pairs grow as its square), the pool, steps;
    #: and of every real-valued setting's size (step sizes, weights, margins).
    LIMITS = {"width": 4096, "batch_size": 4096, "pool_size": 1_000_000, "steps": 100_000, "number": 1e6}

    def __post_init__(self) -> None:
        for name in ("batch_size", "pool_size", "steps", "head_steps", "out_dim", "warm_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ScribbleSegError(f"DDML {name} must be a whole number, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("tau", "beta", "weight_decay", "lr", "scribble_share", "head_lr", "head_weight_decay",
                     "network_weight", "doubted_network_weight", "doubted_colour_weight", "bank_agreement_shift",
                     "keep_last", "keep_last_reach", "keep_last_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ScribbleSegError(f"DDML {name} must be a number, got {value!r}")
            # A step size or weight beyond this trains to infinities in float32, whatever the stack.
            if not (math.isfinite(value) and abs(value) <= self.LIMITS["number"]):
                raise ScribbleSegError(f"DDML {name} must be a finite number of at most {self.LIMITS['number']:g} "
                                       f"in size, got {value!r}")
        try:  # a string's characters would pass one by one ("12": two layers of 1 and 2)
            whole = not isinstance(self.hidden, (str, bytes)) and all(float(h) == int(h) for h in self.hidden)
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise ScribbleSegError(f"DDML hidden must hold whole numbers, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if any(h < 1 for h in self.hidden) or self.out_dim < 1:
            raise ScribbleSegError(f"DDML layer sizes must be positive, got hidden={self.hidden}, "
                                   f"out_dim={self.out_dim}")
        if max(self.hidden + (self.out_dim,)) > self.LIMITS["width"]:
            raise ScribbleSegError(f"DDML layer sizes must be at most {self.LIMITS['width']}, got "
                                   f"hidden={self.hidden}, out_dim={self.out_dim}")
        for name, limit in (("batch_size", "batch_size"), ("pool_size", "pool_size"), ("steps", "steps"),
                            ("head_steps", "steps"), ("warm_steps", "steps")):
            if getattr(self, name) > self.LIMITS[limit]:
                raise ScribbleSegError(f"DDML {name} must be at most {self.LIMITS[limit]}, got {getattr(self, name)}")
        if not self.keep_last >= 0:
            raise ScribbleSegError(f"DDML keep_last must be >= 0, got {self.keep_last}")
        if not 0 <= self.keep_last_pixels < 1:  # 1 would leave the strokes out of their own run
            raise ScribbleSegError(f"DDML keep_last_pixels must be in [0, 1), got {self.keep_last_pixels}")
        for name in ("beta", "lr", "head_lr", "keep_last_reach"):
            if not getattr(self, name) > 0:
                raise ScribbleSegError(f"DDML {name} must be positive, got {getattr(self, name)}")
        # Same-class pairs are pushed below tau - 1 and others above tau + 1, in a space where d^2 <= 4 out_dim:
        # outside that, one of the two targets cannot be reached and the loss never settles.
        if not 1.0 < self.tau < 4.0 * self.out_dim - 1.0:
            raise ScribbleSegError(f"DDML tau must lie between 1 and 4 out_dim - 1 ({4 * self.out_dim - 1}), "
                                   f"got {self.tau}")
        for name in ("weight_decay", "head_weight_decay"):
            if not getattr(self, name) >= 0:
                raise ScribbleSegError(f"DDML {name} must be >= 0, got {getattr(self, name)}")
        if min(self.steps, self.head_steps, self.warm_steps) < 0:
            raise ScribbleSegError(f"DDML steps must be >= 0, got steps={self.steps}, head_steps={self.head_steps}, "
                                   f"warm_steps={self.warm_steps}")
        if self.batch_size < 4 or self.pool_size < 4:
            raise ScribbleSegError(f"DDML batch_size and pool_size must be >= 4, got {self.batch_size}, "
                                   f"{self.pool_size}")
        if not 0.0 <= self.scribble_share <= 1.0:
            raise ScribbleSegError(f"DDML scribble_share must be in [0, 1], got {self.scribble_share}")
        for name in ("network_weight", "doubted_network_weight", "doubted_colour_weight", "bank_agreement_shift"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ScribbleSegError(f"DDML {name} must be in [0, 1], got {getattr(self, name)}")
        if self.bank_doubt is not None and not (isinstance(self.bank_doubt, (int, float, np.floating, np.integer))
                                                and 0.0 <= self.bank_doubt <= 1.0):
            raise ScribbleSegError(f"DDML bank_doubt must be in [0, 1] or None, got {self.bank_doubt!r}")
        full = self.bank_doubt_full
        if isinstance(full, bool) or not isinstance(full, (int, float, np.floating, np.integer)) or not (
                (self.bank_doubt or 0.0) <= full <= 1.0):
            raise ScribbleSegError(f"DDML bank_doubt_full must lie between bank_doubt ({self.bank_doubt}) and 1, got "
                                   f"{full!r}")
        for name in ("bank_agreement", "doubted_network_share"):
            limits = getattr(self, name)
            if limits is None:
                continue
            if isinstance(limits, (str, bytes)) or not hasattr(limits, "__len__") or len(limits) != 2 or any(
                    isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) for v in limits) \
                    or not 0.0 <= limits[0] <= limits[1] <= 1.0:
                raise ScribbleSegError(f"DDML {name} must be two numbers 0 <= low <= high <= 1, or None, got "
                                       f"{limits!r}")
            object.__setattr__(self, name, (float(limits[0]), float(limits[1])))
        if self.head_bias not in choices.HEAD_BIASES:
            raise ScribbleSegError(f"DDML head_bias must be one of {', '.join(choices.HEAD_BIASES)}, "
                                   f"got {self.head_bias!r}")
        if self.evaluation not in choices.H_EVALUATIONS:
            raise ScribbleSegError(f"DDML evaluation must be one of {', '.join(choices.H_EVALUATIONS)}, "
                                   f"got {self.evaluation!r}")


class DDMLNet(nn.Module):
    """The DDML network ``f``: input standardisation, then tanh layers (paper Fig. 4).

    Each layer computes ``h_m = tanh(W_m h_{m-1} + b_m)``.  Before the first
    layer the features are standardised with the per-channel mean and standard
    deviation of the training pixels (fixed buffers, not trained): M-Unet
    features after ELU have no fixed scale, and tanh layers saturate on large
    inputs.  Weights start from torch's default ``nn.Linear`` initialisation.

    Attributes
    ----------
    loss_history : list of float
        The DDML loss of every :data:`LOSS_EVERY`-th training step and of the last
        (filled by :func:`train_ddml`).

    Examples
    --------
    >>> f = DDMLNet(6, (8, 8), 4)
    >>> z = f(100 * torch.ones(3, 6))
    >>> f.in_dim, f.out_dim, tuple(z.shape), bool(z.abs().max() <= 1)  # tanh keeps the embedding in [-1, 1]
    (6, 4, (3, 4), True)
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        dims = [int(in_dim), *hidden, int(out_dim)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("inv_std", torch.ones(in_dim))
        self.loss_history: List[float] = []

    @property
    def in_dim(self) -> int:
        """Number of input feature channels."""
        return self.layers[0].in_features

    @property
    def out_dim(self) -> int:
        """Width of the embedding."""
        return self.layers[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - self.mean) * self.inv_std
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return h


class Head(nn.Module):
    """The discriminating 1x1 layer: ``h = sigmoid(w . f(x) + b)``.

    A single logistic output is the two-class softmax written with one logit
    (softmax over ``(0, w . z + b)``), so ``h`` is the heart probability.

    Attributes
    ----------
    loss_history : list of float
        The head's training loss per step (filled by :func:`train_head`).

    Examples
    --------
    >>> head = Head(4)
    >>> z = torch.zeros(5, 4)
    >>> tuple(head.logit(z).shape), bool(torch.allclose(head(z), torch.sigmoid(head.logit(z))))
    ((5,), True)
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(int(in_dim), 1)
        self.loss_history: List[float] = []

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        """The logit ``w . z + b``, shape ``(N,)``."""
        return self.linear(z).squeeze(-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(z))


class AdaptMemory:
    """What a run's adaptation leaves for the next run of a warm session: its DDML network ``f``.

    A warm :class:`ScribbleSegLib.session.Session` keeps one.  :func:`adapt` with it starts ``f``
    from the last run's ``f`` and trains ``DDMLConfig.warm_steps`` steps on the new pool instead of
    ``steps`` from random weights (when ``warm_steps`` is positive and the last ``f`` has the layers
    the config asks for), then keeps the new ``f``.  The head is trained from scratch on every run;
    :func:`ScribbleSegLib.pipeline.adapt_and_cut` gives it to the adaptation with the model's bank only.

    Examples
    --------
    >>> AdaptMemory().f is None
    True
    """

    def __init__(self) -> None:
        self.f: Optional[DDMLNet] = None

    def start(self, in_dim: int, config: "DDMLConfig") -> Optional["DDMLNet"]:
        """The ``f`` to start from for pixels of ``in_dim`` channels and ``config``, or None.

        Examples
        --------
        >>> memory = AdaptMemory()
        >>> memory.f = DDMLNet(6, (64, 64), 32)
        >>> memory.start(6, DDMLConfig()) is memory.f
        True
        >>> memory.start(5, DDMLConfig()), memory.start(6, DDMLConfig.paper())  # other channels; warm_steps 0
        (None, None)
        """
        f = self.f
        if f is None or config.warm_steps <= 0 or f.in_dim != in_dim or f.out_dim != config.out_dim:
            return None
        return f if tuple(layer.out_features for layer in f.layers[:-1]) == config.hidden else None

    def clear(self) -> None:
        """Forget the last ``f``: the next run trains from scratch.

        Examples
        --------
        >>> memory = AdaptMemory()
        >>> memory.f = DDMLNet(6, (64, 64), 32)
        >>> memory.clear()
        >>> memory.f is None, memory.start(6, DDMLConfig())
        (True, None)
        """
        self.f = None

    @contextlib.contextmanager
    def kept_if_done(self) -> Iterator[None]:
        """A run inside keeps its ``f`` only if it finishes: cancelled or failed after :func:`adapt` (in ``h`` or
        the cut), it leaves the ``f`` it found, so the next run starts as if it had never begun.

        Examples
        --------
        >>> memory = AdaptMemory()
        >>> try:
        ...     with memory.kept_if_done():
        ...         memory.f = "an f whose result nobody saw"
        ...         raise KeyboardInterrupt
        ... except KeyboardInterrupt:
        ...     pass
        >>> memory.f is None
        True
        """
        before = self.f
        try:
            yield
        except BaseException:
            self.f = before
            raise


@dataclass
class AdaptResult:
    """What :func:`adapt` returns.

    Attributes
    ----------
    h : numpy.ndarray
        float32 ``(Z, Y, X)`` in [0, 1]: the heart probability, the graph cut's data term.
    f : DDMLNet
        The trained DDML network (eval mode).
    head : Head
        The trained head (eval mode).
    losses : numpy.ndarray
        float32, the DDML loss of every :data:`LOSS_EVERY`-th training step and of the last.
    head_losses : numpy.ndarray
        float32, the head's loss of every training step.
    timings : dict
        Seconds per step: ``training pixels``, ``DDML training``, ``head training``, ``probability``.
    head_shift : float
        What :func:`network_rate_shift` added to the head's bias (``DDMLConfig.head_bias``); 0 when
        the head was left as trained.

    Examples
    --------
    >>> features = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype(np.float16)
    >>> scribbles = np.zeros((1, 8, 8), np.uint8); scribbles[0, 2, :3] = 1; scribbles[0, 6, :3] = 2
    >>> config = DDMLConfig(hidden=(8,), out_dim=4, steps=10, batch_size=8, head_steps=5)
    >>> result = adapt(features, scribbles, None, None, config=config)
    >>> result.h.shape, result.f.out_dim, len(result.losses), len(result.head_losses), sorted(result.timings)
    ((1, 8, 8), 4, 2, 5, ['DDML training', 'head training', 'probability', 'training pixels'])
    """

    h: np.ndarray
    f: DDMLNet
    head: Head
    losses: np.ndarray
    head_losses: np.ndarray
    timings: Dict[str, float] = field(default_factory=dict)
    head_shift: float = 0.0


# ---------------------------------------------------------------------------
# Training pixels


def _check_bank(bank_features, bank_labels, channels: int):
    """Return the bank as ``(features (N, C), labels uint8 (N,))``; empty if there is none."""
    if bank_features is None or bank_labels is None or len(bank_features) == 0:
        return np.zeros((0, channels), np.float32), np.zeros(0, np.uint8)
    bank_features = np.asarray(bank_features)
    bank_labels = np.asarray(bank_labels).reshape(-1)
    if bank_features.ndim != 2:
        raise ScribbleSegError(f"the model's training-pixel bank must be (N, C) features, got shape "
                               f"{bank_features.shape}")
    if bank_features.shape[1] != channels:
        raise ScribbleSegError(f"the volume's features have {channels} channels but the model's training-pixel "
                               f"bank has {bank_features.shape[1]}; were the features computed with this model?")
    if len(bank_labels) != len(bank_features):
        raise ScribbleSegError(f"the model's training-pixel bank has {len(bank_features)} features but "
                               f"{len(bank_labels)} labels")
    if len(bank_labels) and not np.isin(np.unique(bank_labels), (0, 1)).all():
        raise ScribbleSegError("the model's training-pixel bank labels must be 0 (background) or 1 (heart)")
    return bank_features, bank_labels.astype(np.uint8)


def _scribble_indices(scribbles: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Flat voxel indices of heart and background scribbles, with input checks."""
    flat = scribbles.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() > _BACKGROUND):
        raise ScribbleSegError("scribbles must be 0 (none), 1 (heart) or 2 (background); found other values")
    heart = np.flatnonzero(flat == _HEART)
    background = np.flatnonzero(flat == _BACKGROUND)
    if heart.size == 0 and background.size == 0:
        raise ScribbleSegError("no scribbles: draw heart (1) and background (2) scribbles first")
    if heart.size == 0:
        raise ScribbleSegError("the scribbles have no heart (1) voxels; draw heart scribbles too")
    if background.size == 0:
        raise ScribbleSegError("the scribbles have no background (2) voxels; draw background scribbles too")
    return heart, background


def _draw(rng: np.random.Generator, candidates: np.ndarray, k: int) -> np.ndarray:
    """``k`` of ``candidates``: without replacement when there are enough, sorted for memory locality."""
    if k <= 0:
        return candidates[:0]
    replace = k > candidates.size
    return np.sort(rng.choice(candidates, size=k, replace=replace))


def sample_pixels(features: np.ndarray, scribbles: np.ndarray, bank_features: Optional[np.ndarray],
                  bank_labels: Optional[np.ndarray], n: int, seed: int = 0,
                  scribble_share: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a class-balanced pool of training pixels from the scribbles and the bank.

    Half of the ``n`` pixels are heart, half background.  Of each class,
    ``scribble_share`` comes from this volume's scribbled voxels and the rest
    from the bank's pixels of that class (all from the scribbles if the bank has
    none of that class).  Draws are without replacement while there are enough
    pixels, with replacement otherwise.

    Parameters
    ----------
    features : numpy.ndarray
        ``(Z, Y, X, C)`` M-Unet features (float16 or float32; a memmap is fine:
        only the drawn voxels are read).
    scribbles : numpy.ndarray
        ``(Z, Y, X)`` uint8: 0 none, 1 heart, 2 background.
    bank_features : numpy.ndarray or None
        ``(N, C)`` features of training pixels from the model file.
    bank_labels : numpy.ndarray or None
        ``(N,)`` their labels, 1 heart, 0 background.
    n : int
        Pool size.
    seed : int
    scribble_share : float, optional
        In [0, 1]; default ``DDMLConfig().scribble_share`` (one source for the default).

    Returns
    -------
    x : numpy.ndarray
        float32 ``(n, C)``.
    y : numpy.ndarray
        uint8 ``(n,)``: 1 heart, 0 background.
    source : numpy.ndarray
        uint8 ``(n,)``: :data:`SOURCE_SCRIBBLE` or :data:`SOURCE_BANK`.

    Raises
    ------
    ScribbleSegError
        No scribbles, scribbles of one class only, values other than 0/1/2,
        shapes that do not match, or a bank whose feature size differs from the
        volume's.
    DamagedFeatures
        The features of a drawn scribbled voxel are not numbers (a damaged cache entry).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> features = rng.normal(size=(1, 6, 6, 4)).astype(np.float16)
    >>> scribbles = np.zeros((1, 6, 6), np.uint8); scribbles[0, 1, :3] = 1; scribbles[0, 4, :3] = 2
    >>> bank_x, bank_y = rng.normal(size=(10, 4)).astype(np.float32), np.arange(10) % 2
    >>> x, y, source = sample_pixels(features, scribbles, bank_x, bank_y, n=8, scribble_share=0.5)
    >>> x.shape, y.tolist(), (source == SOURCE_SCRIBBLE).tolist()
    ((8, 4), [1, 1, 1, 1, 0, 0, 0, 0], [True, True, False, False, True, True, False, False])
    """
    if scribble_share is None:
        scribble_share = DDMLConfig().scribble_share
    if features.ndim != 4:
        raise ScribbleSegError(f"features must be (Z, Y, X, C), got shape {features.shape}")
    if tuple(scribbles.shape) != tuple(features.shape[:3]):
        raise ScribbleSegError(f"scribbles have shape {tuple(scribbles.shape)}, the features "
                               f"{tuple(features.shape[:3])}")
    channels = features.shape[3]
    bank_x, bank_y = _check_bank(bank_features, bank_labels, channels)
    heart, background = _scribble_indices(scribbles)
    rng = np.random.default_rng(seed)

    xs, ys, sources = [], [], []
    for label, voxels, k in ((1, heart, (n + 1) // 2), (0, background, n // 2)):
        in_bank = np.flatnonzero(bank_y == label)
        k_scribble = k if in_bank.size == 0 else int(round(k * scribble_share))
        picked = _draw(rng, voxels, k_scribble)
        drawn = FeatureReader(features).voxels(picked)
        if not math.isfinite(float(drawn.sum(dtype=np.float64))):  # training on them would only diverge
            raise DamagedFeatures(f"{feature_cache.features_origin(features)} hold values that are not numbers at "
                                  "scribbled voxels")
        xs.append(drawn)
        sources.append(np.full(picked.size, SOURCE_SCRIBBLE, np.uint8))
        picked_bank = _draw(rng, in_bank, k - k_scribble)
        xs.append(np.asarray(bank_x[picked_bank], dtype=np.float32))
        sources.append(np.full(picked_bank.size, SOURCE_BANK, np.uint8))
        ys.append(np.full(k, label, np.uint8))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(sources)


# ---------------------------------------------------------------------------
# DDML training (the loss and its gradient: :mod:`ScribbleSegLib.ddml_loss`)


def _tensors(x: np.ndarray, y: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise ScribbleSegError(f"training pixels must be (N, C) features with N labels, got {x.shape} and {y.shape}")
    if not (np.any(y == 1) and np.any(y == 0)):
        raise ScribbleSegError("training pixels must include both heart (1) and background (0)")
    if not np.isin(np.unique(y), (0, 1)).all():
        raise ScribbleSegError("training pixel labels must be 0 (background) or 1 (heart)")
    return torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(y.astype(np.int64))


def _seeded(seed: int, build):
    """Call ``build()`` with torch's global RNG seeded, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class _Adam:
    """Adam with L2 weight decay (Kingma & Ba), the update of ``torch.optim.Adam``'s single-tensor path.

    Why not ``torch.optim.Adam``: its constructor imports ``torch._dynamo`` (with sympy, about 800
    modules), which costs 1-2 s on the first re-run of every process -- as much as the training itself.
    The parameters become views of one flat tensor, so that a step is a few operations on it
    rather than a few per parameter: with the small networks here each operation costs more to
    dispatch than to compute.  The caller writes the gradient into :attr:`grads` (views of one
    flat gradient, shaped like the parameters) before each :meth:`step`.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
            start = 0
            for p in self.params:
                p.data = self.flat[start:start + p.numel()].view_as(p)
                start += p.numel()
        self.m, self.v, self.grad = (torch.zeros_like(self.flat) for _ in range(3))
        self.grads = [g.view_as(p) for g, p in zip(torch.split(self.grad, [p.numel() for p in self.params]),
                                                   self.params)]
        self.steps = 0
        # The step count on a GPU, for _step_counted.
        self.count = torch.zeros((), dtype=torch.float64, device=self.flat.device) if self.flat.is_cuda else None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step on what the caller wrote into :attr:`grads`."""
        if self.flat.is_cuda:
            self._step_counted()
            return
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1 ** self.steps)
        correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        grad = self.grad
        if self.weight_decay != 0:
            grad.add_(self.flat, alpha=self.weight_decay)
        self.m.lerp_(grad, 1 - beta1)
        self.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.flat.addcdiv_(self.m, (self.v.sqrt() / correction2_sqrt).add_(self.eps), value=-step_size)

    def _step_counted(self) -> None:
        """:meth:`step` with the step count in a tensor on the parameters' device: a step replayed from a
        CUDA graph (:func:`ScribbleSegLib.gpu_adaptation.replay`) cannot take a new Python number."""
        self.count += 1
        beta1, beta2 = self.betas
        grad = self.grad
        if self.weight_decay != 0:
            grad.add_(self.flat, alpha=self.weight_decay)
        self.m.lerp_(grad, 1 - beta1)
        self.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = torch.pow(beta1, self.count).sub_(1.0).reciprocal_().mul_(self.lr)  # -lr / (1 - beta1^t)
        denominator = self.v.sqrt().div_(torch.pow(beta2, self.count).neg_().add_(1.0).sqrt_()).add_(self.eps)
        self.flat.addcdiv_(self.m * step_size, denominator)


#: :func:`train_ddml` keeps the loss of every LOSS_EVERY-th step (and of the last): computing the value
#: is a quarter of a step's time, and the gradient does not need it (BENCHMARKS.md, "Interactive speed").
LOSS_EVERY = 10


def _ddml_step(f: DDMLNet, grads: List[torch.Tensor], x: torch.Tensor, terms: _PairTerms, beta: float,
               value: bool) -> Optional[torch.Tensor]:
    """Write the pair loss's gradient for the parameters of ``f`` into ``grads`` (weight, bias per layer).

    ``x`` is a background-first minibatch, already standardised.  The backward pass of the tanh
    layers is written out rather than left to autograd: with a few hundred pixels and layers of
    64, a DDML step is mostly the cost of dispatching operations, and autograd's bookkeeping
    (graph nodes, gradient accumulation) took about a fifth of a step (BENCHMARKS.md, "Interactive
    speed" item 13).  Returns the loss value with ``value``, else None.
    """
    acts = [x]
    for layer in f.layers:
        # tanh(u) = 2 sigmoid(2u) - 1: torch's tanh takes several times its sigmoid's time on a CPU.
        u2 = torch.addmm(layer.bias, acts[-1], layer.weight.T, beta=2.0, alpha=2.0)
        acts.append(torch.sigmoid_(u2).mul_(2.0).sub_(1.0))
    z = acts[-1]
    blocks = _pair_blocks(z, terms, beta)
    loss = _pair_value(blocks, terms, beta) if value else None
    g = _pair_gradient(z, blocks, terms, 1.0)
    for k in range(len(f.layers) - 1, -1, -1):
        g.mul_(1.0 - acts[k + 1] * acts[k + 1])  # through tanh: 1 - tanh^2
        torch.mm(g.T, acts[k], out=grads[2 * k])
        torch.sum(g, dim=0, out=grads[2 * k + 1])
        if k:
            g = g @ f.layers[k].weight
    return loss


def train_ddml(x: np.ndarray, y: np.ndarray, config: Optional[DDMLConfig] = None, seed: int = 0,
               progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
               device=None, init: Optional[DDMLNet] = None, steps: Optional[int] = None) -> DDMLNet:
    """Train the DDML network ``f`` on labelled pixels (paper eq. 1-3).

    Each of ``config.steps`` Adam steps draws a minibatch of
    ``config.batch_size`` pixels, half of each class, and minimises
    :func:`~ScribbleSegLib.ddml_loss.ddml_loss` over all its pairs plus eq. 3 (Adam ``weight_decay``).

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, C)`` features.
    y : numpy.ndarray
        ``(N,)`` labels, 1 heart and 0 background; both must occur.
    config : DDMLConfig, optional
    seed : int
        Seeds the initial weights and the minibatches; training runs on one
        torch thread, so the result is deterministic on the CPU.
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.
    device : torch.device or str, optional
        Where to train (default the CPU).  On a GPU the steps are replayed as a CUDA graph
        (:func:`ScribbleSegLib.gpu_adaptation.replay`); the initial weights and the minibatches
        are the CPU's, and the network is returned on ``device``.
    init : DDMLNet, optional
        Start from this network's weights and input standardisation (a warm session's last ``f``,
        :class:`AdaptMemory`) instead of random ones; it is not changed.
    steps : int, optional
        Adam steps instead of ``config.steps``.

    Returns
    -------
    DDMLNet
        In eval mode, with ``loss_history`` filled.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    >>> f = train_ddml(x, np.arange(64) % 2, DDMLConfig(hidden=(8,), out_dim=4, steps=12, batch_size=8))
    >>> len(f.loss_history)  # steps 0 and 10, and the last
    3
    """
    config = config or DDMLConfig()
    device = torch.device(device or "cpu")
    gpu = is_gpu(device)
    xt, yt = _tensors(x, y)
    f = _seeded(seed, lambda: DDMLNet(xt.shape[1], config.hidden, config.out_dim))
    with torch.no_grad():
        if init is not None:
            f.load_state_dict(init.state_dict())
        else:
            f.mean.copy_(xt.mean(dim=0))
            f.inv_std.copy_(1.0 / xt.std(dim=0).clamp_min(1e-3))
        standardised = ((xt - f.mean) * f.inv_std).to(device)  # what f's forward does first, once for the pool
    f.to(device)
    optimizer = _Adam(f.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(int(seed))  # a numpy integer seed too: it takes only int
    by_class = [torch.nonzero(yt == c).reshape(-1) for c in (0, 1)]
    half = config.batch_size // 2
    # Every batch is [half background, half heart], so the pair terms are fixed.
    pair_terms = _pair_terms(torch.arange(2 * half) >= half, config.tau)
    steps = config.steps if steps is None else int(steps)

    def draw() -> torch.Tensor:
        return torch.cat([idx[torch.randint(len(idx), (half,), generator=generator)] for idx in by_class])

    counter = torch.zeros(1, dtype=torch.long, device=device)
    losses = torch.zeros(max(steps, 1), device=device)
    done = [0]

    def step() -> None:
        # The loss value is kept every LOSS_EVERY-th step only on a CPU: the gradient does not need it.
        record = gpu or done[0] % LOSS_EVERY == 0 or done[0] == steps - 1
        batch = batches.index_select(0, counter).reshape(-1) if gpu else draw()
        # index_select, not standardised[batch]: the same rows, five times faster than advanced indexing.
        loss = _ddml_step(f, optimizer.grads, torch.index_select(standardised, 0, batch), pair_terms,
                          config.beta, record)
        optimizer.step()
        if record:
            losses.index_copy_(0, counter, loss.reshape(1))
        counter.add_(1)
        done[0] += 1

    report_every = max(1, steps // 50)

    def between(i: int) -> None:
        if progress is not None and (i % report_every == 0 or i == steps - 1):
            shown = i if i == steps - 1 else i - i % LOSS_EVERY  # the last step whose loss was kept
            report(progress, "metric learning", (i + 1) / steps, f"loss {float(losses[shown]):.4f}")

    # Steps on a few hundred pixels: one intra-op thread is 2x slower than two on
    # an idle 2-core machine but 10x faster when another process is busy.
    with torch_threads(1), torch.no_grad():
        # A GPU's steps cannot draw (a replayed graph holds no Python): its batches are drawn up front, the same.
        batches = torch.stack([draw() for _ in range(steps)]).to(device) if gpu and steps else None
        replay(step, steps, device, cancel, between)
    kept = losses.cpu().tolist()
    f.loss_history.extend(kept[i] for i in range(steps) if i % LOSS_EVERY == 0 or i == steps - 1)
    f.eval()
    f.requires_grad_(False)
    return f


def train_head(f: DDMLNet, x: np.ndarray, y: np.ndarray, config: Optional[DDMLConfig] = None, seed: int = 0,
               progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Head:
    """Fine-tune the 1x1 head on ``f(x)`` with ``f`` frozen (paper Fig. 3, step 4).

    Logistic regression on the embeddings, trained full-batch with Adam on the
    class-balanced cross-entropy (each class weighs 1/2 whatever its count).

    Parameters
    ----------
    f : DDMLNet
        The trained DDML network; it is not changed.  The head is trained, and returned, on its
        device (on a GPU with its steps replayed as a CUDA graph).
    x, y, config, seed, progress, cancel
        As for :func:`train_ddml`.

    Returns
    -------
    Head
        In eval mode, with ``loss_history`` filled.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    >>> config = DDMLConfig(hidden=(8,), out_dim=4, steps=4, batch_size=8, head_steps=5)
    >>> head = train_head(train_ddml(x, np.arange(64) % 2, config), x, np.arange(64) % 2, config)
    >>> len(head.loss_history)
    5
    """
    config = config or DDMLConfig()
    xt, yt = _tensors(x, y)
    if xt.shape[1] != f.in_dim:
        raise ScribbleSegError(f"training pixels have {xt.shape[1]} channels, the DDML network expects {f.in_dim}")
    device = f.mean.device
    xt, yt = xt.to(device), yt.to(device)
    with torch.no_grad(), torch_threads(1):
        z = f(xt)
    head = _seeded(seed, lambda: Head(f.out_dim)).to(device)
    target = yt.to(torch.float32)
    counts = torch.bincount(yt, minlength=2).to(torch.float32)
    sample_weight = (0.5 / counts)[yt]
    optimizer = _Adam(head.parameters(), lr=config.head_lr, weight_decay=config.head_weight_decay)
    weight, bias = optimizer.grads  # the gradient of the loss, written out: sum_i weight_i (h_i - target_i) z_i
    steps = config.head_steps
    counter = torch.zeros(1, dtype=torch.long, device=device)
    losses = torch.zeros(max(steps, 1), device=device)

    def step() -> None:
        logit = head.logit(z)
        loss = F.binary_cross_entropy_with_logits(logit, target, weight=sample_weight, reduction="sum")
        g = torch.sigmoid_(logit).sub_(target).mul_(sample_weight)
        torch.mm(g[None, :], z, out=weight)
        torch.sum(g, dim=0, keepdim=True, out=bias)
        optimizer.step()
        losses.index_copy_(0, counter, loss.reshape(1))
        counter.add_(1)

    report_every = max(1, steps // 20)

    def between(i: int) -> None:
        if progress is not None and (i % report_every == 0 or i == steps - 1):
            report(progress, "head", (i + 1) / steps, f"loss {float(losses[i]):.4f}")

    with torch_threads(1), torch.no_grad():
        replay(step, steps, device, cancel, between)
    head.loss_history.extend(losses.cpu().tolist()[:steps])
    head.eval()
    head.requires_grad_(False)
    return head


#: The largest move of the head's bias by :func:`network_rate_shift`, in logits: the bench's hearts and nuclei
#: needed 1-2.2 (BENCHMARKS.md, "The head's threshold set by the network's own odds"); a network that calls
#: nearly all or none of its balanced bank heart is broken, and its lean is not followed further than this.
MAX_HEAD_SHIFT = 4.0
#: At most this many bank pixels (every k-th, so each of the bank's parts in proportion) measure the head's
#: odds: the whole bank of 40 000 costs 0.06-0.16 s per run on a 2-core CPU, a fifth of it 0.01-0.02 s, and
#: the shift it gives differs by about 0.01 logits (BENCHMARKS.md, "The head's threshold set by the network's
#: own odds").
SHIFT_PIXELS = 8192


def network_rate_shift(f: DDMLNet, head: Head, bank_features: np.ndarray, bank_network_logit: np.ndarray) -> float:
    """The shift of the head's bias after which it calls as many bank pixels heart as the network does.

    The head is trained on a class-balanced pool, so it weighs a missed heart pixel like a false one: the
    odds of a stack that is half heart, where most stacks are mostly background.  The network learnt the
    real odds from whole patches.  Both are measured on the same pixels, the model's training pixels,
    whose labels hold for the network's target, so the shift is a property of the model and the head,
    not an estimate from this stack.

    Parameters
    ----------
    f, head : DDMLNet, Head
        Trained; not changed.
    bank_features : numpy.ndarray
        ``(N, C)`` the bank's features; every k-th of them, at most :data:`SHIFT_PIXELS`, is used.
    bank_network_logit : numpy.ndarray
        ``(N,)`` the network's own heart logit of the same pixels
        (:func:`ScribbleSegLib.model_file.bank_network_logit`).

    Returns
    -------
    float
        Add it to the head's bias; within ``±MAX_HEAD_SHIFT``, 0 if the network calls all or none of the
        bank heart.

    Examples
    --------
    >>> import numpy as np
    >>> f, head = DDMLNet(2, (4,), 2), Head(2)
    >>> x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    >>> shift = network_rate_shift(f, head, x, np.full(100, -5.0))  # the network calls none heart
    >>> shift
    0.0
    """
    logit = np.asarray(bank_network_logit, np.float32).reshape(-1)
    if len(logit) != len(bank_features):
        raise ScribbleSegError(f"bank_network_logit has {len(logit)} values, the bank {len(bank_features)} pixels")
    step = max(1, -(-len(logit) // SHIFT_PIXELS))
    logit = logit[::step]
    rate = float(np.mean(logit > 0)) if len(logit) else 0.0
    if not 0.0 < rate < 1.0:
        return 0.0
    with torch.no_grad(), torch_threads(1):
        own = head.logit(f(torch.from_numpy(np.asarray(bank_features[::step], np.float32)))).numpy()
    # The head's logit that as many bank pixels exceed as the network calls heart becomes 0.
    shift = -float(np.quantile(own, 1.0 - rate))
    return float(np.clip(shift, -MAX_HEAD_SHIFT, MAX_HEAD_SHIFT))


def _check_trained(net: nn.Module, name: str, settings: str) -> None:
    """Refuse weights that training drove to infinity or NaN (a step size far too large): the cut would
    otherwise report the NaN in ``h`` as its own problem."""
    if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        raise ScribbleSegError(f"the adaptation diverged: {name} has weights that are not finite numbers; "
                               f"use smaller DDML {settings}")


def adapt(features: np.ndarray, scribbles: np.ndarray, bank_features: Optional[np.ndarray],
          bank_labels: Optional[np.ndarray], config: Optional[DDMLConfig] = None, seed: int = 0,
          network_probability: Optional[np.ndarray] = None, bank_network_logit: Optional[np.ndarray] = None,
          progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None, device=None,
          resident: Optional[Resident] = None, memory: Optional[AdaptMemory] = None) -> AdaptResult:
    """Adapt to this volume's scribbles: DDML, head, and ``h`` for every voxel.

    Draws a pool of training pixels (:func:`sample_pixels`), trains ``f``
    (:func:`train_ddml`), then the head (:func:`train_head`), then evaluates
    ``h`` on the whole volume (:func:`predict_h`).

    Parameters
    ----------
    features : numpy.ndarray
        ``(Z, Y, X, C)`` M-Unet features (float16; a memmap is fine).
    scribbles : numpy.ndarray
        ``(Z, Y, X)`` uint8: 0 none, 1 heart, 2 background; both classes needed.
    bank_features, bank_labels : numpy.ndarray or None
        The model file's training-pixel bank: ``(N, C)`` features and ``(N,)``
        labels (1 heart, 0 background).  ``None`` uses the scribbles alone.
    config : DDMLConfig, optional
    seed : int
    network_probability : numpy.ndarray, optional
        ``(Z, Y, X)`` the network's own probability, blended into ``h`` with
        ``config.network_weight`` (:func:`pipeline.segment` always passes it;
        without it ``h`` is DDML + head alone).
    bank_network_logit : numpy.ndarray, optional
        ``(N,)`` the network's own heart logit of each bank pixel
        (:func:`ScribbleSegLib.model_file.bank_network_logit`), for ``config.head_bias``
        ``"network"``; without it, or when the pool holds no bank pixels, the head stays as trained.
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.
    device : torch.device or str, optional
        Where ``f`` and the head are trained (default the CPU; see :func:`train_ddml`).  They are
        returned on the CPU.
    resident : gpu_adaptation.Resident, optional
        ``features`` and ``network_probability`` already on a GPU
        (:func:`ScribbleSegLib.gpu_adaptation.upload`): ``h`` is then computed there, exactly at
        every voxel, whatever ``config.evaluation``.
    memory : AdaptMemory, optional
        A warm session's: ``f`` starts from its last ``f`` (``config.warm_steps``), and the new ``f``
        is kept there.

    Returns
    -------
    AdaptResult

    Raises
    ------
    ScribbleSegError
        See :func:`sample_pixels`.

    Examples
    --------
    Features whose right half differs, one stroke of each class, a small ``f``:

    >>> rng = np.random.default_rng(0)
    >>> features = rng.normal(size=(2, 16, 16, 4)).astype(np.float16); features[:, :, 8:] += 2
    >>> scribbles = np.zeros((2, 16, 16), np.uint8); scribbles[0, 4, 10:14] = 1; scribbles[0, 4, 2:6] = 2
    >>> config = DDMLConfig(hidden=(8,), out_dim=4, steps=20, batch_size=16, head_steps=20)
    >>> result = adapt(features, scribbles, None, None, config=config)
    >>> result.h.shape, result.h.dtype, bool(result.h[:, :, 8:].mean() > result.h[:, :, :8].mean())
    ((2, 16, 16), dtype('float32'), True)
    """
    from .checks import check_array, check_instance, check_progress_cancel, check_seed

    features = check_array(features, "features", ndim=4, kinds="f")
    scribbles = check_array(scribbles, "scribbles", ndim=3, kinds="ui", shape=features.shape[:3])
    if network_probability is not None:  # its shape is checked where it is blended in, with its own words
        check_array(network_probability, "network_probability", ndim=3, kinds="f")
    check_instance(config, "config", DDMLConfig)
    check_seed(seed)
    check_progress_cancel(progress, cancel)
    config = config or DDMLConfig()
    t0 = time.perf_counter()
    report(progress, "metric learning", 0.0, "drawing training pixels")
    x, y, _ = sample_pixels(features, scribbles, bank_features, bank_labels, config.pool_size, seed=seed,
                            scribble_share=config.scribble_share)
    timings = {"training pixels": time.perf_counter() - t0}
    t0 = time.perf_counter()
    init = None if memory is None else memory.start(x.shape[1], config)
    f = train_ddml(x, y, config, seed=seed, progress=progress, cancel=cancel, device=device, init=init,
                   steps=None if init is None else config.warm_steps)
    _check_trained(f, "the DDML network f", "lr and weight_decay")
    timings["DDML training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    head = train_head(f, x, y, config, seed=seed, progress=progress, cancel=cancel)
    _check_trained(head, "the head", "head_lr and head_weight_decay")
    f, head = f.cpu(), head.cpu()
    if memory is not None:
        memory.f = f
    shift = 0.0
    if (config.head_bias == "network" and bank_network_logit is not None and bank_features is not None
            and len(bank_features) and config.scribble_share < 1.0):
        shift = network_rate_shift(f, head, bank_features, bank_network_logit)
        with torch.no_grad():
            head.linear.bias += shift
    timings["head training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    h = None
    if resident is not None:
        if tuple(resident.features.shape) != features.shape:
            raise ScribbleSegError(f"resident features have shape {tuple(resident.features.shape)}, the volume's "
                                   f"{features.shape}")
        check(cancel)
        try:
            h = evaluate_h(resident, fused_layers(f, head), config.network_weight if network_probability is not None
                           else 0.0)
            report(progress, "probability", 1.0, "on the GPU")
        except torch.cuda.OutOfMemoryError:  # the GPU's memory went to another process: h on the CPU, as without
            resident = None
            _log.warning("h: the GPU ran out of memory; computing it on the CPU")
    if h is None:
        # The network's probability guides where a coarse evaluation looks closer, blended in or not.
        h = predict_h(features, f, head, progress=progress, cancel=cancel, evaluation=config.evaluation,
                      scribbles=scribbles, network_probability=network_probability)
    if resident is None and network_probability is not None:
        blend_network(h, network_probability, config.network_weight)
    timings["probability"] = time.perf_counter() - t0
    return AdaptResult(h, f, head, np.asarray(f.loss_history, np.float32),
                       np.asarray(head.loss_history, np.float32), timings, shift)
