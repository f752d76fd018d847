"""Tests of ScribbleSegLib.ddml: the DDML loss (paper eq. 1-3), training, the head and adapt()."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from ScribbleSegLib import ddml, ddml_loss
from ScribbleSegLib.ddml import DDMLConfig
from ScribbleSegLib.errors import CancelledError, ScribbleSegError
from ScribbleSegLib.h_evaluation import predict_h
from ScribbleSegLib.progress import CancelToken

FAST = DDMLConfig(steps=150, batch_size=256, pool_size=4000, head_steps=100)


def _loss_double_loop(z, y, tau, beta):
    """Eq. 2 evaluated pair by pair, with the class-balanced weights of ddml_loss."""
    n = len(y)
    same_pairs = sum(1 for i in range(n) for j in range(n) if i != j and y[i] == y[j])
    diff_pairs = sum(1 for i in range(n) for j in range(n) if y[i] != y[j])
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            l_ij = 1.0 if y[i] == y[j] else -1.0
            d2 = sum((z[i][k] - z[j][k]) ** 2 for k in range(len(z[i])))
            t = 1.0 - l_ij * (tau - d2)
            g = math.log1p(math.exp(beta * t)) / beta
            w = 1.0 / same_pairs if l_ij > 0 else 1.0 / diff_pairs
            total += 0.5 * w * g
    return total


def test_loss_equals_double_loop_of_eq2():
    rng = np.random.default_rng(1)
    z = rng.normal(scale=0.7, size=(9, 4))
    y = np.array([1, 0, 0, 1, 1, 0, 1, 1, 0])
    for tau, beta in ((3.0, 2.0), (1.0, 0.5)):
        expected = _loss_double_loop(z.tolist(), y.tolist(), tau, beta)
        got = ddml_loss.ddml_loss(torch.tensor(z, dtype=torch.float64), torch.tensor(y), tau, beta)
        assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("labels", [[1, 0, 0, 1, 1, 0, 1, 0, 1, 0],  # mixed: the loss sorts them
                                    [0, 0, 0, 0, 0, 0, 1, 1, 1, 1],  # background first, as in training
                                    [1] * 10])                       # one class: no background block
def test_the_written_out_gradient_is_the_gradient_of_eq2(labels):
    """The pair loss's own backward against autograd through eq. 2 written pair by pair (float64),
    including identical pixels (d = 0) as sampling with replacement makes them."""
    rng = np.random.default_rng(4)
    z0 = rng.normal(scale=0.6, size=(10, 4))
    z0[7] = z0[2]  # a pixel drawn twice
    y = torch.tensor(labels)
    for tau, beta in ((2.0, 2.0), (0.5, 0.7)):
        z = torch.tensor(z0, requires_grad=True)
        ddml_loss.ddml_loss(z, y, tau, beta).backward()
        reference = torch.tensor(z0, requires_grad=True)
        l = (y[:, None] == y[None, :]).double() * 2 - 1
        d2 = ((reference[:, None, :] - reference[None, :, :]) ** 2).sum(-1)
        w = ddml_loss.pair_weights(y, torch.float64)
        (0.5 * (w * torch.nn.functional.softplus(1 - l * (tau - d2), beta=beta)).sum()).backward()
        torch.testing.assert_close(z.grad, reference.grad, rtol=1e-10, atol=1e-12)
        assert z.grad.abs().max() > 1e-3

def test_the_written_out_training_step_is_autograds_gradient():
    """train_ddml's step (tanh layers' backward written out, parameters views of Adam's flat tensor)
    against autograd through f and ddml_loss, in float64."""
    rng = np.random.default_rng(5)
    torch.manual_seed(0)
    f = ddml.DDMLNet(6, (5, 4), 3).double()
    f.mean.copy_(torch.tensor(rng.normal(size=6)))
    f.inv_std.copy_(torch.tensor(rng.uniform(0.5, 2.0, size=6)))
    x = torch.tensor(rng.normal(size=(12, 6)))
    y = torch.tensor([0] * 5 + [1] * 7)  # background first, as train_ddml's batches
    ddml_loss.ddml_loss(f(x), y, 2.0, 2.0).backward()
    expected = [p.grad.clone() for p in f.parameters()]
    optimizer = ddml._Adam(f.parameters(), lr=0.01)
    with torch.no_grad():
        value = ddml._ddml_step(f, optimizer.grads, (x - f.mean) * f.inv_std, ddml_loss._pair_terms(y, 2.0), 2.0, True)
        reference = ddml_loss.ddml_loss(f(x), y, 2.0, 2.0)
    assert float(value) == pytest.approx(float(reference), rel=1e-12)
    assert len(optimizer.grads) == len(expected) == 6
    for got, want in zip(optimizer.grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert max(float(g.abs().max()) for g in expected) > 1e-3


def test_the_head_trains_as_autograd_and_torch_adam_would():
    """train_head's written-out gradient and flat Adam against autograd and torch.optim.Adam."""
    rng = np.random.default_rng(6)
    torch.manual_seed(0)
    f = ddml.DDMLNet(5, (6,), 4)
    f.requires_grad_(False)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0.5).astype(np.uint8)  # unbalanced: the class weights matter
    config = DDMLConfig(head_steps=20, head_lr=0.05)
    head = ddml.train_head(f, x, y, config, seed=3)
    reference = ddml._seeded(3, lambda: ddml.Head(4))
    z = f(torch.tensor(x))
    target = torch.tensor(y, dtype=torch.float32)
    counts = torch.bincount(torch.tensor(y, dtype=torch.int64), minlength=2).float()
    weight = (0.5 / counts)[torch.tensor(y, dtype=torch.int64)]
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(reference.logit(z), target, weight=weight,
                                                                    reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    np.testing.assert_allclose(head.loss_history, losses, rtol=1e-5)
    for mine, theirs in zip(head.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0] - 0.02  # it did train


def test_the_loss_without_its_value_has_the_same_gradient():
    rng = np.random.default_rng(3)
    y = torch.tensor(rng.integers(0, 2, 40))
    terms = ddml_loss._pair_terms(y, 2.0)
    z_data = rng.normal(size=(40, 5))
    grads = []
    for value in (True, False):
        z = torch.tensor(z_data, requires_grad=True)
        loss = ddml_loss._pair_loss(z, terms, 2.0, value=value)
        loss.backward()
        grads.append((float(loss.detach()), z.grad.numpy().copy()))
    assert grads[0][0] > 0 and grads[1][0] == 0.0
    np.testing.assert_allclose(grads[1][1], grads[0][1], rtol=1e-12, atol=1e-15)


def test_keeping_the_loss_less_often_trains_the_same_f(monkeypatch):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (np.arange(600) % 2).astype(np.uint8)
    config = DDMLConfig(hidden=(8,), out_dim=4, steps=25, batch_size=64)
    trained = {}
    for every in (1, 10):
        monkeypatch.setattr(ddml, "LOSS_EVERY", every)
        f = ddml.train_ddml(x, y, config, seed=2)
        trained[every] = (torch.cat([p.reshape(-1) for p in f.parameters()]).numpy(), f.loss_history)
    np.testing.assert_allclose(trained[10][0], trained[1][0], rtol=0, atol=1e-6)
    assert len(trained[1][1]) == 25 and len(trained[10][1]) == 4  # steps 0, 10, 20 and the last
    np.testing.assert_allclose(trained[10][1], np.asarray(trained[1][1])[[0, 10, 20, 24]], rtol=1e-6)


def test_loss_with_one_class_uses_same_pairs_only():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 3))
    y = np.ones(5, dtype=int)
    expected = _loss_double_loop(z.tolist(), y.tolist(), 3.0, 2.0)
    got = ddml_loss.ddml_loss(torch.tensor(z), torch.tensor(y), 3.0, 2.0)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_adam_weight_decay_is_the_gradient_of_eq3():
    """One Adam step with weight_decay=lambda on L equals one on L + lambda/2 sum(|W|^2 + |b|^2)."""
    lam = 0.05
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(16, 5)), dtype=torch.float32)
    y = torch.tensor([0, 1] * 8)

    def one_step(decay_in_optimizer):
        torch.manual_seed(0)
        f = ddml.DDMLNet(5, (6,), 3)
        optimizer = torch.optim.Adam(f.parameters(), lr=0.01, weight_decay=lam if decay_in_optimizer else 0.0)
        loss = ddml_loss.ddml_loss(f(x), y, 3.0, 2.0)
        if not decay_in_optimizer:
            loss = loss + lam / 2 * sum((p ** 2).sum() for p in f.parameters())
        loss.backward()
        optimizer.step()
        return [p.detach().clone() for p in f.parameters()]

    for a, b in zip(one_step(True), one_step(False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _overlapping_gaussians(n, rng, channels=32, shift=0.8):
    """Two classes whose means differ by ``shift`` standard deviations in 8 of the channels."""
    y = (np.arange(n) % 2).astype(np.uint8)
    x = rng.normal(size=(n, channels)).astype(np.float32)
    x[:, :8] += shift * y[:, None]
    return x, y


def _side_of_tau(f, x, y, tau):
    """Mean d^2 of same- and different-class pairs, and the share of pairs on the right side of tau."""
    with torch.no_grad():
        z = f(torch.from_numpy(x))
    d2 = torch.cdist(z, z).pow(2).numpy()
    same = y[:, None] == y[None, :]
    off_diagonal = ~np.eye(len(y), dtype=bool)
    same_d2, diff_d2 = d2[same & off_diagonal], d2[~same]
    correct = 0.5 * (same_d2 < tau).mean() + 0.5 * (diff_d2 > tau).mean()
    return same_d2.mean(), diff_d2.mean(), correct


def test_training_pulls_same_class_pairs_below_tau_and_pushes_others_above():
    rng = np.random.default_rng(4)
    x, y = _overlapping_gaussians(4000, rng)
    x_test, y_test = _overlapping_gaussians(600, rng)
    config = DDMLConfig(steps=300, batch_size=256)
    untrained = ddml.train_ddml(x, y, DDMLConfig(steps=0))
    _, _, correct_before = _side_of_tau(untrained, x_test, y_test, config.tau)
    f = ddml.train_ddml(x, y, config)
    same_d2, diff_d2, correct_after = _side_of_tau(f, x_test, y_test, config.tau)
    assert same_d2 < config.tau < diff_d2
    assert correct_after > correct_before + 0.2
    assert np.mean(f.loss_history[-5:]) < np.mean(f.loss_history[:5])


def _volume_with_misleading_bank(rng):
    """A feature volume whose classes sit where the bank has the opposite class's side.

    Latent 2-D features, mixed into 16 channels: the bank has heart at (+3, 0) and
    background at (-3, 0), so a classifier of the bank alone calls x0 > 0 heart; in
    this volume the heart is at (-1.5, +3) and the background at (+1.5, -3).
    """
    shape = (6, 40, 40)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    truth = ((yy - 20) ** 2 + (xx - 20) ** 2 < 12 ** 2).astype(np.uint8)
    mixing = rng.normal(size=(2, 16))
    latent = np.where(truth[..., None] == 1, [-1.5, 3.0], [1.5, -3.0]) + rng.normal(scale=0.5, size=shape + (2,))
    features = (latent @ mixing + 0.1 * rng.normal(size=shape + (16,))).astype(np.float16)
    bank_labels = (np.arange(3000) % 2).astype(np.uint8)
    bank_latent = np.where(bank_labels[:, None] == 1, [3.0, 0.0], [-3.0, 0.0]) + rng.normal(scale=0.5,
                                                                                              size=(3000, 2))
    bank = (bank_latent @ mixing + 0.1 * rng.normal(size=(3000, 16))).astype(np.float16)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[1, 19:21, 12:28] = 1
    scribbles[4, 10:30, 19:21] = 1
    scribbles[1, 2:4, 5:35] = 2
    scribbles[4, 36:38, 5:35] = 2
    return features, scribbles, bank, bank_labels, truth


def test_adapt_with_scribbles_fixes_a_misleading_bank():
    features, scribbles, bank, bank_labels, truth = _volume_with_misleading_bank(np.random.default_rng(5))
    bank_only = ddml.adapt(features, scribbles, bank, bank_labels, config=DDMLConfig(
        steps=150, batch_size=256, pool_size=4000, head_steps=100, scribble_share=0.0))
    assert ((bank_only.h > 0.5) == truth).mean() < 0.5
    result = ddml.adapt(features, scribbles, bank, bank_labels, config=FAST)
    assert result.h.shape == truth.shape and result.h.dtype == np.float32
    assert 0.0 <= result.h.min() and result.h.max() <= 1.0
    assert ((result.h > 0.5) == truth).mean() > 0.97
    recorded = set(range(0, FAST.steps, ddml.LOSS_EVERY)) | {FAST.steps - 1}
    assert len(result.losses) == len(recorded) and len(result.head_losses) == FAST.head_steps


def test_adapt_is_deterministic_for_a_seed():
    features, scribbles, bank, bank_labels, _ = _volume_with_misleading_bank(np.random.default_rng(6))
    config = DDMLConfig(steps=30, batch_size=64, pool_size=1000, head_steps=20)
    a = ddml.adapt(features, scribbles, bank, bank_labels, config=config, seed=3)
    b = ddml.adapt(features, scribbles, bank, bank_labels, config=config, seed=3)
    c = ddml.adapt(features, scribbles, bank, bank_labels, config=config, seed=4)
    np.testing.assert_array_equal(a.h, b.h)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.h, c.h)


def test_a_warm_start_continues_from_the_last_f_and_leaves_it_unchanged():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(400, 6)).astype(np.float32), np.arange(400) % 2
    x[y == 1] += 1.5
    config = DDMLConfig(hidden=(8,), out_dim=4, steps=60, batch_size=32, head_steps=5, lr=0.01)
    last = ddml.train_ddml(x, y, config, seed=1)
    before = {k: v.clone() for k, v in last.state_dict().items()}
    # Zero steps: the last f itself, its standardisation included (this pool has other statistics).
    shifted = x + 0.2
    same = ddml.train_ddml(shifted, y, config, seed=2, init=last, steps=0)
    with torch.no_grad():
        np.testing.assert_array_equal(same(torch.from_numpy(x)).numpy(), last(torch.from_numpy(x)).numpy())
    # A few steps start where the last f ended: their first loss is the trained one's, not a random f's.
    warm = ddml.train_ddml(shifted, y, config, seed=2, init=last, steps=12)
    cold = ddml.train_ddml(shifted, y, config, seed=2, steps=12)
    assert len(warm.loss_history) == len(cold.loss_history) == 3  # steps 0, 10 and 11
    assert warm.loss_history[0] < 0.5 * cold.loss_history[0]
    for key, value in last.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_adapt_memory_starts_from_a_matching_f_only():
    features, scribbles, bank, bank_labels, _ = _volume_with_misleading_bank(np.random.default_rng(7))
    config = DDMLConfig(steps=30, batch_size=64, pool_size=1000, head_steps=20, warm_steps=10)
    memory = ddml.AdaptMemory()
    first = ddml.adapt(features, scribbles, bank, bank_labels, config=config, memory=memory)
    assert memory.f is first.f and len(first.losses) == 4  # steps 0, 10, 20 and 29: from scratch
    second = ddml.adapt(features, scribbles, bank, bank_labels, config=config, memory=memory)
    assert memory.f is second.f and len(second.losses) == 2  # steps 0 and 9: warm
    assert memory.start(features.shape[3], config) is second.f
    # Another network, another feature size or warm_steps 0: trained from scratch.
    assert memory.start(features.shape[3], dataclasses.replace(config, hidden=(32,))) is None
    assert memory.start(features.shape[3], dataclasses.replace(config, out_dim=8)) is None
    assert memory.start(features.shape[3] + 1, config) is None
    cold = dataclasses.replace(config, warm_steps=0)
    assert memory.start(features.shape[3], cold) is None
    third = ddml.adapt(features, scribbles, bank, bank_labels, config=cold, memory=memory)
    np.testing.assert_array_equal(third.h, ddml.adapt(features, scribbles, bank, bank_labels, config=cold).h)
    memory.clear()
    assert memory.f is None
    assert DDMLConfig.paper().warm_steps == 0


