"""The DDML pair loss (Harada et al. 2019, eq. 1-2; Hu, Lu & Tan, CVPR 2014) and its written-out gradient.

:func:`ddml_loss` is the loss as the paper states it, class-balanced over a minibatch's pairs;
:func:`pair_weights` its weights.  :mod:`ScribbleSegLib.ddml` trains ``f`` with the private pieces
below: the pairs split into blocks of one kind each (:class:`_PairLoss`), whose gradient is
written out because on a CPU a DDML step is mostly passes over the ``B x B`` pairs.

Examples
--------
>>> import torch
>>> from ScribbleSegLib.ddml_loss import ddml_loss
>>> round(float(ddml_loss(torch.zeros(3, 2), torch.tensor([1, 1, 0]), tau=2.0, beta=2.0)), 4)
1.5324
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F


def pair_weights(y: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weights ``w_ij`` of :func:`ddml_loss`: ``(B, B)`` of ``dtype``, zero on the diagonal.

    ``w_ij = 1 / n_same`` for each of the ``n_same`` ordered same-class pairs
    ``(i, j), i != j``, and ``1 / n_diff`` for each of the ``n_diff``
    different-class ones, so each kind's weights sum to 1 (0 if the batch has
    no pair of that kind).

    Examples
    --------
    >>> pair_weights(torch.tensor([1, 1, 0]))
    tensor([[0.0000, 0.5000, 0.2500],
            [0.5000, 0.0000, 0.2500],
            [0.2500, 0.2500, 0.0000]])
    """
    y = y.reshape(-1)
    same = y[:, None] == y[None, :]
    same.fill_diagonal_(False)
    diff = y[:, None] != y[None, :]
    n_same = same.sum().clamp_min(1).to(dtype)
    n_diff = diff.sum().clamp_min(1).to(dtype)
    return same.to(dtype) / n_same + diff.to(dtype) / n_diff


def ddml_loss(z: torch.Tensor, y: torch.Tensor, tau: float, beta: float) -> torch.Tensor:
    """The DDML pair loss (paper eq. 1-2) over all pairs of a minibatch, class-balanced.

    With ``d_ij^2 = ||z_i - z_j||^2`` (eq. 1), ``l_ij = +1`` for a same-class
    pair and ``-1`` otherwise, and ``g(t) = log(1 + exp(beta t)) / beta``
    (``torch.nn.functional.softplus(t, beta)``), the loss is::

        L = 1/2 sum_{i != j} w_ij g(1 - l_ij (tau - d_ij^2))
          = sum_{i < j} w_ij g(1 - l_ij (tau - d_ij^2))

    which is eq. 2 (``1/2 sum_{i,j}`` over ordered pairs; the constant ``i = j``
    terms, where ``d = 0``, are left out) with each pair weighted by ``w_ij``
    from :func:`pair_weights`: ``1 / n_same`` for the ``n_same`` ordered
    same-class pairs and ``1 / n_diff`` for the ``n_diff`` different-class ones.
    ``L`` is thus the average of the mean ``g`` over same-class pairs and the
    mean ``g`` over different-class pairs: both kinds count equally whatever the
    batch composition, and the scale does not grow with the batch.  For a batch
    of ``B = 2n`` pixels, ``n`` per class, eq. 2's plain sum is ``B^2 / 2``
    times ``L`` (up to the ``n(n - 1)`` vs ``n^2`` counts of same- and
    different-class pairs).

    Eq. 3's regulariser ``lambda/2 sum_m (||W_m||_F^2 + ||b_m||^2)`` is not in
    this function: :func:`train_ddml` applies it through Adam's ``weight_decay``
    on every parameter of ``f``, which adds ``lambda * theta`` to each gradient
    before the adaptive step -- exactly the gradient of eq. 3's term (AdamW's
    decoupled decay would not be).  So training minimises ``L + eq. 3`` with
    ``lambda = DDMLConfig.weight_decay``; relative to eq. 2's plain sum that is
    a lambda ``B^2 / 2`` times larger.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, d)`` embeddings ``f(x)``.
    y : torch.Tensor
        ``(B,)`` class labels (any integer or bool dtype).
    tau, beta : float

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    Two heart pixels close together and a background pixel far away cost little; all three together, much more:

    >>> y = torch.tensor([1, 1, 0])
    >>> apart = torch.tensor([[0.0, 0.0], [0.1, 0.0], [3.0, 0.0]])
    >>> round(float(ddml_loss(apart, y, tau=2.0, beta=2.0)), 4), round(float(ddml_loss(0 * apart, y, 2.0, 2.0)), 4)
    (0.0323, 1.5324)
    """
    return _pair_loss(z, _pair_terms(y, tau), beta)


class _PairTerms(NamedTuple):
    """What the pair loss needs about a batch's labels: everything that does not depend on ``z``.

    ``order`` puts the background pixels first (``None`` where they are already first), ``n_background``
    counts them, and ``same`` and ``diff`` are the pair weights ``1 / n_same`` and ``1 / n_diff`` of
    :func:`pair_weights`.
    """

    order: Optional[torch.Tensor]
    n_background: int
    same: float
    diff: float
    tau: float


