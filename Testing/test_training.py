"""Training (training.py) and the ``scribbleseg train`` command."""

import dataclasses

import numpy as np
import pytest
import torch

from ScribbleSegLib import multifov
from ScribbleSegLib.cli import main
from ScribbleSegLib.errors import CancelledError, ScribbleSegError
from ScribbleSegLib.geometry import Geometry, Volume
from ScribbleSegLib.model_file import load_model
from ScribbleSegLib.nets import ModelConfig, align
from ScribbleSegLib.progress import CancelToken
from ScribbleSegLib.runtime import torch_threads
from ScribbleSegLib.training import PatchSource, TrainOptions, check_label_set, check_pair, train_model

TINY = ModelConfig(patch=16, width=4, depth=2, aggregator=(8,), feature_channels=8)
FAST = TrainOptions(eval_every=10, patience=100, val_patches=16, normalize=False, bank_per_class=300,
                    bank_sections=2)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):  # tiny tensors: one intra-op thread is much faster on small CPUs
        yield


def tiny_volume(seed=0, shape=(6, 40, 40)):
    """A dark, grainy disc ("heart") in pale tissue; the disc moves from section to section."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]]
    cy, cx = shape[1] / 2 + 4 * np.sin(z), shape[2] / 2 + 4 * np.cos(z)
    label = ((y - cy) ** 2 + (x - cx) ** 2 < 10 ** 2).astype(np.uint8)
    image = np.where(label[..., None] > 0, [150, 60, 130], [235, 190, 215]).astype(np.float64)
    image += rng.normal(0, 12, image.shape)
    return Volume(np.clip(image, 0, 255).astype(np.uint8), Geometry((0.01, 0.01, 0.05))), label


def test_a_label_set_without_heart_or_without_background_is_refused():
    _, label = tiny_volume()
    with pytest.raises(ScribbleSegError, match="vol.nrrd: the training label marks no heart voxel"):
        check_label_set([np.zeros_like(label)], ["vol.nrrd"])
    with pytest.raises(ScribbleSegError,
                       match="vol.nrrd: the training label marks every voxel as heart .no background."):
        check_label_set([np.ones_like(label)], ["vol.nrrd"])
    with pytest.raises(ScribbleSegError, match="every validation label .2. marks every voxel as heart: validation "
                                               "needs background somewhere"):
        check_label_set([np.ones_like(label)] * 2, ["a", "b"], "validation")
    check_label_set([np.zeros_like(label), label], ["none", "some"])  # together they hold both


def test_check_pair_refuses_bad_volumes():
    image, label = tiny_volume()
    with pytest.raises(ScribbleSegError, match="the label is 6x40x39 but the image is 6x40x40"):
        check_pair(image, label[:, :, :-1], "vol.nrrd")
    with pytest.raises(ScribbleSegError, match="uint8"):
        check_pair(image.array.astype(np.float32), label, "vol.nrrd")
    array, binary = check_pair(image, label * 7, "vol.nrrd")
    assert array is image.array and set(np.unique(binary)) == {0, 1}


def test_a_tile_without_heart_beside_others_is_trained_on_with_one_note(tmp_path, caplog):
    # A tile beside the organ is background to learn from, as real tile sets hold; only a set without any
    # heart (or any background) is refused.
    image, label = tiny_volume()
    out = tmp_path / "m.model"
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        train_model([image, image], [label, np.zeros_like(label)], out, TINY, options=FAST, max_iters=2,
                    names=["heart.png", "glass.png"])
    assert out.is_file()
    notes = [r.getMessage() for r in caplog.records if "glass.png" in r.getMessage()]
    assert notes == ["glass.png: the label marks no heart voxel: its sections teach background only"]


def test_train_model_refuses_bad_input_and_writes_nothing(tmp_path):
    image, label = tiny_volume()
    out = tmp_path / "m.model"
    with pytest.raises(ScribbleSegError, match="every training label \\(2\\) marks no heart voxel"):
        train_model([image, image], [np.zeros_like(label)] * 2, out, TINY, options=FAST, max_iters=1)
    with pytest.raises(ScribbleSegError, match="validation volume 1: the validation label marks every voxel as heart"):
        train_model([image], [label], out, TINY, options=FAST, max_iters=1, val_images=[image],
                    val_labels=[np.ones_like(label)])
    with pytest.raises(ScribbleSegError, match="one label per image"):
        train_model([image], [], out, TINY, options=FAST)
    with pytest.raises(ScribbleSegError, match="lr"):
        train_model([image], [label], out, TINY, options=TrainOptions(lr=0))
    # Once: the second volume dropped (zip) and its empty label never checked; an infinite budget failed at the save.
    for kwargs, words in (({"names": ["first"]}, "names: 1 names for 2 volumes"),
                          ({"max_minutes": float("inf")}, "max_minutes must be a positive finite number"),
                          ({"config": "small"}, "config must be a ModelConfig or None, got str"),
                          ({"seed": -1}, "seed must be an integer"),
                          ({"max_iters": "abc"}, "max_iters must be a whole number")):
        with pytest.raises(ScribbleSegError) as excinfo:
            train_model([image, image], [label, np.zeros_like(label)], out, **{"config": TINY, "options": FAST,
                                                                               **kwargs})
        assert words in str(excinfo.value)
    assert not out.exists()


def test_a_training_that_diverges_writes_nothing_and_says_so(tmp_path):
    # A learning rate of 10 once wrote a model that called every voxel heart, with exit 0.
    image, label = tiny_volume()
    with pytest.raises(ScribbleSegError, match=r"training diverged .*try a lower learning rate \(lr\)"):
        train_model([image], [label], tmp_path / "m.model", TINY, options=TrainOptions(
            lr=10.0, eval_every=5, patience=100, val_patches=16, normalize=False, bank_per_class=300,
            bank_sections=2), max_iters=10)
    assert list(tmp_path.iterdir()) == []


def test_patches_are_balanced_and_augmentation_keeps_the_fields_of_view_aligned():
    # A ramp image (see test_nets) whose "heart" is its bright-red half.
    h = w = 96
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([2 * yy, 2 * xx, np.full_like(yy, 9)], -1).astype(np.uint8)[None].repeat(2, 0)
    label = (yy >= 48).astype(np.uint8)[None].repeat(2, 0)
    config = ModelConfig(patch=16, width=4, depth=2, n_fov=3, aggregator=(8,), feature_channels=8)
    source = PatchSource([image], [label], config)
    rng = np.random.default_rng(0)
    centres = source.centres(rng, 400)
    on_heart = label[0][centres[:, 2], centres[:, 3]].mean()
    assert 0.4 < on_heart < 0.6
    assert (centres[:, 2:] % 4 == 0).all()
    geom = multifov.patch_geometry(config)
    inside = np.array([(0, 1, 40, 44), (0, 0, 44, 40), (0, 1, 48, 48)])
    options = TrainOptions(scale_jitter=0.0, od_jitter=0.0)
    inputs, targets = source.batch(inside, geom, torch.device("cpu"), rng=np.random.default_rng(3), options=options)
    assert [x.shape for x in inputs] == [(3, 3, 16, 16)] * 3 and targets[0].shape == (3, 1, 16, 16)
    rgb = [(x + 1.0) * 127.5 for x in inputs]
    for k in range(3):
        # Flips and quarter turns were applied to every level alike: the levels still align.
        assert torch.allclose(align(rgb[k], geom.experts[k])[:, :2], rgb[0][:, :2], atol=0.05)
    # And the label followed the image.
    assert torch.equal(targets[0] > 0.5, rgb[0][:, :1] >= 96 - 0.05)
    # The augmentation did turn or flip something.
    plain, _ = source.batch(inside, geom, torch.device("cpu"))
    assert not torch.allclose(plain[0], inputs[0])


def test_tiny_model_overfits_a_tiny_volume(tmp_path):
    image, label = tiny_volume()
    seen = []
    path = train_model([image], [label], tmp_path / "m.model", TINY, options=FAST, max_iters=60, seed=1,
                       progress=lambda stage, f, msg: seen.append(stage))
    model = load_model(path, device="cpu")
    history = model.meta["training"]["history"]
    assert history[-1][1] < 0.6 * history[0][1]  # training loss (smoothed) falls
    assert min(h[2] for h in history) < 0.6 * history[0][2]  # and so does the validation loss
    assert {"training", "training-pixel bank"} <= set(seen)
    assert model.voxel_size == (0.01, 0.01, 0.05)
    assert model.stain is None
    counts = np.bincount(model.bank_labels, minlength=2)
    assert counts[0] == counts[1] > 0
    # The bank's features separate the classes: class means differ.
    means = [model.bank_features[model.bank_labels == c].mean(0) for c in (0, 1)]
    assert np.abs(means[0] - means[1]).max() > 0.1


def test_fixed_seed_reproduces_the_model(tmp_path):
    image, label = tiny_volume()
    a = load_model(train_model([image], [label], tmp_path / "a.model", TINY, options=FAST, max_iters=4, seed=5))
    b = load_model(train_model([image], [label], tmp_path / "b.model", TINY, options=FAST, max_iters=4, seed=5))
    c = load_model(train_model([image], [label], tmp_path / "c.model", TINY, options=FAST, max_iters=4, seed=6))
    sa, sb, sc = (m.net.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    np.testing.assert_array_equal(a.bank_features, b.bank_features)


@pytest.mark.parametrize("extra", [{}, {"weighting": True, "expert_features": True}])
def test_experts_on_threads_give_the_gradients_of_one_backward_pass(extra):
    from concurrent.futures import ThreadPoolExecutor

    from ScribbleSegLib.nets import build_net
    from ScribbleSegLib.training import backward_step

    config = ModelConfig(patch=16, width=4, depth=2, n_fov=3, aggregator=(8,), feature_channels=8, **extra)
    image, label = tiny_volume()
    source = PatchSource([image.array], [label], config)
    geom = multifov.patch_geometry(config)
    rng = np.random.default_rng(2)
    inputs, targets = source.batch(source.centres(rng, 4), geom, torch.device("cpu"), rng, TrainOptions())
    torch.manual_seed(0)
    net = build_net(config).train()
    grads, losses = [], []
    for pool in (None, ThreadPoolExecutor(max_workers=3)):
        net.zero_grad(set_to_none=True)
        losses.append(backward_step(net, inputs, targets, geom, config, pool).item())
        grads.append({name: q.grad.clone() for name, q in net.named_parameters() if q.grad is not None})
        if pool is not None:
            pool.shutdown()
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("experts.") for k in grads[0])
    # The same operations either way: any gradient lost or counted twice differs by far more.
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


def test_validation_on_threads_gives_the_loss_of_one_batch_after_another():
    from concurrent.futures import ThreadPoolExecutor

    from ScribbleSegLib.nets import build_net
    from ScribbleSegLib.training import _validate

    image, label = tiny_volume()
    source = PatchSource([image.array], [label], TINY)
    geom = multifov.patch_geometry(TINY)
    rng = np.random.default_rng(4)
    batches = [source.batch(source.centres(rng, 4), geom, torch.device("cpu")) for _ in range(5)]
    torch.manual_seed(1)
    net = build_net(TINY)
    alone = _validate(net, batches, geom, torch.device("cpu"))
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = _validate(net, batches, geom, torch.device("cpu"), pool)
    # A batch left out or counted twice moves the mean by about a fifth of a batch's loss.
    assert threaded == pytest.approx(alone, rel=1e-6)
    assert _validate(net, batches[:4], geom, torch.device("cpu")) != pytest.approx(alone, rel=1e-3)


def test_training_with_the_experts_on_threads_gives_the_same_model(tmp_path, monkeypatch):
    from ScribbleSegLib import training

    image, label = tiny_volume()
    states = []
    for workers in (1, 3):
        monkeypatch.setattr(training, "expert_workers", lambda net, device, n=workers: n)
        # On the CPU, the only device whose training puts experts on threads (on a GPU, bf16 autocast
        # on several threads rounds differently: seen on an H200, where "auto" would pick the GPU).
        path = train_model([image], [label], tmp_path / f"m{workers}.model", TINY, options=FAST, max_iters=6,
                           seed=3, device="cpu")
        states.append(load_model(path, device="cpu").net.state_dict())
    for name in states[0]:
        torch.testing.assert_close(states[1][name], states[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_bank_from_sections_on_threads_is_the_bank_of_one_section_after_another(monkeypatch):
    from ScribbleSegLib import training
    from ScribbleSegLib.nets import build_net

    volumes = [(tiny_volume(seed)[0].array, tiny_volume(seed)[1]) for seed in (0, 1)]
    torch.manual_seed(2)
    net = build_net(TINY)
    banks = []
    for workers in (1, 2):
        monkeypatch.setattr(training, "section_workers", lambda device, pixels, n=workers: n)
        banks.append(training.feature_bank(net, volumes, torch.device("cpu"), np.random.default_rng(7), 200, 4))
    (x1, y1), (x2, y2) = banks
    np.testing.assert_array_equal(y2, y1)
    # The same pixels drawn in the same order: a section's features in another's place differ by far more.
    np.testing.assert_allclose(x2, x1, rtol=1e-3, atol=1e-3)


def test_cancel_stops_training_and_writes_nothing(tmp_path):
    image, label = tiny_volume()
    token = CancelToken()

    def progress(stage, fraction, message):
        if stage == "training" and fraction > 0:
            token.cancel()

    with pytest.raises(CancelledError):
        train_model([image], [label], tmp_path / "m.model", TINY, options=FAST, max_iters=50, progress=progress,
                    cancel=token)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("max_iters, max_minutes, warned", [(20000, None, True), (20000, 60.0, False),
                                                          (50, None, False)])
def test_a_long_training_on_a_cpu_without_a_time_budget_is_announced(tmp_path, caplog, max_iters, max_minutes,
                                                                      warned):
    # The paper preset (20000 steps, no time budget) on a CPU: one warning before it starts (stopped here at
    # once); with a budget, or with the small preset's steps, none.
    image, label = tiny_volume()
    token = CancelToken()
    token.cancel()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"), pytest.raises(CancelledError):
        train_model([image], [label], tmp_path / "m.model", TINY, options=FAST, max_iters=max_iters,
                    max_minutes=max_minutes, device="cpu", cancel=token)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("without a time budget can take days" in m and "20000 steps" in m for m in messages) == warned


def test_a_fine_tune_never_replaces_its_parent(tmp_path):
    image, label = tiny_volume()
    parent = train_model([image], [label], tmp_path / "p.model", TINY, options=FAST, max_iters=1)
    before = open(parent, "rb").read()
    with pytest.raises(ScribbleSegError, match=r"p\.model \(out_path\): is the input init"):
        train_model([image], [label], parent, options=FAST, max_iters=1, init=parent)
    assert open(parent, "rb").read() == before


def test_a_training_cut_short_or_on_mixed_pixel_sizes_says_so(tmp_path, caplog):
    image, label = tiny_volume()
    coarse = Volume(image.array, Geometry((0.05, 0.05, 0.05)))  # 5 times the other's pixel size
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        train_model([image, coarse], [label, label], tmp_path / "m.model", TINY, options=FAST, max_iters=200,
                    max_minutes=1e-9)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("pixel sizes differ by 5.0x" in m for m in messages), messages
    assert any("stopped by its time budget" in m and "of 200 steps" in m for m in messages), messages
    assert not any("more steps" in m for m in messages), messages  # the time stopped it, not the steps
    assert load_model(tmp_path / "m.model").meta["training"]["stopped_by"] == "time budget"


def test_a_learning_rate_that_runs_away_in_two_steps_is_called_a_divergence(tmp_path):
    # lr 1e6 gave a validation loss of 1e7 in two steps, and the advice was "too few to learn: more steps".
    import dataclasses

    image, label = tiny_volume()
    with pytest.raises(ScribbleSegError, match=r"training diverged .*lower learning rate"):
        train_model([image], [label], tmp_path / "m.model", TINY, options=dataclasses.replace(FAST, lr=1e6),
                    max_iters=2)
    assert not (tmp_path / "m.model").exists()


def test_train_command(tmp_path, capsys):
    from ScribbleSegLib import volume_io

    image, label = tiny_volume(shape=(5, 24, 24))
    volume_io.write_rgb_volume(tmp_path / "img.nrrd", image)
    volume_io.write_labelmap(tmp_path / "lab.nrrd", label, image.geometry)
    volume_io.write_labelmap(tmp_path / "zero.nrrd", np.zeros_like(label), image.geometry)
    out = tmp_path / "m.model"
    args = ["train", "--images", str(tmp_path / "img.nrrd"), "--labels", str(tmp_path / "lab.nrrd"),
            "--out", str(out), "--arch", "unet", "--max-iters", "2", "--quiet", "--no-stain-normalization"]
    assert main(args) == 0
    model = load_model(out, device="cpu")
    assert model.config.arch == "unet" and model.voxel_size == pytest.approx((0.01, 0.01, 0.05))
    out.unlink()
    # The library's warning names its parameter (max_minutes); the command names its flag.
    capsys.readouterr()
    assert main(args[:args.index("--max-iters")] + ["--max-iters", "50", "--max-minutes", "1e-9"]
                + args[args.index("--max-iters") + 2:]) == 0
    err = capsys.readouterr().err
    assert "stopped by its time budget (--max-minutes 1e-09)" in err and "max_minutes" not in err, err
    out.unlink()
    bad = list(args)
    bad[bad.index("--labels") + 1] = str(tmp_path / "zero.nrrd")
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "zero.nrrd: the training label marks no heart voxel" in err and "Traceback" not in err
    assert not out.exists()
    if not torch.cuda.is_available():
        assert main(args + ["--device", "cuda"]) == 2
        assert "CUDA" in capsys.readouterr().err
        assert not out.exists()


def test_fine_tuning_starts_from_the_parent_and_records_it(tmp_path):
    from ScribbleSegLib import model_file
    from ScribbleSegLib.choices import FINETUNE_LR

    image, label = tiny_volume()
    parent_path = train_model([image], [label], tmp_path / "parent.model", TINY, options=FAST, max_iters=30,
                              seed=1, names=["first.nrrd"])
    parent = load_model(parent_path, device="cpu")
    assert parent.provenance["volumes"] == ["first.nrrd"] and parent.provenance["parent"] is None
    # The voxels learnt from, as given (before stain normalization), whatever file held them.
    as_given = {"image": model_file.array_sha256(getattr(image, "array", image)),
                "label": model_file.array_sha256((np.asarray(label) > 0).astype(np.uint8))}
    assert parent.provenance["data_sha256"] == [as_given] and parent.provenance["validation_sha256"] == []
    other_image, other_label = tiny_volume(seed=3)
    # Zero steps' worth of change would be the parent itself: the child starts from its weights, so its first
    # validation loss is close to the parent's last, far below a fresh network's.
    child_path = train_model([other_image], [other_label], tmp_path / "child.model", options=FAST, max_iters=10,
                             seed=2, init=parent_path, names=["second.nrrd"], provenance={"command": "test"})
    child = load_model(child_path, device="cpu")
    fresh = load_model(train_model([other_image], [other_label], tmp_path / "fresh.model", TINY, options=FAST,
                                   max_iters=10, seed=2), device="cpu")
    assert child.config == parent.config
    assert child.meta["training"]["history"][0][2] < 0.8 * fresh.meta["training"]["history"][0][2]
    record = child.provenance
    assert record["volumes"] == ["second.nrrd"] and record["steps"] == 10 and record["command"] == "test"
    assert record["parent"]["file"] == "parent.model"
    assert record["parent"]["sha256"] == model_file.file_sha256(parent_path)
    assert record["parent"]["provenance"]["volumes"] == ["first.nrrd"]
    assert record["data_sha256"][0]["image"] != as_given["image"]
    assert record["parent"]["provenance"]["data_sha256"] == [as_given]
    assert child.meta["training"]["fine_tuned"] is True
    # Without options, fine-tuning uses its own gentler learning rate.
    assert child.meta["training"]["options"]["lr"] == FAST.lr
    default = load_model(train_model([other_image], [other_label], tmp_path / "d.model", max_iters=1,
                                     init=parent, options=None), device="cpu")
    assert default.meta["training"]["options"]["lr"] == FINETUNE_LR
    # The bank is the child's own: features of the new volume through the fine-tuned network.
    assert not np.array_equal(child.bank_features[:5], parent.bank_features[:5])
    with pytest.raises(ScribbleSegError, match="parent's architecture"):
        train_model([other_image], [other_label], tmp_path / "x.model", ModelConfig.small("unet"), init=parent)


def test_train_command_fine_tunes_with_init(tmp_path, capsys):
    from ScribbleSegLib import volume_io

    image, label = tiny_volume(shape=(5, 24, 24))
    volume_io.write_rgb_volume(tmp_path / "img.nrrd", image)
    volume_io.write_labelmap(tmp_path / "lab.nrrd", label, image.geometry)
    parent = train_model([image], [label], tmp_path / "parent.model", TINY, options=FAST, max_iters=2)
    out = tmp_path / "child.model"
    args = ["train", "--images", str(tmp_path / "img.nrrd"), "--labels", str(tmp_path / "lab.nrrd"),
            "--out", str(out), "--init", str(parent), "--max-iters", "3", "--quiet", "--no-stain-normalization"]
    assert main(args) == 0
    child = load_model(out, device="cpu")
    assert child.config == TINY
    assert child.provenance["steps"] == 3 and child.provenance["parent"]["file"] == "parent.model"
    assert child.provenance["volumes"] == [f"{tmp_path / 'img.nrrd'} (label {tmp_path / 'lab.nrrd'})"]
    out.unlink()
    assert main(args + ["--config", "paper"]) == 2
    assert "keeps the size of its parent" in capsys.readouterr().err and not out.exists()
    # The parent's own size is taken, as --arch with its architecture is (the starter is a small M-Unet).
    starter = list(args)
    starter[starter.index("--init") + 1] = "starter"
    starter.remove("--no-stain-normalization")
    assert main(starter + ["--config", "small", "--arch", "munet", "--max-iters", "1"]) == 0
    assert load_model(out, device="cpu").config == ModelConfig.small("munet")
    out.unlink()
    capsys.readouterr()
    bad = list(args)
    bad[bad.index("--init") + 1] = str(tmp_path / "missing.model")
    assert main(bad) == 2
    assert "missing.model: no such model file" in capsys.readouterr().err and not out.exists()


def test_a_fine_tune_of_a_parent_with_a_reference_stain_refuses_to_train_without_it(tmp_path, capsys):
    # It trained on raw colours and kept the parent's reference stain, in which segment then rendered every image.
    from ScribbleSegLib import volume_io
    from ScribbleSegLib.starter import resolve_model

    starter = resolve_model("starter")
    assert load_model(starter, device="cpu").stain is not None
    image, label = tiny_volume(shape=(5, 24, 24))
    with pytest.raises(ScribbleSegError, match="options.normalize: a fine-tuned model keeps its parent's reference"):
        train_model([image], [label], tmp_path / "child.model", options=FAST, init=starter, max_iters=1)
    volume_io.write_rgb_volume(tmp_path / "img.nrrd", image)
    volume_io.write_labelmap(tmp_path / "lab.nrrd", label, image.geometry)
    args = ["train", "--images", str(tmp_path / "img.nrrd"), "--labels", str(tmp_path / "lab.nrrd"),
            "--out", str(tmp_path / "child.model"), "--init", "starter", "--max-iters", "1", "--quiet"]
    assert main(args + ["--no-stain-normalization"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "--no-stain-normalization: a fine-tuned model keeps the reference stain" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nrrd", "lab.nrrd"]


def test_train_command_takes_every_repeated_images_flag_and_labels_that_follow_downsample(tmp_path, capsys):
    """``--images a --images b`` trains on both (argparse kept only the last); a label made on the image
    file's own grid follows ``--downsample`` and ``--spacing`` as the image does."""
    from ScribbleSegLib import volume_io

    paths = []
    for k in range(2):
        image, label = tiny_volume(seed=k, shape=(5, 24, 24))
        volume_io.write_rgb_volume(tmp_path / f"img{k}.nrrd", image)
        volume_io.write_labelmap(tmp_path / f"lab{k}.nrrd", label, image.geometry)
        paths.append((str(tmp_path / f"img{k}.nrrd"), str(tmp_path / f"lab{k}.nrrd")))
    out = tmp_path / "m.model"
    common = ["--out", str(out), "--arch", "unet", "--max-iters", "1", "--quiet", "--no-stain-normalization"]
    assert main(["train", "--images", paths[0][0], "--labels", paths[0][1], "--images", paths[1][0],
                 "--labels", paths[1][1]] + common) == 0
    assert [v.split(" ")[0] for v in load_model(out, device="cpu").provenance["volumes"]] == [p for p, _ in paths]
    for extra in (["--downsample", "2"], ["--spacing", "0.02", "0.02", "0.1"]):
        out.unlink()
        assert main(["train", "--images", paths[0][0], "--labels", paths[0][1]] + common + extra) == 0, \
            capsys.readouterr().err
    capsys.readouterr()
    # A label on neither grid is still refused, with its own reading's message.
    image, label = tiny_volume(shape=(5, 24, 24))
    volume_io.write_labelmap(tmp_path / "elsewhere.nrrd", label, Geometry((0.7, 0.7, 0.7)))
    out.unlink()
    assert main(["train", "--images", paths[0][0], "--labels", str(tmp_path / "elsewhere.nrrd")] + common
                + ["--downsample", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "elsewhere.nrrd" in err and not out.exists()


def test_a_folders_full_size_label_follows_downsample_and_another_stacks_label_is_refused(tmp_path):
    """A label of a section folder read with ``--spacing`` and ``--downsample 2`` at full size (on the folder read
    whole) was refused with advice to use ``--downsample 2``; a smaller label of another stack (1 mm, origin 0) was
    pasted into the folder's corner as if it were a crop."""
    import SimpleITK as sitk

    from ScribbleSegLib import volume_io
    from ScribbleSegLib.training_files import read_training_pair

    image, label = tiny_volume(seed=3, shape=(4, 32, 32))
    folder = tmp_path / "sections"
    folder.mkdir()
    for k, section in enumerate(image.array):
        sitk.WriteImage(sitk.GetImageFromArray(section, isVector=True), str(folder / f"s{k + 1}.png"))
    spacing = (0.01, 0.01, 0.05)
    volume_io.write_labelmap(tmp_path / "whole.nrrd", label, Geometry(spacing))
    read, reduced = read_training_pair(folder, tmp_path / "whole.nrrd", spacing=spacing, downsample=2)
    assert read.shape[:3] == reduced.shape == (4, 16, 16)
    assert np.array_equal(reduced, volume_io.reduce_label_volume(Volume(label, Geometry(spacing)), 2).array)
    volume_io.write_labelmap(tmp_path / "other.nrrd", label[:3, :24, :24], Geometry((1, 1, 1)))
    with pytest.raises(ScribbleSegError, match="other.nrrd: does not match the image"):
        read_training_pair(folder, tmp_path / "other.nrrd", spacing=spacing)


def test_train_command_refuses_a_disk_too_small_for_the_model_before_training(tmp_path, capsys, monkeypatch):
    from ScribbleSegLib import fileio, training, volume_io
    from ScribbleSegLib.model_file import expected_model_bytes

    image, label = tiny_volume(shape=(5, 24, 24))
    volume_io.write_rgb_volume(tmp_path / "img.nrrd", image)
    volume_io.write_labelmap(tmp_path / "lab.nrrd", label, image.geometry)
    needed = expected_model_bytes(ModelConfig.preset("small", "munet"), 2 * TrainOptions().bank_per_class)
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: needed // 2)
    monkeypatch.setattr(training, "train_model", lambda *a, **k: pytest.fail("trained on a full disk"))
    assert main(["train", "--images", str(tmp_path / "img.nrrd"), "--labels", str(tmp_path / "lab.nrrd"),
                 "--out", str(tmp_path / "m.model"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disk full writing" in err and "m.model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nrrd", "lab.nrrd"]


def test_train_command_refuses_a_batch_too_large_for_the_memory_in_one_line(tmp_path, capsys, monkeypatch):
    # --batch 100000 was killed by the OS half-way, with no word: the step's memory is checked first.
    from ScribbleSegLib import resources, stain_volume, volume_io

    image, label = tiny_volume(shape=(5, 48, 48))
    volume_io.write_rgb_volume(tmp_path / "img.nrrd", image)
    volume_io.write_labelmap(tmp_path / "lab.nrrd", label, image.geometry)
    monkeypatch.setattr(stain_volume, "fit_reference", lambda *a, **k: pytest.fail("fitted a stain before the check"))
    monkeypatch.setattr(resources, "available_memory", lambda: 16 * 2**30)
    args = ["train", "--images", str(tmp_path / "img.nrrd"), "--labels", str(tmp_path / "lab.nrrd"),
            "--out", str(tmp_path / "m.model"), "--device", "cpu", "--quiet"]
    assert main(args + ["--batch", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training with --batch 100000 needs about" in err
    assert "16.0 GB available; use a smaller --batch" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nrrd", "lab.nrrd"]


def test_the_training_step_estimate_grows_with_the_batch_and_bounds_a_measured_step():
    # A step of 8 patches of the small M-Unet raised the peak by 145-175 MiB (benchmarks/bench_train_memory.py,
    # BENCHMARKS.md): the estimate holds it without being several times over.
    from ScribbleSegLib.training import step_bytes

    config = ModelConfig.preset("small", "munet")
    small, large = (step_bytes(config, TrainOptions(batch=b, augment=False)) for b in (8, 64))
    assert 175 * 2**20 <= small <= 600 * 2**20
    assert 7 * small < large < 8.5 * small


def test_expected_model_bytes_is_close_to_the_written_file(tmp_path):
    from ScribbleSegLib.model_file import expected_model_bytes

    image, label = tiny_volume()
    path = train_model([image], [label], tmp_path / "m.model", TINY, options=FAST, max_iters=1)
    bank = len(load_model(path, device="cpu").bank_labels)
    size = path.stat().st_size
    assert size <= expected_model_bytes(TINY, bank) <= size + (128 << 10)


def test_scribbles_given_as_a_training_label_get_one_warning(tmp_path, caplog):
    # Every value > 0 is heart: background strokes would be taught as heart, a few strokes as the whole heart.
    import logging

    from ScribbleSegLib import volume_io
    from ScribbleSegLib.training_files import read_training_pair

    image, label = tiny_volume()
    volume_io.write_rgb_volume(tmp_path / "i.nrrd", image)
    strokes = np.zeros_like(label)
    strokes[2, 20, 15:25] = 1
    strokes[2, 2, :] = 2
    volume_io.write_labelmap(tmp_path / "strokes.nrrd", strokes, image.geometry)
    volume_io.write_segmentation(tmp_path / "strokes.seg.nrrd", [("heart", strokes == 1, volume_io.HEART_COLOR),
                                 ("background", strokes == 2, volume_io.BACKGROUND_COLOR)], image.geometry)
    volume_io.write_labelmap(tmp_path / "label.nrrd", label * 255, image.geometry)
    for name, why in (("strokes.nrrd", "its values are 0, 1 and 2"), ("strokes.seg.nrrd", "a 'background' segment"),
                      ("label.nrrd", None)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ScribbleSegLib"):
            read_training_pair(tmp_path / "i.nrrd", tmp_path / name)
        warnings = [r.getMessage() for r in caplog.records if "looks like scribbles" in r.getMessage()]
        assert (warnings == []) if why is None else (len(warnings) == 1 and why in warnings[0]), (name, warnings)


def test_a_heart_that_vanishes_when_read_downsampled_is_named_so_not_an_empty_label(tmp_path):
    # "marks no heart voxel (all zero)" blamed the label file; its heart, thinner than the blocks, was lost.
    from ScribbleSegLib import volume_io
    from ScribbleSegLib.training_files import read_training_pair

    image, label = tiny_volume()
    volume_io.write_rgb_volume(tmp_path / "i.nrrd", image)
    thin = np.zeros_like(label)
    thin[:, 10, 10:20] = 1  # a line one pixel wide: no 4x4 block is half heart
    volume_io.write_labelmap(tmp_path / "thin.nrrd", thin, image.geometry)
    volume_io.write_labelmap(tmp_path / "empty.nrrd", np.zeros_like(label), image.geometry)
    with pytest.raises(ScribbleSegError, match=r"thin.nrrd: its heart \(%d voxels\) vanishes when read downsampled "
                       r"by 4 .*give a smaller downsample" % int(thin.sum())):
        read_training_pair(tmp_path / "i.nrrd", tmp_path / "thin.nrrd", downsample=4)
    _, kept = read_training_pair(tmp_path / "i.nrrd", tmp_path / "thin.nrrd", downsample=1)
    assert kept.sum() == thin.sum()
    _, empty = read_training_pair(tmp_path / "i.nrrd", tmp_path / "empty.nrrd", downsample=4)
    assert not empty.any()  # an empty label stays the label set's question (background-only volumes are allowed)


def test_tiles_read_without_a_spacing_give_one_note_per_pixel_size(tmp_path, caplog):
    import SimpleITK as sitk

    from ScribbleSegLib.training_files import read_training_pairs

    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(4):
        tile = sitk.GetImageFromArray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8), isVector=True)
        if i == 3:
            tile.SetSpacing((0.5, 0.5))  # a TIFF-like file that states another pixel size
        images.append(tmp_path / (f"t{i}.png" if i < 3 else "t3.nrrd"))
        sitk.WriteImage(tile, str(images[-1]))
        labels.append(tmp_path / f"l{i}.png")
        sitk.WriteImage(sitk.GetImageFromArray((rng.random((16, 20)) > 0.5).astype(np.uint8) * 255), str(labels[-1]))
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        volumes, _ = read_training_pairs(images, labels)
    assert [v.geometry.spacing[:2] for v in volumes] == [(1.0, 1.0)] * 3 + [(0.5, 0.5)]
    notes = [r.getMessage() for r in caplog.records if "no spacing given" in r.getMessage()]
    assert len(notes) == 3, notes
    assert "t0.png" in notes[0] and "1 x 1 mm" in notes[0]
    assert "t3.nrrd" in notes[1] and "0.5 x 0.5 mm" in notes[1]
    assert notes[2] == "2 more 2D files with no spacing given were read the same way"
    caplog.clear()
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        read_training_pairs(images[:2], labels[:2])
    assert caplog.records[-1].getMessage() == \
        "1 more 2D file with no spacing given was read the same way"
    # The filter is gone afterwards: a single read still says it.
    caplog.clear()
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        read_training_pairs(images[:1], labels[:1])
    assert len([r for r in caplog.records if "no spacing given" in r.getMessage()]) == 1


def test_patches_far_larger_than_the_sections_get_one_warning(tmp_path, caplog):
    import dataclasses
    import logging

    from ScribbleSegLib.geometry import Volume

    image, label = tiny_volume()  # 40x40 sections
    big = dataclasses.replace(TINY, patch=96)
    with caplog.at_level(logging.WARNING, logger="ScribbleSegLib"):
        train_model([image], [label], tmp_path / "m.model", big, options=FAST, max_iters=1)
    assert [r.getMessage() for r in caplog.records if "patches" in r.getMessage()] == [
        "the network's training patches (96 pixels) are over twice the sections' size (40 pixels): most of each "
        "patch is padding; the small preset fits these volumes"]
    # With the small preset's own patches, no smaller preset exists: the sections are what is small.
    smallest = dataclasses.replace(TINY, patch=ModelConfig.small().patch)
    crop = (slice(None), slice(8, 32), slice(8, 32))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ScribbleSegLib"):
        train_model([Volume(image.array[crop], image.geometry)], [label[crop]], tmp_path / "m.model", smallest,
                    options=FAST, max_iters=1)
    assert [r.getMessage() for r in caplog.records if "patches" in r.getMessage()] == [
        f"the network's training patches ({smallest.patch} pixels) are over twice the sections' size (24 pixels): "
        "most of each patch is padding; larger sections fit it better (read them downsampled less)"]


def test_a_fine_tune_is_said_to_diverge_against_where_its_parent_started(tmp_path, monkeypatch):
    # A parent far from the new volumes may start above an untrained network's loss: that alone is no divergence.
    from ScribbleSegLib import training

    image, label = tiny_volume()
    parent = train_model([image], [label], tmp_path / "p.model", TINY, options=FAST, max_iters=2)
    losses = iter([5.0] + [4.0] * 50)  # the parent's start on these volumes, then every evaluation
    monkeypatch.setattr(training, "_validate", lambda *args, **kwargs: next(losses))
    out = train_model([image], [label], tmp_path / "f.model", options=FAST, max_iters=10, init=parent)
    assert out.exists()
    losses = iter([0.5] + [40.0] * 50)
    with pytest.raises(ScribbleSegError, match=r"training diverged \(best validation loss 40; the parent's was 0.5\)"):
        train_model([image], [label], tmp_path / "g.model", options=FAST, max_iters=10, init=parent)
    assert not (tmp_path / "g.model").exists()


def test_a_short_training_that_learnt_nothing_says_so(tmp_path, monkeypatch, caplog):
    # max_iters 3 wrote a model no better than a constant guess without a word: the "did not learn" check
    # starts at the first evaluation (eval_every steps).
    from ScribbleSegLib import training

    image, label = tiny_volume()
    monkeypatch.setattr(training, "_validate", lambda *args, **kwargs: 1.0)  # above any guess, not diverged
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        assert train_model([image], [label], tmp_path / "m.model", TINY, options=FAST, max_iters=3).exists()
    (line,) = [r.getMessage() for r in caplog.records if "training" in r.getMessage()]
    assert line.startswith("training stopped at step 3, before it learnt anything (best validation loss 1, no better "
                           "than") and line.endswith("give it more steps (max_iters)")


def test_a_few_steps_that_have_not_learnt_yet_warn_instead_of_calling_it_a_divergence(tmp_path, monkeypatch, caplog):
    # One step from scratch left the validation loss at 2.1, above twice an untrained network's: the user asked
    # for one step, and nothing diverged.
    from ScribbleSegLib import training

    image, label = tiny_volume()
    monkeypatch.setattr(training, "_validate", lambda *args, **kwargs: 5.0)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        out = train_model([image], [label], tmp_path / "m.model", TINY, options=FAST, max_iters=2)
    assert out.exists()
    (line,) = [r.getMessage() for r in caplog.records if "too few to learn" in r.getMessage()]
    assert line.startswith("training stopped at step 2, too few to learn") and "max_iters" in line
    with pytest.raises(ScribbleSegError, match=r"training diverged \(best validation loss 5"):  # as many as it checks
        train_model([image], [label], tmp_path / "n.model", TINY, options=FAST, max_iters=10)
    assert not (tmp_path / "n.model").exists()


@pytest.mark.parametrize("spacing, words", [
    ((1.0, 1.0, 1.0), "the training volumes state no pixel size (1 mm, what a PNG says), and the parent model "
                      "learnt at 0.01 mm"),
    ((0.05, 0.05, 0.05), "the training volumes' pixel size 0.05 mm is 5x the parent model's 0.01 mm"),
    ((0.0002, 0.0002, 0.05), "the training volumes' pixel size 0.0002 mm is 0.02x the parent model's 0.01 mm"),
    ((0.0105, 0.0105, 0.05), None),
])
def test_a_fine_tune_on_volumes_of_another_pixel_size_says_so(tmp_path, caplog, spacing, words):
    # A fine-tune of the starter model on PNG tiles (1 mm as read) learnt them at their own scale, without a word.
    image, label = tiny_volume()
    parent = train_model([image], [label], tmp_path / "p.model", TINY, options=FAST, max_iters=1)
    other = Volume(image.array, Geometry(spacing))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        train_model([other], [label], tmp_path / "f.model", options=FAST, max_iters=1, init=parent)
    said = [r.getMessage() for r in caplog.records if "parent model" in r.getMessage()]
    if words is None:
        assert said == []
    else:
        assert len(said) == 1 and words in said[0], said


def test_tiles_without_a_pixel_size_beside_stacks_with_one_leave_the_models_pixel_size_to_the_stacks(caplog):
    # A PNG tile is read at 1 mm: beside stacks of 0.04 mm the model recorded the median, 0.52 mm, and every stack
    # then ran at the wrong scale.
    from ScribbleSegLib import training

    image = np.zeros((1, 4, 4, 3), np.uint8)
    tile = Volume(image, Geometry((1.0, 1.0, 1.0)))
    stack = Volume(image, Geometry((0.04, 0.04, 0.08)))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        assert training._voxel_size([tile, stack]) == pytest.approx((0.04, 0.04, 0.08))
    message, = [r.getMessage() for r in caplog.records]
    assert "1 of the 2 training images state no pixel size" in message and "median 0.04 mm" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):  # 0.62 for 0.62 um: recorded, and asked about
        assert training._voxel_size([Volume(image, Geometry((0.62, 0.62, 0.62)))]) == pytest.approx((0.62,) * 3)
    assert ["micrometres? It is in mm (0.62 um is 0.00062 mm)" in r.getMessage() for r in caplog.records] == [True]
    caplog.clear()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):  # tiles alone: as before, and nothing to say
        assert training._voxel_size([tile, tile]) == pytest.approx((1.0, 1.0, 1.0))
    assert not caplog.records


@pytest.mark.parametrize("value, words", [(np.nan, "NaN or infinite"), (-1, r"negative values \(down to -1\)")])
def test_a_label_array_with_nan_or_negative_values_is_refused(tmp_path, value, words):
    # NaN counted as background without a word, and a label of -1 and 0 was called "all zero".
    from ScribbleSegLib import training

    image = np.zeros((1, 8, 8, 3), np.uint8)
    label = np.zeros((1, 8, 8), np.float32)
    label[0, 2:5, 2:5] = 1
    label[0, 0, 0] = value
    with pytest.raises(ScribbleSegError, match=words):
        training.train_model([image], [label], tmp_path / "m.model", max_iters=1)
    assert not (tmp_path / "m.model").exists()


def test_train_model_takes_a_grey_array_as_segment_does(tmp_path):
    # pipeline.segment and the command line take grey images; train_model refused them.
    image, label = tiny_volume()
    grey = image.array[..., 1].copy()
    path = train_model([grey], [label], tmp_path / "m.model", TINY, options=FAST, max_iters=2)
    assert load_model(path).config == TINY


def test_a_time_budget_leaves_room_for_the_validation_after_the_last_step(tmp_path, monkeypatch):
    # A paper-sized network on a CPU: each validation took minutes, and the budget was only looked at after it.
    from ScribbleSegLib import training

    clock = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    step, validate = training.backward_step, training._validate

    def slow_step(*args, **kwargs):
        clock[0] += 1.0  # a step: 1 s
        return step(*args, **kwargs)

    def slow_validation(*args, **kwargs):
        clock[0] += 12.0  # a validation: 12 s
        return validate(*args, **kwargs)

    monkeypatch.setattr(training, "backward_step", slow_step)
    monkeypatch.setattr(training, "_validate", slow_validation)
    image, label = tiny_volume()
    options = TrainOptions(**{**FAST.__dict__, "eval_every": 5, "patience": 100})
    clock[0] = 0.0
    path = train_model([image], [label], tmp_path / "m.model", TINY, options=options, max_iters=100,
                       max_minutes=0.5)
    training_meta = load_model(path).meta["training"]
    assert training_meta["stopped_by"] == "time budget"
    # Steps 1-5, a validation (17 s), step 6 (18 s): another step and its validation would end at 31 s, so the
    # loop stops and validates step 6 (30 s). Before, it ran to step 11 and validated it: 47 s.
    assert clock[0] <= 30.0 + 1e-9, clock[0]
    assert training_meta["steps"] == 6


def test_tiles_beside_stacks_leave_the_section_spacing_to_the_stacks(tmp_path):
    # A tile's 1 mm between sections (it has one) made a model trained beside 0.05 mm stacks record 0.525 mm.
    image, label = tiny_volume()
    tile = Volume(image.array[2:3].copy(), Geometry((0.01, 0.01, 1.0)))
    path = train_model([image, tile], [label, label[2:3]], tmp_path / "m.model", TINY, options=FAST, max_iters=1)
    assert load_model(path).voxel_size == pytest.approx((0.01, 0.01, 0.05))
    alone = train_model([tile], [label[2:3]], tmp_path / "t.model", TINY, options=FAST, max_iters=1)
    assert load_model(alone).voxel_size == pytest.approx((0.01, 0.01, 1.0))  # tiles alone: nothing says more


def test_a_count_mismatch_of_images_and_labels_is_said_in_good_english():
    from ScribbleSegLib.training_files import check_pairs

    with pytest.raises(ScribbleSegError, match=r"^--val-images and --val-labels: 2 images but 1 label$"):
        check_pairs(["a.nrrd", "b.nrrd"], ["c.nrrd"], ("--val-images", "--val-labels"))


def test_a_label_marking_most_voxels_as_heart_asks_whether_it_is_inverted(caplog):
    # An inverted mask (heart black, glass and tissue white) trained without a word.
    inverted = np.ones((2, 10, 10), np.uint8)
    inverted[:, 3:5, 3:5] = 0
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        check_label_set([inverted, 1 - inverted], ["inv.png", "ok.png"])
    assert [r.getMessage() for r in caplog.records] == [
        "inv.png: the label marks 96% of the voxels as heart: is the mask inverted (heart black)?"]


def test_a_label_drawn_on_the_stack_at_twice_the_resolution_says_how_to_train_on_it(tmp_path):
    # A label on a 2x finer grid (each image voxel 2x2 of its voxels) is refused, as a label is not placed by
    # centres; the message says what works: the full-resolution stack read with downsample 2 reduces the label.
    from ScribbleSegLib import volume_io
    from ScribbleSegLib.training_files import read_training_pair

    image, label = tiny_volume()
    full = Volume(np.repeat(np.repeat(image.array, 2, 1), 2, 2), image.geometry.scaled((0.5, 0.5, 1)))
    fine = np.repeat(np.repeat(label, 2, 1), 2, 2)
    volume_io.write_rgb_volume(tmp_path / "small.nrrd", image)
    volume_io.write_rgb_volume(tmp_path / "full.nrrd", full)
    volume_io.write_labelmap(tmp_path / "fine.nrrd", fine, full.geometry)
    with pytest.raises(ScribbleSegError) as refused:
        read_training_pair(tmp_path / "small.nrrd", tmp_path / "fine.nrrd")
    message = str(refused.value)
    assert "fine.nrrd: does not match the image" in message and "2x2 voxels in-plane" in message
    assert "read with downsample 2" in message and len(message.splitlines()) == 1
    read, reduced = read_training_pair(tmp_path / "full.nrrd", tmp_path / "fine.nrrd", downsample=2)
    assert read.shape[:3] == label.shape
    np.testing.assert_array_equal(reduced, label)


def test_the_stain_notes_of_several_training_volumes_say_which_volume(tmp_path, caplog):
    # Each volume's stain normalization logs its own note; with several volumes the same line came once per volume
    # without saying which.
    (a, label_a), (b, label_b) = tiny_volume(1), tiny_volume(2)
    options = dataclasses.replace(FAST, normalize=True)
    with caplog.at_level("DEBUG", logger="ScribbleSegLib"):
        train_model([a, b], [label_a, label_b], tmp_path / "m.model", TINY, options=options, max_iters=1)
    notes = [r.getMessage() for r in caplog.records if "sections give too few tissue pixels" in r.getMessage()]
    assert [n.split(":")[0] for n in notes] == ["stain normalization of training volume 1 of 2",
                                                "stain normalization of training volume 2 of 2"], notes


def test_training_on_tiles_without_validation_says_early_stopping_watches_the_training_patches(tmp_path, caplog):
    # With tiles only (no volume of 5 sections to hold a fifth of it out) and no validation volumes, validation fell
    # back to the training patches without a word.
    from ScribbleSegLib.cli import _one_line
    from ScribbleSegLib.commands.train import PARAMETER_FLAGS

    tiles = [tiny_volume(seed=k, shape=(1, 40, 40)) for k in range(2)]
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        train_model([t for t, _ in tiles], [l for _, l in tiles], tmp_path / "m.model", TINY, options=FAST, max_iters=1)
    said = [r.getMessage() for r in caplog.records if "early stopping watches the training patches" in r.getMessage()]
    assert len(said) == 1 and "val_images" in said[0]
    assert "--val-images" in _one_line(said[0], PARAMETER_FLAGS)
    caplog.clear()
    assert "no training volume of 5 or more sections" in said[0]
    caplog.clear()
    image, label = tiny_volume()  # 6 sections: a fifth is held out
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        train_model([image], [label], tmp_path / "n.model", TINY, options=FAST, max_iters=1)
    assert not [r for r in caplog.records if "early stopping" in r.getMessage()]
    # Held-out sections without heart (traced on a few sections only) were told there was no volume of 5 sections.
    traced = label.copy()
    traced[[2]] = 0  # the held-out section of 6 (every 5th from the 3rd)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        train_model([image], [traced], tmp_path / "o.model", TINY, options=FAST, max_iters=1)
    said = [r.getMessage() for r in caplog.records if "early stopping watches" in r.getMessage()]
    assert len(said) == 1 and "held-out sections (every 5th from the 3rd) hold no heart" in said[0]


def test_an_interrupted_training_says_that_only_a_finished_one_writes_a_model(tmp_path, capsys, monkeypatch):
    # Ctrl-C after half an hour said "interrupted" alone: no word that nothing was kept, nor how to stop early.
    from ScribbleSegLib import cli
    from ScribbleSegLib.commands import train as train_command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run", interrupted)
    status = cli.main(["train", "--images", str(tmp_path / "a.nrrd"), "--labels", str(tmp_path / "b.nrrd"),
                       "--out", str(tmp_path / "m.model")])
    err = capsys.readouterr().err.strip()
    assert status == 130 and err.startswith("scribbleseg train: interrupted; a model is written only when training")
    assert "--max-minutes" in err and "\n" not in err


def test_an_interrupt_after_the_model_is_in_place_says_it_was_written(tmp_path, capsys, monkeypatch):
    # A signal just after the rename ended with "a model is written only when training ends" beside a whole model.
    from ScribbleSegLib import cli, training_files, volume_io

    image, label = tiny_volume(shape=(5, 24, 24))
    volume_io.write_rgb_volume(tmp_path / "img.nrrd", image)
    volume_io.write_labelmap(tmp_path / "lab.nrrd", label, image.geometry)
    out = tmp_path / "m.model"
    args = ["train", "--images", str(tmp_path / "img.nrrd"), "--labels", str(tmp_path / "lab.nrrd"),
            "--out", str(out), "--quiet"]
    for writes in (True, False):
        def train_then_interrupted(*_, **__):
            if writes:
                out.write_bytes(b"a whole model")
            raise KeyboardInterrupt

        monkeypatch.setattr(training_files, "train_from_files", train_then_interrupted)
        assert cli.main(args) == 130
        err = capsys.readouterr().err.strip()
        expected = f"; after the model was written whole: {out}" if writes else "; a model is written only when"
        assert err.startswith(f"scribbleseg train: interrupted{expected}"), err
        out.unlink(missing_ok=True)


def test_an_interrupt_while_a_model_file_is_written_waits_until_it_is_whole(tmp_path, monkeypatch):
    # Ctrl-C inside torch's zip writer ended in a traceback from it ("unexpected pos"), or in an abort.
    import signal

    from ScribbleSegLib import model_file
    from ScribbleSegLib.nets import build_net

    finished = []
    real_save = torch.save

    def save_interrupted(payload, f):
        signal.raise_signal(signal.SIGINT)
        real_save(payload, f)
        finished.append(True)

    monkeypatch.setattr(model_file.torch, "save", save_interrupted)
    net = build_net(TINY)
    with pytest.raises(KeyboardInterrupt):
        model_file.save_model(tmp_path / "m.model", net, TINY, voxel_size=(0.02, 0.02, 0.1))
    assert finished == [True] and list(tmp_path.iterdir()) == []


def test_a_time_budget_that_ends_before_any_validation_validates_what_time_is_left_for(tmp_path, monkeypatch):
    # A paper-sized network on a CPU stopped after its first step, then validated all 24 batches for minutes past
    # max_minutes.
    import dataclasses

    from ScribbleSegLib import training

    image, label = tiny_volume()
    validated = []
    real_validate = training._validate

    def counted(net, batches, *args, **kwargs):
        validated.append(len(batches))
        return real_validate(net, batches, *args, **kwargs)

    monkeypatch.setattr(training, "_validate", counted)
    options = dataclasses.replace(FAST, val_patches=32, batch=2, max_minutes=1e-6)  # 16 batches, no time at all
    train_model([image], [label], tmp_path / "m.model", TINY, options=options, max_iters=50)
    assert validated == [1]  # one step, then one batch
    validated.clear()
    options = dataclasses.replace(options, max_minutes=None)
    train_model([image], [label], tmp_path / "m.model", TINY, options=options, max_iters=3)
    assert validated == [16]  # without a budget, the whole validation


def test_a_label_with_sections_left_unmarked_inside_the_heart_gets_one_warning(caplog):
    # Outlined on every few sections, a stack trained with the heart of the others as background, unsaid.
    import logging

    from ScribbleSegLib.training import check_label_set

    whole = np.zeros((8, 6, 6), np.uint8)
    whole[1:7, 2:4, 2:4] = 1
    sparse = whole.copy()
    sparse[[2, 3, 5]] = 0
    tile = whole[3:4]
    with caplog.at_level(logging.WARNING, logger="ScribbleSegLib"):
        check_label_set([whole, sparse, tile], ["whole.nrrd", "sparse.nrrd", "tile.png"])
    said = [r.getMessage() for r in caplog.records if "hold none" in r.getMessage()]
    assert said == ["sparse.nrrd: 3 section(s) between sections with heart hold none (3, 4, 6): is the label "
                    "partial? Its unmarked sections are taught as background"]