def test_sample_pixels_is_class_balanced_and_reads_the_right_voxels():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(3, 10, 12, 4)).astype(np.float16)
    scribbles = np.zeros((3, 10, 12), np.uint8)
    scribbles[0, 2, 2:8] = 1
    scribbles[2, 5:9, 3] = 2
    bank = rng.normal(size=(50, 4)).astype(np.float16) + 100.0  # far from the volume's features
    bank_labels = (np.arange(50) % 2).astype(np.uint8)
    x, y, source = ddml.sample_pixels(features, scribbles, bank, bank_labels, 200, seed=0, scribble_share=0.25)
    assert x.shape == (200, 4) and x.dtype == np.float32 and y.dtype == np.uint8
    assert (y == 1).sum() == 100 and (y == 0).sum() == 100
    for label, value in ((1, 1), (0, 2)):
        from_scribbles = x[(y == label) & (source == ddml.SOURCE_SCRIBBLE)]
        assert len(from_scribbles) == 25
        allowed = features[scribbles == value].astype(np.float32)
        assert all((row == allowed).all(axis=1).any() for row in from_scribbles)
        from_bank = x[(y == label) & (source == ddml.SOURCE_BANK)]
        assert len(from_bank) == 75
        assert all((row == bank[bank_labels == label].astype(np.float32)).all(axis=1).any() for row in from_bank)
    x_none, _, source_none = ddml.sample_pixels(features, scribbles, None, None, 40, seed=0)
    assert (source_none == ddml.SOURCE_SCRIBBLE).all() and len(x_none) == 40