def _pair_terms(y: torch.Tensor, tau: float) -> _PairTerms:
    """The :class:`_PairTerms` of a batch's labels ``y``."""
    heart = y.reshape(-1).to(torch.bool)
    n, n_heart = len(heart), int(heart.sum())
    n_background = n - n_heart
    order = None if not heart[:n_background].any() else torch.argsort(heart.to(torch.uint8), stable=True)
    n_same = max(n_heart * (n_heart - 1) + n_background * (n_background - 1), 1)
    n_diff = max(2 * n_heart * n_background, 1)
    return _PairTerms(order, n_background, 1.0 / n_same, 1.0 / n_diff, float(tau))


def _pair_loss(z: torch.Tensor, terms: _PairTerms, beta: float, value: bool = True) -> torch.Tensor:
    """``1/2 sum_ij w_ij g(1 - l_ij (tau - d_ij^2))``: eq. 2 as :func:`ddml_loss` writes it.

    With ``value=False`` the returned scalar is 0 and only its gradient is right: the
    softplus over all pairs, needed for the value alone, is a quarter of a training step.
    """
    if terms.order is not None:
        z = z[terms.order]
    return _PairLoss.apply(z, terms, beta, value)


def _augmented(z: torch.Tensor, beta: float, sign: float, offset: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Factors whose product is ``beta (offset + sign d_ij^2)`` for the rows of ``z`` (both sides)."""
    sq = (z * z).sum(dim=1, keepdim=True)
    one = torch.ones_like(sq)
    rows = torch.cat([z, sq, one], dim=1)
    cols = torch.cat([z * (-2.0 * sign), one * sign, sq * sign + offset], dim=1).mul_(beta)
    return rows, cols


def _pair_blocks(z: torch.Tensor, terms: _PairTerms, beta: float) -> List[torch.Tensor]:
    """``beta a`` of the pair blocks background-background, background-heart and heart-heart (see
    :class:`_PairLoss`) of background-first embeddings ``z``."""
    b, h = z[:terms.n_background], z[terms.n_background:]
    same_b, same_h = _augmented(b, beta, 1.0, 1.0 - terms.tau), _augmented(h, beta, 1.0, 1.0 - terms.tau)
    diff_h = _augmented(h, beta, -1.0, 1.0 + terms.tau)
    return [same_b[0] @ same_b[1].T, same_b[0] @ diff_h[1].T, same_h[0] @ same_h[1].T]


def _pair_value(blocks: List[torch.Tensor], terms: _PairTerms, beta: float) -> torch.Tensor:
    """The loss value from :func:`_pair_blocks` (the diagonal left out)."""
    g = [F.softplus(p) for p in blocks]
    same_sum = g[0].sum() + g[2].sum() - torch.diagonal(g[0]).sum() - torch.diagonal(g[2]).sum()
    return 0.5 / beta * (terms.same * same_sum + terms.diff * 2.0 * g[1].sum())


def _pair_gradient(z: torch.Tensor, blocks: List[torch.Tensor], terms: _PairTerms, scale: float) -> torch.Tensor:
    """``scale dL/dz`` from :func:`_pair_blocks`, whose blocks it overwrites with their sigmoid."""
    z1 = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
    b1, h1 = z1[:terms.n_background], z1[terms.n_background:]
    bb, bh, hh = (torch.sigmoid_(p) for p in blocks)
    same, diff = 0.5 * terms.same * scale, -0.5 * terms.diff * scale
    # S [z, 1] by rows: background rows, then heart rows
    s_z1 = torch.cat([torch.addmm(bh @ h1, bb, b1, beta=diff, alpha=same),
                      torch.addmm(hh @ h1, bh.T, b1, beta=same, alpha=diff)])
    return torch.addcmul(-s_z1[:, :-1], s_z1[:, -1:], z).mul_(4.0)


class _PairLoss(torch.autograd.Function):
    """The pair loss of background-first pixels, with its gradient written out, block by block.

    Why: on a CPU a DDML step is mostly passes over the ``B x B`` pairs.  With the background
    first, the pairs fall into blocks of one kind each (background-background, background-heart,
    heart-heart; the fourth is the second transposed), where ``l`` and ``w`` are constants: the
    logistic's argument ``beta a = beta (1 - l tau + l d^2)`` of a block is one product of
    ``[z_i, |z_i|^2, 1]`` with ``beta [-2 l z_j, l, l |z_j|^2 + 1 - l tau]`` (:func:`_augmented`),
    and with ``S_ij = dL/d(d_ij^2) = 1/2 w_ij l_ij g'(a_ij)`` (``g' = sigmoid(beta a)``),
    ``dL/dz = 4 (diag(S 1) z - S z)`` takes the products of each block's sigmoid with ``[z, 1]``.
    The diagonal, where the real weight is 0, adds ``S_ii (z_i - z_i) = 0`` to the gradient and is
    left out of the value.  The expanded ``d^2`` avoids cdist's square root, whose gradient is
    infinite for the identical pixels that sampling with replacement can produce; here their
    ``z_i - z_j = 0`` term is 0.
    """

    @staticmethod
    def forward(ctx, z, terms, beta, value=True):  # noqa: D102  (see the class)
        ctx.blocks = _pair_blocks(z, terms, beta)
        ctx.save_for_backward(z)
        ctx.terms = terms
        return _pair_value(ctx.blocks, terms, beta) if value else z.new_zeros(())

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (z,) = ctx.saved_tensors
        gz = _pair_gradient(z, ctx.blocks, ctx.terms, float(grad))
        del ctx.blocks
        return gz, None, None, None

