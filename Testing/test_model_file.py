"""The model file (model_file.py): round trip, and refusal of damaged or hostile files."""

import os
import pickle

import numpy as np
import pytest
import torch

from ScribbleSegLib import model_file
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.model_file import load_model, save_model
from ScribbleSegLib.nets import ModelConfig, build_net

TINY = dict(patch=32, width=4, depth=3, aggregator=(8,), feature_channels=8)
# Unit-norm stain vectors, as every fitted stain has (a model whose stain has others is refused as damaged).
_VECTORS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
STAIN = {"method": "vahadane", "stain_matrix": (_VECTORS / np.linalg.norm(_VECTORS, axis=1, keepdims=True)).tolist(),
         "max_concentrations": [1.5, 1.2], "luminosity_threshold": 0.8, "dictionary_lambda": 0.1,
         "concentration_method": "nnls", "lasso_lambda": 0.01}


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(weighting=True, **TINY)
    net = build_net(config)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(50, 8)).astype(np.float32)
    labels = (np.arange(50) % 2).astype(np.uint8)
    path = save_model(tmp_path / "m.model", net, config, stain=STAIN, voxel_size=(0.01, 0.01, 0.05),
                      bank_features=feats, bank_labels=labels, training={"steps": 3})
    return path, net, config, feats, labels


def as_before_the_checksum(payload):
    """The payload as a model file written before the checksum holds it: what load then checks on its own."""
    import json

    meta = json.loads(payload["meta"])
    meta.pop("checksum")
    return dict(payload, meta=json.dumps(meta))


def test_round_trip(saved):
    path, net, config, feats, labels = saved
    model = load_model(path, device="cpu")
    assert model.config == config
    assert model.stain == STAIN
    assert model.voxel_size == (0.01, 0.01, 0.05)
    assert model.feature_channels == 8
    assert model.device == torch.device("cpu")
    assert model.bank_features.dtype == np.float32 and model.bank_features.shape == (50, 8)
    np.testing.assert_allclose(model.bank_features, feats, atol=1e-2)  # stored as float16
    assert model.bank_labels.dtype == np.uint8 and np.array_equal(model.bank_labels, labels)
    assert model.meta["training"] == {"steps": 3}
    assert not model.net.training
    for (k, a), b in zip(net.state_dict().items(), model.net.state_dict().values()):
        assert torch.equal(a, b), k


