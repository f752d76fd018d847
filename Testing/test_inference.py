"""Tiled inference (inference.py): tiles equal the whole section, any size, memory maps, devices."""

import numpy as np
import pytest
import torch

from ScribbleSegLib import inference
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.model_file import SegModel
from ScribbleSegLib.nets import ModelConfig, build_net
from ScribbleSegLib.runtime import torch_threads

TINY = dict(patch=32, width=4, depth=3, aggregator=(8,), feature_channels=8)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):  # tiny tensors: one intra-op thread is much faster on small CPUs
        yield


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    config = ModelConfig(**{**TINY, **kw})
    net = build_net(config)
    # Non-trivial batch-norm statistics, so that eval mode is not the identity.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    return SegModel(config=config, net=net, stain=None, voxel_size=(1.0, 1.0, 1.0),
                    bank_features=np.zeros((0, config.feature_channels), np.float32),
                    bank_labels=np.zeros(0, np.uint8), device=torch.device("cpu"))


def random_volume(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)


@pytest.mark.parametrize("kw", [dict(arch="munet"), dict(arch="munet", weighting=True), dict(arch="unet")])
def test_tiles_equal_the_whole_section(kw):
    model = make_model(**kw)
    image = random_volume((2, 70, 101))
    whole_p, whole_f = inference.predict_volume(model, image, tile=4096)
    tiled_p, tiled_f = inference.predict_volume(model, image, tile=16, batch=3)
    assert whole_p.shape == (2, 70, 101) and whole_p.dtype == np.float32
    assert whole_f.shape == (2, 70, 101, 8) and whole_f.dtype == np.float16
    assert 0.0 <= whole_p.min() and whole_p.max() <= 1.0
    np.testing.assert_allclose(tiled_p, whole_p, atol=1e-5)
    np.testing.assert_allclose(tiled_f.astype(np.float32), whole_f.astype(np.float32), atol=2e-3, rtol=2e-3)


