"""The starter model shipped with ScribbleSeg (starter.py, benchmarks/make_starter_model.py)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ScribbleSegLib import starter
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.model_file import load_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "make_starter_model.py"


def make_script():
    spec = importlib.util.spec_from_file_location("make_starter_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_starter_model_is_found_and_stands_in_for_an_empty_choice():
    path = starter.starter_model_path()
    assert path == ROOT / "ScribbleSegLib" / "models" / "starter.model" and path.is_file()
    for empty in (None, "", "starter"):
        assert starter.resolve_model(empty) == path
    assert starter.resolve_model("/models/mine.model") == Path("/models/mine.model")
    assert starter.is_starter_model(path) and starter.is_starter_model("starter")
    assert not starter.is_starter_model("/models/mine.model") and not starter.is_starter_model("")


def test_a_missing_starter_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(starter, "MODELS_FOLDER", tmp_path)
    assert starter.starter_model_path() is None
    with pytest.raises(ScribbleSegError, match="starter model is missing.*make_starter_model.py"):
        starter.resolve_model("")


def test_the_shipped_starter_model_is_small_loads_safely_and_knows_where_it_came_from():
    path = starter.starter_model_path()
    assert path.stat().st_size < 5 * 2**20, "a few MB: it is in the repository and in every package"
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no code runs when it loads
    assert payload["format"] == "scribbleseg-model"
    model = load_model(path, device="cpu")
    assert model.config.arch == "munet"
    record = model.provenance
    assert record["purpose"] == "starter" and record["parent"] is None
    assert record["command"].startswith("python benchmarks/make_starter_model.py")
    # Trained on every phantom family the library has (retrain after adding one).
    assert set(record["families"]) == set(make_script().phantom_families())
    assert all(any(f"family={name} " in v for v in record["volumes"]) for name in record["families"])
    assert set(np.unique(model.bank_labels)) == {0, 1}


def test_the_starter_script_records_what_it_trained_on(tmp_path):
    out = tmp_path / "tiny.model"
    assert make_script().main(["--out", str(out), "--iters", "2", "--shape", "12", "48", "48", "--volumes", "1",
                               "--bank-per-class", "20", "--quiet"]) == 0
    record = load_model(out, device="cpu").provenance
    assert record["steps"] == 2 and record["purpose"] == "starter"
    assert "--iters 2" in record["command"]
    assert len(record["volumes"]) == len(record["families"]) == len(record["validation_volumes"])
    assert json.dumps(record)  # JSON-able


def test_segment_accepts_the_word_starter(tmp_path):
    import dataclasses

    from ScribbleSegLib import phantom, volume_io
    from ScribbleSegLib.cli import main

    from ScribbleSegLib.geometry import Volume

    # At the starter model's scale (192 pixels across the body), the three sections with the most heart.
    made = phantom.make_phantom(seed=5, config=dataclasses.replace(phantom.PhantomConfig(), shape=(12, 192, 192)))
    keep = np.sort(np.argsort(made.label.reshape(12, -1).sum(1))[-3:])
    volume_io.write_rgb_volume(tmp_path / "image.nrrd", Volume(made.image.array[keep], made.image.geometry))
    out = tmp_path / "out.nrrd"
    assert main(["segment", "--image", str(tmp_path / "image.nrrd"), "--model", "starter", "--method", "munet",
                 "--out", str(out), "--no-cache", "--device", "cpu", "--quiet"]) == 0
    labels = volume_io.read_label(out, made.label[keep].shape, made.image.geometry)
    assert labels.any() and not labels.all()


def test_a_model_named_starter_in_another_case_is_told_the_name(tmp_path):
    # "--model Starter" said only "no such file": the command line, train --init, the worker and the API now say
    # what the word is.
    from ScribbleSegLib import worker
    from ScribbleSegLib.errors import ScribbleSegError
    from ScribbleSegLib.model_file import load_model

    hint = "the shipped model is 'starter', in lower case"
    with pytest.raises(ScribbleSegError, match=f"^Starter: no such model file; {hint}$"):
        load_model("Starter")
    (tmp_path / "i.nrrd").write_bytes(b"")
    request = worker.write_request(tmp_path / "r.json", {"task": "session", "image": "i.nrrd", "model": "STARTER"})
    with pytest.raises(ScribbleSegError, match=f"no such file or folder \\(request field 'model'; {hint}\\)$"):
        worker.load_request(request)
    with pytest.raises(ScribbleSegError, match="no such model file$"):
        load_model(tmp_path / "heart.model")