def test_save_is_atomic_and_checks_the_bank(tmp_path):
    config = ModelConfig(**TINY)
    with pytest.raises(ScribbleSegError, match="bank"):
        save_model(tmp_path / "m.model", build_net(config), config, bank_features=np.zeros((3, 5)),
                   bank_labels=np.zeros(3))
    with pytest.raises(ScribbleSegError, match="does not exist"):
        save_model(tmp_path / "no" / "m.model", build_net(config), config)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, words", [
    # Each was once saved without a word and then refused by load_model, or failed later.
    ({"voxel_size": (0.02, 0.02)}, "voxel_size must be three positive numbers"),
    ({"voxel_size": (float("nan"), 1, 1)}, "voxel_size must be three positive numbers"),
    ({"bank_features": np.full((4, 8), 1e6)}, "bank_features must be finite and within float16's range"),
    ({"bank_labels": np.full(4, 0.5)}, "bank_labels must be 0 (background) or 1 (heart)"),  # once: all background
    ({"net": build_net(ModelConfig(**dict(TINY, width=6)))}, "net does not fit config"),
    ({"config": TINY}, "config must be a ModelConfig, got dict"),
    ({"training": {"when": object()}}, "must be plain JSON data"),
])
def test_save_refuses_what_load_would_call_damaged(tmp_path, change, words):
    config = ModelConfig(**TINY)
    arguments = {"net": build_net(config), "config": config, "voxel_size": (0.01, 0.01, 0.05),
                 "bank_features": np.zeros((4, 8), np.float32), "bank_labels": np.zeros(4, np.uint8), **change}
    with pytest.raises(ScribbleSegError) as excinfo:
        save_model(tmp_path / "m.model", arguments.pop("net"), arguments.pop("config"), **arguments)
    assert words in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_refused(saved, tmp_path):
    data = saved[0].read_bytes()
    for n in (0, 10, len(data) // 2, len(data) - 100):
        bad = tmp_path / f"cut{n}.model"
        bad.write_bytes(data[:n])
        with pytest.raises(ScribbleSegError, match=r"cut\d+\.model: .*truncated or corrupt"):
            load_model(bad)


def test_other_format_version_is_refused(tmp_path):
    newer = model_file.FORMAT_VERSION + 1
    path = tmp_path / "newer.model"
    torch.save({"format": model_file.FORMAT, "format_version": newer}, path)
    with pytest.raises(ScribbleSegError, match=f"newer.model: model file format version {newer};.*update"):
        load_model(path)
    torch.save({"format": model_file.FORMAT, "format_version": 0}, path)
    with pytest.raises(ScribbleSegError, match="format version 0"):
        load_model(path)


def test_a_format_1_file_still_loads_with_an_empty_provenance(saved, tmp_path):
    # Format 1 had no provenance: what a model file written before format 2 looks like.
    payload = torch.load(saved[0], weights_only=True)
    meta = __import__("json").loads(payload["meta"])
    del meta["provenance"]
    payload.update(format_version=1, meta=__import__("json").dumps(meta))
    old = tmp_path / "old.model"
    torch.save(payload, old)
    model = load_model(old, device="cpu")
    assert model.provenance == {}
    assert model.meta["format_version"] == 1
    assert model.meta["training"] == {"steps": 3}


def test_provenance_is_saved_and_chains_to_the_parent(saved, tmp_path):
    path, net, config, feats, labels = saved
    parent = load_model(path, device="cpu")
    assert parent.meta["format_version"] == model_file.FORMAT_VERSION
    record = model_file.make_provenance(["embryo7.nrrd"], 120, parent=parent, command="test")
    child = save_model(tmp_path / "child.model", net, config, bank_features=feats, bank_labels=labels,
                       provenance=record)
    loaded = load_model(child, device="cpu").provenance
    assert loaded["volumes"] == ["embryo7.nrrd"] and loaded["steps"] == 120 and loaded["command"] == "test"
    assert loaded["parent"]["file"] == "m.model"
    assert loaded["parent"]["sha256"] == model_file.file_sha256(path)
    assert loaded["generation"] == 1
    grandchild = model_file.make_provenance(["embryo8.nrrd"], 50, parent=load_model(child, device="cpu"))
    assert grandchild["generation"] == 2
    assert grandchild["parent"]["provenance"]["parent"]["file"] == "m.model"


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, plain)
    with pytest.raises(ScribbleSegError, match="not a ScribbleSeg model file"):
        load_model(plain)
    with pytest.raises(ScribbleSegError, match="no such model file"):
        load_model(tmp_path / "missing.model")
    with pytest.raises(ScribbleSegError, match="is a folder, not a model file"):  # it was called missing
        load_model(tmp_path)
    # Neither torch's zip archive nor a pickle: torch's unpickler would call it unsafe, but it is no model.
    # Shorter than 4 bytes too: "{}" was called "Python objects other than tensors".
    for name, data in (("notes.model", b"not a model\n"), ("image.model", b"\x89PNG\r\n\x1a\n" + bytes(64)),
                       ("json.model", b"{}\n")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ScribbleSegError, match=f"{name}: not a ScribbleSeg model file$"):
            load_model(tmp_path / name)
    # The start of a zip archive, cut: damaged, not unsafe.
    (tmp_path / "cut.model").write_bytes(b"PK")
    with pytest.raises(ScribbleSegError, match=r"cut.model: not a readable model file \(truncated or corrupt\)$"):
        load_model(tmp_path / "cut.model")