def test_progress_is_reported_and_cancel_stops():
    features, scribbles, bank, bank_labels, _ = _volume_with_misleading_bank(np.random.default_rng(9))
    config = DDMLConfig(steps=20, batch_size=32, pool_size=500, head_steps=10)
    stages = []
    ddml.adapt(features, scribbles, bank, bank_labels, config=config,
               progress=lambda stage, fraction, message: stages.append((stage, fraction)))
    assert [s for s in ("metric learning", "head", "probability") if any(st == s for st, _ in stages)] == [
        "metric learning", "head", "probability"]
    assert all(0.0 <= fraction <= 1.0 for _, fraction in stages)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        ddml.adapt(features, scribbles, bank, bank_labels, config=config, cancel=token)
    # Cancelled while h is being computed by the worker threads.
    x, y, _ = ddml.sample_pixels(features, scribbles, bank, bank_labels, 200)
    f = ddml.train_ddml(x, y, config)
    head = ddml.train_head(f, x, y, config)
    token = CancelToken()
    with pytest.raises(CancelledError):
        predict_h(features, f, head, workers=2, cancel=token,
                       progress=lambda stage, fraction, message: token.cancel())


@pytest.mark.parametrize("edit, message", [
    (lambda s: s * 0, "no scribbles"),
    (lambda s: np.where(s == 2, 0, s).astype(np.uint8), "no background"),
    (lambda s: np.where(s == 1, 0, s).astype(np.uint8), "no heart"),
    (lambda s: np.where(s == 2, 3, s).astype(np.uint8), r"0 \(none\), 1 \(heart\) or 2 \(background\)"),
    (lambda s: s[:, :-1], "scribbles have shape"),
])
def test_bad_scribbles_raise_one_line_errors(edit, message):
    features, scribbles, bank, bank_labels, _ = _volume_with_misleading_bank(np.random.default_rng(10))
    with pytest.raises(ScribbleSegError, match=message) as info:
        ddml.adapt(features, edit(scribbles), bank, bank_labels, config=FAST)
    assert "\n" not in str(info.value)