def test_whole_section_is_the_network_on_the_padded_section():
    """A tile's core is the fully convolutional network's output on the reflect-padded section."""
    model = make_model(arch="unet")
    image = random_volume((1, 40, 48))
    prob, _ = inference.predict_volume(model, image, tile=4096)
    r = -(-model.net.expert_radius // 4) * 4 + 8  # a multiple of the pooling grid (depth 3)
    padded = np.pad(image[0], ((r, r), (r, r), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        direct = torch.sigmoid(model.net.head(model.net.unet(x)))[0, 0, r:r + 40, r:r + 48].numpy()
    np.testing.assert_allclose(prob[0], direct, atol=1e-5)


def test_section_smaller_than_the_patch_is_padded():
    model = make_model()
    prob, feats = inference.predict_volume(model, random_volume((1, 5, 7)))
    assert prob.shape == (1, 5, 7) and feats.shape == (1, 5, 7, 8)
    assert np.isfinite(prob).all() and np.isfinite(feats.astype(np.float32)).all()


def test_single_section_and_bad_images():
    model = make_model()
    prob, _ = inference.predict_volume(model, random_volume((1, 20, 20))[0])
    assert prob.shape == (1, 20, 20)
    with pytest.raises(ScribbleSegError, match="uint8"):
        inference.predict_volume(model, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ScribbleSegError):
        inference.predict_volume(model, np.zeros((1, 8, 8, 4), np.uint8))


def test_feature_writer_gives_the_same_features(tmp_path):
    model = make_model()
    image = random_volume((2, 40, 56))
    _, feats = inference.predict_volume(model, image, tile=16)
    shape = feats.shape
    with open(tmp_path / "raw", "w+b") as handle:
        handle.truncate(feats.nbytes)
        predictor = inference.SectionPredictor(model.net, torch.device("cpu"), 16, 2)
        for k in range(2):
            predictor.predict(image[k], np.empty((40, 56), np.float32), inference.FeatureWriter(handle, 0, shape, k))
    # Batch 2 against batch 1: the kernels may sum in another order (one float16 ulp on some CPUs);
    # a misplaced tile or a wrong halo differs by far more than this tolerance.
    written = np.fromfile(tmp_path / "raw", np.float16).reshape(shape).astype(np.float32)
    np.testing.assert_allclose(written, feats.astype(np.float32), rtol=4e-3, atol=4e-3)


def test_feature_path_gives_a_memory_map(tmp_path):
    model = make_model()
    image = random_volume((2, 24, 30))
    prob, feats = inference.predict_volume(model, image)
    path = tmp_path / "features.npy"
    prob2, mapped = inference.predict_volume(model, image, feature_path=path)
    assert isinstance(mapped, np.memmap) and path.is_file()
    np.testing.assert_array_equal(np.asarray(mapped), feats)
    np.testing.assert_array_equal(prob2, prob)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npy"]  # no temporary left


@pytest.mark.parametrize("orientations", [2, 4])
def test_orientations_average_the_flipped_sections(tmp_path, orientations):
    model = make_model()
    image = random_volume((2, 36, 45))
    flips = inference.FLIPS[:orientations]
    logits, features = [], []
    for axes in flips:  # the network on each flipped volume, its outputs flipped back
        p, f = inference.predict_volume(model, np.ascontiguousarray(np.flip(image, [a + 1 for a in axes])))
        p, f = np.flip(p, [a + 1 for a in axes]), np.flip(f, [a + 1 for a in axes]).astype(np.float32)
        logits.append(np.log(p) - np.log1p(-p))
        features.append(f)
    expected_p = 1 / (1 + np.exp(-np.mean(logits, axis=0)))
    expected_f = np.mean(features, axis=0)
    prob, feats = inference.predict_volume(model, image, orientations=orientations)
    np.testing.assert_allclose(prob, expected_p, atol=1e-5)
    np.testing.assert_allclose(feats.astype(np.float32), expected_f, rtol=4e-3, atol=4e-3)
    # The same through the file writer (features on disk) and with resampled sections.
    _, mapped = inference.predict_volume(model, image, orientations=orientations, feature_path=tmp_path / "f.npy")
    np.testing.assert_allclose(np.asarray(mapped, np.float32), feats.astype(np.float32), rtol=4e-3, atol=4e-3)
    plain, _ = inference.predict_volume(model, image)
    assert np.abs(plain - prob).max() > 1e-3  # the flips did change the result
    rescaled, _ = inference.predict_volume(model, image, orientations=orientations, scale=(0.5, 0.5))
    assert rescaled.shape == prob.shape and np.isfinite(rescaled).all()
    with pytest.raises(ScribbleSegError, match="orientations must be one of 1, 2, 4"):
        inference.predict_volume(model, image, orientations=3)


def test_cancel_leaves_no_feature_file(tmp_path):
    from ScribbleSegLib.progress import CancelToken
    from ScribbleSegLib.errors import CancelledError

    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        inference.predict_volume(make_model(), random_volume((1, 16, 16)), feature_path=tmp_path / "f.npy",
                                 cancel=token)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("on_disk", [False, True])
def test_two_sections_at_a_time_give_what_one_at_a_time_gives(tmp_path, monkeypatch, on_disk):
    model = make_model()
    image = random_volume((5, 40, 56))
    runs = []
    for workers in (1, 2):
        monkeypatch.setattr(inference, "section_workers", lambda device, pixels, n=workers: n)
        path = tmp_path / f"features{workers}.npy" if on_disk else None
        runs.append(inference.predict_volume(model, image, tile=16, feature_path=path))
    (p1, f1), (p2, f2) = runs
    # Each section runs the same code on one torch thread either way; a section or tile row written to
    # the wrong place, or two threads' writes to one file interleaved, would differ by far more.
    np.testing.assert_allclose(p2, p1, atol=1e-6)
    np.testing.assert_allclose(np.asarray(f2, np.float32), np.asarray(f1, np.float32), rtol=1e-3, atol=1e-3)


def test_section_workers_two_on_two_cores_and_several_beside_a_gpu(monkeypatch):
    from ScribbleSegLib import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    assert runtime.section_workers(cpu, 512 * 512) == 2
    assert runtime.section_workers("cpu", 512 * 512) == 2
    assert runtime.section_workers(cpu, runtime.PARALLEL_SECTION_MAX_PIXELS + 1) == 1
    assert runtime.section_workers(torch.device("cuda"), 512 * 512) == 1  # half the cores: one
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 16)  # torch's intra-op threads use them
    assert runtime.section_workers(cpu, 512 * 512) == 1
    # Beside a GPU the host's work per section is the bottleneck: several sections at once, as many as the
    # GPU's free memory holds, and one where torch cannot say how much is free.
    per_section = runtime.GPU_MEMORY_PER_SECTION_GIB
    monkeypatch.setattr(runtime, "_gpu_free_gib", lambda device: 100 * per_section)
    assert runtime.section_workers(torch.device("cuda"), 512 * 512) == runtime.GPU_SECTION_WORKERS
    assert runtime.section_workers("cuda", runtime.PARALLEL_SECTION_MAX_PIXELS + 1) == 1
    monkeypatch.setattr(runtime, "_gpu_free_gib", lambda device: 2 * per_section + 1)
    assert runtime.section_workers("cuda", 512 * 512) == 2
    monkeypatch.setattr(runtime, "_gpu_free_gib", lambda device: per_section - 1)
    assert runtime.section_workers("cuda", 512 * 512) == 1
    monkeypatch.undo()
    if not torch.cuda.is_available():
        assert runtime._gpu_free_gib("cuda") == 0


def test_cancel_while_two_sections_run_leaves_no_feature_file(tmp_path, monkeypatch):
    from ScribbleSegLib.errors import CancelledError
    from ScribbleSegLib.progress import CancelToken

    monkeypatch.setattr(inference, "section_workers", lambda device, pixels: 2)
    token = CancelToken()
    seen = []

    def progress(stage, fraction, message):
        seen.append(message)
        if message.startswith("section 2/"):
            token.cancel()

    with pytest.raises(CancelledError):
        inference.predict_volume(make_model(), random_volume((8, 24, 24)), feature_path=tmp_path / "f.npy",
                                 progress=progress, cancel=token)
    assert list(tmp_path.iterdir()) == []
    assert not any(m.startswith("section 8/") for m in seen)


def test_large_features_go_to_a_temporary_memory_map(monkeypatch):
    monkeypatch.setattr(inference, "IN_MEMORY_FEATURE_BYTES", 100)
    _, feats = inference.predict_volume(make_model(), random_volume((1, 16, 16)))
    assert isinstance(feats, np.memmap) and feats.shape == (1, 16, 16, 8)


def test_out_of_memory_halves_the_batch():
    model = make_model()
    image = random_volume((1, 32, 128))  # two bands of eight 16-pixel tiles
    expected = np.empty((1, 32, 128), np.float32)
    inference.SectionPredictor(model.net, torch.device("cpu"), 16, 8).predict(image[0], expected[0], None)
    real_forward = model.net.forward
    calls = []

    def flaky(inputs, geom):
        calls.append(inputs[0].shape[0])
        if inputs[0].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(inputs, geom)

    model.net.forward = flaky
    predictor = inference.SectionPredictor(model.net, torch.device("cpu"), 16, 8)
    prob = np.empty((32, 128), np.float32)
    predictor.predict(image[0], prob, None)
    assert calls[:3] == [8, 4, 2] and predictor.batch == 2
    np.testing.assert_allclose(prob, expected[0], atol=1e-6)


def test_out_of_memory_with_one_tile_is_a_clear_error():
    model = make_model()

    def always(inputs, geom):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    model.net.forward = always
    predictor = inference.SectionPredictor(model.net, torch.device("cpu"), 16, 1)
    with pytest.raises(ScribbleSegError, match="out of GPU memory"):
        predictor.predict(random_volume((1, 16, 16))[0], np.empty((16, 16), np.float32), None)


def test_tile_origins_cover_the_section_on_the_alignment_grid():
    assert inference.tile_origins(100, 32, 16) == [0, 32, 64, 80]
    assert inference.tile_origins(10, 32, 16) == [0]
    for length in range(1, 200, 7):
        origins = inference.tile_origins(length, 48, 16)
        assert all(o % 16 == 0 for o in origins)
        assert origins[-1] + 48 >= length


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ScribbleSegError, match="CUDA"):
        inference.predict_volume(make_model(), random_volume((1, 8, 8)), device="cuda")
