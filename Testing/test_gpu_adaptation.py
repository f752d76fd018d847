"""Tests of ScribbleSegLib.gpu_adaptation: replayed steps and h from features kept on a device.

The CUDA graph itself needs a GPU (the last test, run by ``benchmarks/gpu_check.py``'s machine); the rest
runs the same functions on the CPU, where a :class:`Resident` may hold CPU tensors.
"""

import numpy as np
import pytest
import torch

from ScribbleSegLib import ddml, gpu_adaptation
from ScribbleSegLib.ddml import DDMLConfig
from ScribbleSegLib.errors import CancelledError
from ScribbleSegLib.gpu_adaptation import Resident, evaluate_h, replay
from ScribbleSegLib.h_evaluation import fused_layers, predict_h
from ScribbleSegLib.progress import CancelToken

SMALL = DDMLConfig(hidden=(16,), out_dim=8, steps=30, batch_size=32, pool_size=600, head_steps=20)


def _case(seed=0, shape=(3, 20, 24), channels=6):
    """Features, a probability and scribbles with heart on the left half, background on the right."""
    rng = np.random.default_rng(seed)
    heart = np.zeros(shape, bool)
    heart[:, :, : shape[2] // 2] = True
    features = (rng.normal(size=shape + (channels,)) + 1.5 * heart[..., None]).astype(np.float16)
    probability = np.clip(0.5 + 0.4 * (heart - 0.5) + 0.1 * rng.normal(size=shape), 0, 1).astype(np.float32)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[1, 5:15, 2:6] = 1
    scribbles[1, 5:15, 18:22] = 2
    return features, probability, scribbles


def _resident(features, probability):
    return Resident(torch.from_numpy(features.copy()), torch.from_numpy(probability.copy()))


def test_replay_runs_every_step_then_stops_at_cancel():
    count, token = [0], CancelToken()
    replay(lambda: count.__setitem__(0, count[0] + 1), 5, "cpu", between=lambda i: None)
    assert count[0] == 5

    def between(i):
        if i == 1:
            token.cancel()

    with pytest.raises(CancelledError):
        replay(lambda: count.__setitem__(0, count[0] + 1), 5, "cpu", token, between)
    assert count[0] == 7  # two more steps, then the cancel


def test_h_from_resident_features_is_the_exact_h_blended_with_the_network():
    features, probability, scribbles = _case()
    x, y, _ = ddml.sample_pixels(features, scribbles, None, None, SMALL.pool_size)
    f = ddml.train_ddml(x, y, SMALL)
    head = ddml.train_head(f, x, y, SMALL)
    exact = predict_h(features, f, head, evaluation="exact")
    for weight in (0.0, 0.5):
        h = evaluate_h(_resident(features, probability), fused_layers(f, head), weight)
        assert h.shape == exact.shape and h.dtype == np.float32
        np.testing.assert_allclose(h, (1 - weight) * exact + weight * probability, rtol=0, atol=2e-6)
    assert np.ptp(exact) > 0.5  # h is not flat: the comparison means something


def test_adapt_with_resident_features_gives_the_exact_evaluations_h():
    features, probability, scribbles = _case(1)
    config = DDMLConfig(**{**SMALL.__dict__, "evaluation": "exact"})
    plain = ddml.adapt(features, scribbles, None, None, config, network_probability=probability)
    kept = ddml.adapt(features, scribbles, None, None, config, network_probability=probability,
                      resident=_resident(features, probability))
    np.testing.assert_allclose(kept.h, plain.h, rtol=0, atol=2e-6)
    with pytest.raises(Exception, match="resident features have shape"):
        ddml.adapt(features, scribbles, None, None, config, network_probability=probability,
                   resident=_resident(features[:2], probability[:2]))


def test_a_gpu_out_of_memory_while_computing_h_falls_back_to_the_cpu(monkeypatch, caplog):
    features, probability, scribbles = _case(3)
    plain = ddml.adapt(features, scribbles, None, None, SMALL, network_probability=probability)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(ddml, "evaluate_h", out_of_memory)
    with caplog.at_level("WARNING", logger="ScribbleSegLib.ddml"):
        kept = ddml.adapt(features, scribbles, None, None, SMALL, network_probability=probability,
                          resident=_resident(features, probability))
    np.testing.assert_array_equal(kept.h, plain.h)  # the same CPU path, the same machine
    assert [r.getMessage() for r in caplog.records] == ["h: the GPU ran out of memory; computing it on the CPU"]


def test_upload_keeps_nothing_on_a_cpu():
    features, probability, _ = _case()
    assert gpu_adaptation.upload(probability, features, "cpu") is None
    assert not gpu_adaptation.is_gpu("cpu") and gpu_adaptation.is_gpu("cuda:0")


def test_upload_copies_read_only_outputs_and_keeps_them_only_with_room_to_spare(monkeypatch):
    # The copy and the memory rule, run on the CPU's memory: the device check and its free memory are patched.
    features, probability, _ = _case()
    features.flags.writeable = probability.flags.writeable = False  # a session's read-only views
    monkeypatch.setattr(gpu_adaptation, "is_gpu", lambda device: True)
    need = features.size * 2 + probability.size * 4
    room = int(gpu_adaptation.RESIDENT_HEADROOM_GIB * 2**30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (need + room, 2 * (need + room)))
    resident = gpu_adaptation.upload(probability, features, "cpu")
    np.testing.assert_array_equal(resident.features.numpy(), features)
    np.testing.assert_array_equal(resident.probability.numpy(), probability)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (need + room - 1, 2 * (need + room)))
    assert gpu_adaptation.upload(probability, features, "cpu") is None
    # Memory that another process took after it was measured: h stays on the CPU, no error.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (need + room, 2 * (need + room)))

    def taken(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(torch, "empty", taken)
    assert gpu_adaptation.upload(probability, features, "cpu") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_replayed_on_the_gpu_follows_the_cpu():
    features, probability, scribbles = _case(2)
    x, y, _ = ddml.sample_pixels(features, scribbles, None, None, SMALL.pool_size)
    cpu_f = ddml.train_ddml(x, y, SMALL, seed=3)
    gpu_f = ddml.train_ddml(x, y, SMALL, seed=3, device="cuda")
    assert gpu_f.mean.is_cuda
    np.testing.assert_allclose(gpu_f.loss_history, cpu_f.loss_history, rtol=1e-3, atol=1e-5)
    for a, b in zip(gpu_f.parameters(), cpu_f.parameters()):
        np.testing.assert_allclose(a.cpu().numpy(), b.numpy(), rtol=0, atol=1e-3)
    cpu_head, gpu_head = ddml.train_head(cpu_f, x, y, SMALL), ddml.train_head(gpu_f, x, y, SMALL)
    np.testing.assert_allclose(gpu_head.loss_history, cpu_head.loss_history, rtol=1e-3, atol=1e-5)
    resident = gpu_adaptation.upload(probability, features, "cuda")
    h = evaluate_h(resident, fused_layers(gpu_f.cpu(), gpu_head.cpu()), 0.5)
    exact = predict_h(features, cpu_f, cpu_head, evaluation="exact")
    np.testing.assert_allclose(h, 0.5 * exact + 0.5 * probability, rtol=0, atol=2e-3)