class _Payload:
    """Unpickling this runs ``os.system``: what a hostile model file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_file_that_would_execute_code_is_refused_not_run(tmp_path, how):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.model"
    payload = {"format": model_file.FORMAT, "format_version": model_file.FORMAT_VERSION,
               "meta": _Payload(marker)}
    if how == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ScribbleSegError, match="evil.model: refused to load"):
        load_model(path)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_config_are_refused(saved, tmp_path):
    path = saved[0]
    payload = torch.load(path, weights_only=True)
    payload["state"] = {k: v for k, v in list(payload["state"].items())[:-1]}
    broken = tmp_path / "broken.model"
    torch.save(as_before_the_checksum(payload), broken)
    with pytest.raises(ScribbleSegError, match="broken.model: the weights do not fit"):
        load_model(broken)


@pytest.mark.parametrize("where", ["weights", "bank"])
def test_nan_or_infinite_numbers_in_a_model_are_damage(saved, tmp_path, where):
    # Overwritten bytes inside a tensor still load as numbers: NaN ones must not reach a segmentation.
    payload = torch.load(saved[0], weights_only=True)
    if where == "weights":
        name = next(k for k, v in payload["state"].items() if torch.is_floating_point(v))
        payload["state"][name] = payload["state"][name].clone().fill_(float("nan"))
    else:
        payload["bank_features"] = payload["bank_features"].clone()
        payload["bank_features"][0, 0] = float("inf")
    damaged = tmp_path / "nan.model"
    torch.save(as_before_the_checksum(payload), damaged)
    with pytest.raises(ScribbleSegError, match="nan.model: damaged model file .*NaN or infinite"):
        load_model(damaged)
    torch.save(payload, damaged)  # with its checksum, that says it first
    with pytest.raises(ScribbleSegError, match="nan.model: damaged model file .*checksum"):
        load_model(damaged)


def test_bytes_damaged_inside_the_weights_are_found_by_the_checksum(saved, tmp_path):
    # torch reads a tensor's bytes as they are: without the checksum, a flipped byte is another weight.
    payload = torch.load(saved[0], weights_only=True)
    name = next(k for k, v in payload["state"].items() if torch.is_floating_point(v) and v.numel() > 4)
    weights = payload["state"][name].clone()
    weights.view(-1)[3] = weights.view(-1)[3] + 0.25  # a finite number, as flipped bytes mostly are
    payload["state"][name] = weights
    torch.save(payload, tmp_path / "flipped.model")
    with pytest.raises(ScribbleSegError, match="flipped.model: damaged model file .*checksum"):
        load_model(tmp_path / "flipped.model")
    torch.save(as_before_the_checksum(payload), tmp_path / "old.model")
    load_model(tmp_path / "old.model")  # a file from before the checksum loads as it did


def test_damaged_meta_is_refused(saved, tmp_path):
    payload = torch.load(saved[0], weights_only=True)
    payload["meta"] = "{not json"
    damaged = tmp_path / "damaged.model"
    torch.save(payload, damaged)
    with pytest.raises(ScribbleSegError, match="damaged.model: damaged model file"):
        load_model(damaged)
    # An entry missing says so, not the bare key ("damaged model file ('bank_features')").
    payload = torch.load(saved[0], weights_only=True)
    del payload["bank_features"]
    torch.save(payload, damaged)
    with pytest.raises(ScribbleSegError, match=r"damaged.model: damaged model file \(it lacks its 'bank_features' "
                                               r"entry\)$"):
        load_model(damaged)


def test_a_damaged_stored_stain_or_weights_name_the_file_and_what_is_wrong(saved, tmp_path):
    import json

    payload = torch.load(saved[0], weights_only=True)
    meta = json.loads(payload["meta"])
    meta["stain"] = "garbage"
    torch.save(dict(payload, meta=json.dumps(meta)), tmp_path / "stain.model")
    # Refused as it loads, naming the file, not later as a volume's stain is normalized.
    with pytest.raises(ScribbleSegError, match=r"stain.model: damaged model file \(stain normalization: bad stored"):
        load_model(tmp_path / "stain.model")
    state = dict(payload["state"])
    removed = next(iter(state))
    del state[removed]
    torch.save(as_before_the_checksum(dict(payload, state=state)), tmp_path / "key.model")
    with pytest.raises(ScribbleSegError) as excinfo:
        load_model(tmp_path / "key.model")
    message = str(excinfo.value)
    assert "key.model: the weights do not fit" in message and "Missing key" in message and removed in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(saved):
    with pytest.raises(ScribbleSegError, match="CUDA"):
        load_model(saved[0], device="cuda")


def test_the_bank_network_logit_is_the_networks_own_probability_of_those_pixels(tmp_path):
    from ScribbleSegLib.inference import predict_volume
    from ScribbleSegLib.model_file import SegModel, bank_network_logit

    torch.manual_seed(1)
    config = ModelConfig(**TINY)
    image = np.random.default_rng(2).integers(0, 256, size=(1, 40, 40, 3), dtype=np.uint8)
    bare = SegModel(config, build_net(config).eval(), None, (1.0, 1.0, 1.0), np.zeros((0, 8), np.float32),
                    np.zeros(0, np.uint8), torch.device("cpu"))
    assert bank_network_logit(bare) is None  # no bank
    prob, feats = predict_volume(bare, image, device="cpu")
    picks = np.array([0, 7, 123, 999, 1599])
    bank = np.asarray(feats, np.float32).reshape(-1, 8)[picks]
    model = SegModel(config, bare.net, None, (1.0, 1.0, 1.0), bank, np.zeros(len(picks), np.uint8),
                     torch.device("cpu"))
    logit = bank_network_logit(model)
    assert logit.shape == (len(picks),) and logit.dtype == np.float32
    # The stored features are float16: the same probability to their rounding.
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), prob.reshape(-1)[picks], atol=2e-3)


def test_loading_a_model_leaves_the_callers_random_state_alone(tmp_path):
    # The network's initial weights, replaced by the file's, were drawn from torch's global generator: a notebook's
    # torch.rand after load_model gave other numbers.
    import torch

    from ScribbleSegLib.model_file import load_model

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_model("starter", device="cpu")
    assert torch.equal(torch.rand(3), expected)