def test_bank_of_another_feature_size_is_refused():
    features, scribbles, bank, bank_labels, _ = _volume_with_misleading_bank(np.random.default_rng(11))
    with pytest.raises(ScribbleSegError, match="16 channels but the model's training-pixel bank has 8"):
        ddml.adapt(features, scribbles, bank[:, :8], bank_labels, config=FAST)
    with pytest.raises(ScribbleSegError, match="labels"):
        ddml.adapt(features, scribbles, bank, bank_labels[:-1], config=FAST)


def test_bad_config_is_refused():
    with pytest.raises(ScribbleSegError, match="scribble_share"):
        DDMLConfig(scribble_share=1.5)
    with pytest.raises(ScribbleSegError, match="beta"):
        DDMLConfig(beta=0)
    with pytest.raises(ScribbleSegError, match="warm_steps=-1"):
        DDMLConfig(warm_steps=-1)
    with pytest.raises(ScribbleSegError, match="warm_steps must be a whole number"):
        DDMLConfig(warm_steps=2.5)
    with pytest.raises(ScribbleSegError, match="DDML hidden must hold whole numbers, got '12'"):
        DDMLConfig(hidden="12")  # not two layers of 1 and 2
    for tau in (-1.0, 1.0, 7.0):  # with out_dim 2, d^2 <= 8: a tau of 7 asks other classes for d^2 > 8
        with pytest.raises(ScribbleSegError, match=r"DDML tau must lie between 1 and 4 out_dim - 1 \(7\)"):
            DDMLConfig(out_dim=2, tau=tau)
    # Numbers that train to infinities: refused by name, not found later as NaN in h by the cut.
    for field, value in (("lr", float("inf")), ("tau", float("nan")), ("head_lr", 1e308),
                         ("head_weight_decay", 1e300)):
        with pytest.raises(ScribbleSegError, match=f"DDML {field} must be a finite number of at most"):
            DDMLConfig(**{field: value})


def test_an_adaptation_that_diverges_names_the_step_sizes(monkeypatch):
    # Weights that training drove to NaN (a step size far too large for the data): the run names the
    # settings, where the cut would have found NaN in h.
    real = ddml.train_ddml

    def diverged(*args, **kwargs):
        f = real(*args, **kwargs)
        f.layers[0].weight.data[0, 0] = float("nan")
        return f

    monkeypatch.setattr(ddml, "train_ddml", diverged)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
    scribbles = np.zeros((2, 16, 16), np.uint8)
    scribbles[:, :4], scribbles[:, -4:] = 1, 2
    config = DDMLConfig(hidden=(8,), out_dim=4, steps=3, head_steps=3, batch_size=16, pool_size=200)
    with pytest.raises(ScribbleSegError, match="the adaptation diverged: the DDML network f .* use smaller DDML lr"):
        ddml.adapt(features, scribbles, None, None, config)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_takes_the_steps_of_torch_adam(weight_decay):
    # The same small regression trained with ddml._Adam and with torch.optim.Adam: the same trajectory.
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.normal(size=(64, 5)), dtype=torch.float32)
    y = torch.as_tensor(rng.normal(size=(64, 1)), dtype=torch.float32)
    nets = []

    def counted(p):  # the GPU's form of the step (a tensor step count), run here on the CPU
        optimizer = ddml._Adam(p, lr=0.05, weight_decay=weight_decay)
        optimizer.count, optimizer.step = torch.zeros((), dtype=torch.float64), optimizer._step_counted
        return optimizer

    for make in (lambda p: ddml._Adam(p, lr=0.05, weight_decay=weight_decay), counted,
                 lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=weight_decay)):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        optimizer = make(net.parameters())
        for _ in range(50):
            net.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            if isinstance(optimizer, ddml._Adam):  # it takes the gradient written into its views
                for view, p in zip(optimizer.grads, net.parameters()):
                    view.copy_(p.grad)
            optimizer.step()
        nets.append(net)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    for ours in nets[:2]:
        for mine, theirs in zip(ours.parameters(), nets[2].parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(nets[0].parameters(), start.parameters()))
    assert moved > 0.05  # it did train


def test_adaptation_does_not_import_the_torch_compiler():
    # torch.optim's optimizers import torch._dynamo (and sympy) on first use: 1-2 s added to a re-run.
    import subprocess
    import sys

    code = ("import sys, numpy as np, torch\n"
            "from ScribbleSegLib import ddml\n"
            "before = set(sys.modules)\n"
            "rng = np.random.default_rng(0)\n"
            "x, y = rng.normal(size=(400, 8)).astype(np.float32), np.arange(400) % 2\n"
            "c = ddml.DDMLConfig(steps=3, head_steps=3, batch_size=16)\n"
            "ddml.train_head(ddml.train_ddml(x, y, c), x, y, c)\n"
            "print(sorted(m for m in set(sys.modules) - before if m.startswith(('torch._dynamo', 'sympy')))[:3])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _bank_and_volume(rng):
    """Overlapping bank classes, a volume of the same features and strokes in it."""
    bank_labels = (np.arange(2000) % 2).astype(np.uint8)
    bank = (rng.normal(size=(2000, 4)) + bank_labels[:, None] * 1.2).astype(np.float32)
    shape = (3, 24, 24)
    truth = np.zeros(shape, np.uint8)
    truth[:, 6:18, 6:18] = 1
    features = (rng.normal(size=shape + (4,)) + truth[..., None] * 1.2).astype(np.float16)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[1, 11:13, 8:16] = 1
    scribbles[1, 1:3, 2:22] = 2
    return features, scribbles, bank, bank_labels


@pytest.mark.parametrize("network_rate", [0.3, 0.6])
def test_the_head_calls_as_many_bank_pixels_heart_as_the_network(network_rate):
    rng = np.random.default_rng(7)
    features, scribbles, bank, bank_labels = _bank_and_volume(rng)
    # A network that calls the bank's first pixels heart, network_rate of them.
    logit = np.where(np.arange(len(bank)) < network_rate * len(bank), 2.0, -2.0).astype(np.float32)
    config = DDMLConfig(steps=40, batch_size=64, pool_size=1000, head_steps=50, network_weight=0.0)
    shifted = ddml.adapt(features, scribbles, bank, bank_labels, config=config, bank_network_logit=logit)
    with torch.no_grad():
        own = shifted.head.logit(shifted.f(torch.from_numpy(bank))).numpy()
    assert abs(np.mean(own > 0) - network_rate) <= 2 / len(bank)  # all 2000 measure it (SHIFT_PIXELS)
    assert shifted.head_shift != 0.0
    # The paper's head, and a run whose pool holds no bank pixels, keep the head as trained.
    for other in (dataclasses.replace(config, head_bias="balanced"), dataclasses.replace(config, scribble_share=1.0)):
        kept = ddml.adapt(features, scribbles, bank, bank_labels, config=other, bank_network_logit=logit)
        assert kept.head_shift == 0.0
    as_trained = ddml.adapt(features, scribbles, bank, bank_labels, config=config)
    assert as_trained.head_shift == 0.0
    # The same training, only the bias moved: h moves towards the side the network leans to.
    if network_rate < 0.5:
        assert shifted.h.mean() < as_trained.h.mean()
    else:
        assert shifted.h.mean() > as_trained.h.mean()


def test_the_head_shift_is_bounded_and_skipped_for_a_network_that_calls_one_class():
    rng = np.random.default_rng(8)
    _, _, bank, bank_labels = _bank_and_volume(rng)
    f = ddml.train_ddml(bank, bank_labels, DDMLConfig(steps=20, batch_size=64))
    head = ddml.train_head(f, bank, bank_labels, DDMLConfig(head_steps=30))
    for everything in (-3.0, 3.0):
        assert ddml.network_rate_shift(f, head, bank, np.full(len(bank), everything)) == 0.0
    one_pixel = np.full(len(bank), -3.0)
    one_pixel[0] = 3.0  # one pixel in 2000 heart: the head's bias would have to move far
    assert abs(ddml.network_rate_shift(f, head, bank, one_pixel)) == ddml.MAX_HEAD_SHIFT
    with pytest.raises(ScribbleSegError, match="bank_network_logit has 3 values, the bank 2000 pixels"):
        ddml.network_rate_shift(f, head, bank, np.zeros(3))


def test_the_paper_keeps_the_head_as_trained_and_a_bad_head_bias_is_refused():
    assert DDMLConfig.paper().head_bias == "balanced"
    with pytest.raises(ScribbleSegError, match="DDML head_bias must be one of balanced, network"):
        DDMLConfig(head_bias="prior")
