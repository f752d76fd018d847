"""The worker process the Slicer module runs: request checks, the JSON-lines protocol,
results, cancel and kill, run end to end with the real worker on a tiny phantom."""

import io
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ScribbleSegLib import choices, worker
from ScribbleSegLib.errors import ScribbleSegError

POSIX = os.name == "posix"
PHANTOM_SHAPE = [8, 48, 48]
FAST_DDML = {"steps": 10, "head_steps": 10, "pool_size": 500, "batch_size": 32}


def run(request_path, **kwargs):
    """Run the worker on a request; return (exit status, events, process)."""
    process = worker.WorkerProcess(request_path, **kwargs)
    process.start()
    events = []
    status = process.wait(on_event=events.append, timeout=120)
    return status, events, process


def kinds(events):
    return [e["event"] for e in events]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("worker")


@pytest.fixture(scope="module")
def phantom_files(folder):
    """The sample data of the Slicer module, written by the worker's phantom task."""
    outputs = {"image": "image.nrrd", "label": "label.seg.nrrd", "scribbles": "scribbles.seg.nrrd"}
    request = worker.write_request(folder / "phantom.json", {"task": "phantom", "seed": 0, "shape": PHANTOM_SHAPE,
                                                              "every": 3, "outputs": outputs})
    status, events, _ = run(request)
    assert status == worker.EXIT_DONE, events
    return {key: folder / name for key, name in outputs.items()}, events


@pytest.fixture(scope="module")
def tiny_model(folder):
    """A network with random weights: the protocol does not care how good the model is."""
    import torch

    from ScribbleSegLib.model_file import save_model
    from ScribbleSegLib.nets import ModelConfig, build_net

    config = ModelConfig(arch="unet", patch=16, n_fov=1, width=4, depth=2, aggregator=(8,), feature_channels=8)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    return save_model(folder / "tiny.model", build_net(config), config, voxel_size=(0.02, 0.02, 0.04),
                      bank_features=rng.normal(size=(64, 8)), bank_labels=np.arange(64) % 2)


def segment_request(folder, phantom_files, model, name, **fields):
    files, _ = phantom_files
    request = {"task": "segment", "image": str(files["image"]), "scribbles": str(files["scribbles"]),
               "model": str(model), "method": "full", "device": "cpu", "cache_dir": "cache",
               "ddml": FAST_DDML, "outputs": {"labels": f"{name}_labels.nrrd",
                                              "probability": f"{name}_probability.nrrd"}}
    request.update(fields)
    return worker.write_request(folder / f"{name}.json", request)


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def test_request_paths_are_resolved_against_the_request_folder(tmp_path):
    (tmp_path / "image.nrrd").write_bytes(b"")
    (tmp_path / "scribbles.nrrd").write_bytes(b"")
    (tmp_path / "m.model").write_bytes(b"")
    path = worker.write_request(tmp_path / "r.json", {"task": "segment", "image": "image.nrrd",
                                                      "scribbles": "scribbles.nrrd", "model": "m.model",
                                                      "outputs": {"labels": "out/labels.nrrd"}})
    request = worker.load_request(path)
    assert request["image"] == str(tmp_path / "image.nrrd")
    assert request["outputs"] == {"labels": str(tmp_path / "out" / "labels.nrrd"), "probability": None}
    assert (request["method"], request["device"], request["seed"], request["cut"]) == ("full", "auto", 0, {})


def test_a_request_may_name_the_starter_model_as_the_command_line_does(tmp_path):
    # "model": "starter" was looked for as a file beside the request.
    from ScribbleSegLib.starter import resolve_model

    (tmp_path / "image.nrrd").write_bytes(b"")
    (tmp_path / "scribbles.nrrd").write_bytes(b"")
    for task, extra in (("segment", {"scribbles": "scribbles.nrrd", "outputs": {"labels": "l.nrrd"}}),
                        ("session", {})):
        path = worker.write_request(tmp_path / f"{task}.json", {"task": task, "image": "image.nrrd",
                                                                "model": "starter", **extra})
        assert worker.load_request(path)["model"] == str(resolve_model("starter"))


@pytest.mark.parametrize("fields, problem", [
    ({"task": "paint"}, "'task' must be one of"),
    ({"task": "segment", "image": "missing.nrrd"}, "missing.nrrd: no such file"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd"}, "'outputs' is missing"),
    ({"task": "segment", "image": "i.nrrd", "model": "i.nrrd"}, "'scribbles' is missing"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "method": "magic",
      "outputs": {"labels": "l.nrrd"}}, "'method' must be one of munet, ddml, full"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "cut": {"gamma": [8]},
      "outputs": {"labels": "l.nrrd"}}, "'cut.gamma' must be a number or a string"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "device": "tpu",
      "outputs": {"labels": "l.nrrd"}}, "'device' must be one of auto, cpu, cuda"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "orientations": 3,
      "outputs": {"labels": "l.nrrd"}}, "'orientations' must be one of 1, 2, 4, got 3"),
    ({"task": "session", "image": "i.nrrd", "model": "i.nrrd", "orientations": "4"},
     "'orientations' must be a whole number, got \"4\""),
    # JSON's names for what a field must be, and its text for what it got (Python's 'dict', 'int', True before).
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "cut": [1],
      "outputs": {"labels": "l.nrrd"}}, "'cut' must be an object, got [1]"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "seed": True,
      "outputs": {"labels": "l.nrrd"}}, "'seed' must be a whole number, got true"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "forget": "yes",
      "outputs": {"labels": "l.nrrd"}}, "'forget' must be true or false, got \"yes\""),
    ({"task": "session", "image": "i.nrrd", "model": "i.nrrd", "seed": 7},
     "'seed' belongs to each run line, not to the session request"),
    ({"task": "devices", "foo": 1}, "'foo' is not a field of a devices request (misspelt?); it takes none besides"),
    ({"task": "phantom", "seed": -1, "outputs": {}}, "'seed' must be a non-negative integer, got -1"),
    ({"task": "train", "images": ["i.nrrd"], "labels": [], "output": "m.model"}, "one label per image"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model", "max_minutes": 0},
     "'max_minutes' must be a positive finite number"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model",
      "max_minutes": float("inf")}, "'max_minutes' must be a positive finite number, got inf"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model", "init": "missing.nrrd"},
     "no such file or folder (request field 'init')"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model", "max_iters": 0},
     "'max_iters' must be a positive integer"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model", "names": ["a", "b"]},
     "'names' must give one name"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "i.nrrd"},
     "i.nrrd ('output'): is the input 'images[0]'; choose another output file"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "r.json"},
     "is the input the request"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model", "init": "i.nrrd",
      "arch": "unet"}, "'arch' cannot be given with 'init'"),
    ({"task": "phantom", "shape": [8, 48], "outputs": {}}, "'shape' must be three positive integers"),
    ({"task": "phantom", "outputs": {"image": "a.png", "label": "l.seg.nrrd", "scribbles": "s.seg.nrrd"}},
     "'outputs.image' must end in .nrrd"),
    # A misspelt field would leave its setting at the default without a word.
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd", "methd": "munet",
      "outputs": {"labels": "l.nrrd"}}, "'methd' is not a field of a segment request (misspelt?)"),
    ({"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd",
      "outputs": {"labels": "l.nrrd", "probabilty": "p.nrrd"}}, "'outputs.probabilty' is not an output"),
    ({"task": "session", "image": "i.nrrd", "model": "i.nrrd", "orientation": 4},
     "'orientation' is not a field of a session request"),
    ({"task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model", "max_minute": 5},
     "'max_minute' is not a field of a train request"),
    ({"task": "devices", "verbose": True}, "'verbose' is not a field of a devices request"),
])
def test_bad_requests_are_one_line_errors_naming_the_request(tmp_path, fields, problem):
    (tmp_path / "i.nrrd").write_bytes(b"")
    path = worker.write_request(tmp_path / "r.json", fields)
    with pytest.raises(ScribbleSegError) as info:
        worker.load_request(path)
    message = str(info.value)
    assert problem in message
    assert "\n" not in message
    assert "r.json" in message or "missing.nrrd" in message


def test_a_session_requests_list_of_its_fields_leaves_out_the_seed_it_refuses(tmp_path):
    # The list named 'seed', which a session request refuses (each run line has its own).
    (tmp_path / "i.nrrd").write_bytes(b"")
    path = worker.write_request(tmp_path / "r.json", {"task": "session", "image": "i.nrrd", "model": "i.nrrd",
                                                      "method": "full"})
    with pytest.raises(ScribbleSegError) as info:
        worker.load_request(path)
    assert str(info.value).endswith("'method' is not a field of a session request (misspelt?); the fields are "
                                    "cache_dir, device, image, model, orientations, scan_pixel")


def test_a_request_from_another_protocol_version_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"protocol": worker.PROTOCOL + 1, "task": "devices"}))
    with pytest.raises(ScribbleSegError, match="different versions"):
        worker.load_request(path)
    path.write_text(json.dumps({"task": "devices"}))  # written by hand: it was called another version's
    with pytest.raises(ScribbleSegError, match=r"r.json: 'protocol' is missing \(this ScribbleSegLib reads protocol"):
        worker.load_request(path)


def test_unknown_settings_are_refused_with_the_known_ones(tmp_path):
    # The worker's segment task runs jobs.segment_files; its settings are checked before any input is read.
    from ScribbleSegLib import jobs

    job = jobs.SegmentFiles(image=str(tmp_path / "i.nrrd"), model="m", labels=str(tmp_path / "o.nrrd"),
                            cut={"gama": 1.0}, names={"cut": "request field 'cut'"})
    with pytest.raises(ScribbleSegError, match=r"request field 'cut': unknown settings \['gama'\].*'gamma'"):
        jobs.settings(job)


def test_optional_settings_may_be_turned_off_and_others_may_not(tmp_path):
    from ScribbleSegLib import jobs

    for name in ("i.nrrd", "m.model"):
        (tmp_path / name).write_bytes(b"")
    path = worker.write_request(tmp_path / "r.json", {"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd",
                                                      "model": "m.model", "cut": {"reference_radius": None},
                                                      "outputs": {"labels": "l.nrrd"}})
    assert worker.load_request(path)["cut"] == {"reference_radius": None}

    def job(cut):
        return jobs.SegmentFiles(image=str(tmp_path / "i.nrrd"), model="m", labels=str(tmp_path / "o.nrrd"),
                                 cut=cut, names={"cut": "request field 'cut'"})

    cut = jobs.settings(job({"reference_radius": None, "reference_contrast": None, "gamma": 4.0}))[0]
    assert (cut.reference_radius, cut.reference_contrast, cut.gamma) == (None, None, 4.0)
    with pytest.raises(ScribbleSegError, match=r"^request field 'cut.gamma' must be a number, got None$"):
        jobs.settings(job({"gamma": None}))


def test_choice_settings_pass_a_request_and_are_checked_as_in_job_files(tmp_path):
    # Strings reach jobs.settings, which checks each field's type and value (one check for requests and jobs).
    from ScribbleSegLib import jobs

    for name in ("i.nrrd", "m.model"):
        (tmp_path / name).write_bytes(b"")
    fields = {"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "m.model",
              "cut": {"data_term": "linear", "neighbourhood": 6}, "ddml": {"evaluation": "exact"},
              "outputs": {"labels": "l.nrrd"}}
    request = worker.load_request(worker.write_request(tmp_path / "r.json", fields))

    def job(cut, ddml):
        return jobs.SegmentFiles(image=str(tmp_path / "i.nrrd"), model="m", labels=str(tmp_path / "o.nrrd"),
                                 cut=cut, ddml=ddml,
                                 names={"cut": "request field 'cut'", "ddml": "request field 'ddml'"})

    cut, config = jobs.settings(job(request["cut"], request["ddml"]))
    assert (cut.data_term, cut.neighbourhood, config.evaluation) == ("linear", 6, "exact")
    with pytest.raises(ScribbleSegError, match=r"gamma' must be a number, got 'big'"):
        jobs.settings(job({"gamma": "big"}, {}))
    with pytest.raises(ScribbleSegError, match=r"request field 'cut'.*data_term"):
        jobs.settings(job({"data_term": "cubic"}, {}))


def test_size_settings_are_lists_of_numbers():
    from ScribbleSegLib import jobs
    from ScribbleSegLib.ddml import DDMLConfig

    assert jobs.replace_fields(DDMLConfig(), {"hidden": [32, 32], "out_dim": 16}, "ddml").hidden == (32, 32)
    for bad in (32, [32, "wide"], [True]):
        with pytest.raises(ScribbleSegError, match=r"ddml.hidden must be a list of numbers"):
            jobs.replace_fields(DDMLConfig(), {"hidden": bad}, "ddml")
    with pytest.raises(ScribbleSegError, match=r"ddml: DDML layer sizes must be positive"):
        jobs.replace_fields(DDMLConfig(), {"hidden": [0]}, "ddml")


def test_counts_are_whole_numbers_and_sizes_have_an_upper_bound():
    from ScribbleSegLib import jobs
    from ScribbleSegLib.ddml import DDMLConfig

    assert jobs.replace_fields(DDMLConfig(), {"steps": 100.0}, "ddml").steps == 100  # JSON may write 100.0
    for field, value, problem in (("steps", 2.5, "ddml.steps must be a whole number"),
                                  ("batch_size", float("inf"), "ddml.batch_size must be a whole number"),
                                  ("steps", 10**12, "DDML steps must be at most"),
                                  ("out_dim", 10**7, "DDML layer sizes must be at most"),
                                  ("batch_size", 10**9, "DDML batch_size must be at most"),
                                  ("pool_size", 10**12, "DDML pool_size must be at most"),
                                  ("hidden", [64.5], "DDML hidden must hold whole numbers")):
        with pytest.raises(ScribbleSegError, match=problem):
            jobs.replace_fields(DDMLConfig(), {field: value}, "ddml")


def test_a_run_line_that_is_not_utf8_or_nests_too_deep_is_one_bad_run(monkeypatch):
    session = {"path": "s.json"}
    with pytest.raises(ScribbleSegError, match=r"^run line: is not valid JSON \(nested too deeply\)$"):
        worker.load_run("[" * 100_000 + "]" * 100_000, session)
    # The reader takes bytes: a line that is not UTF-8 is read (and then refused as JSON), the next one too.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe garbage\n{\"id\": 2}\nquit\n")))
    reader = worker._RunReader()
    reader._read()
    first, second, end = reader.runs.get(), reader.runs.get(), reader.runs.get()
    assert first[0].endswith("garbage") and second[0] == '{"id": 2}' and end is None
    with pytest.raises(ScribbleSegError, match="not a run \\(a JSON object\\), 'cancel' or 'quit'"):
        worker.load_run(first[0], session)
    # A misspelt command is said to be one, not a JSON parse error at "line 1 column 1".
    with pytest.raises(ScribbleSegError, match="^run line 'pause': not a run \\(a JSON object\\), 'cancel' or 'quit'$"):
        worker.load_run("pause", session)


def test_stdin_closing_cancels_the_run_in_progress_with_another_queued(monkeypatch):
    # Only the newest (queued) run's token was cancelled: the run in progress went on to its end for nobody.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"id": 1}\n{"id": 2}\n')))
    reader = worker._RunReader()
    reader._read()
    (_, in_progress), (_, queued) = reader.runs.get(), reader.runs.get()
    assert in_progress.cancelled and queued.cancelled and reader.runs.get() is None


def test_stdin_closing_during_a_run_answers_it_and_the_queued_one_and_exits_as_cancelled(monkeypatch):
    # The run in progress was answered "cancelled by the user", the queued one not at all, and the session exited
    # 0, where a session whose opening stdin's closing cancelled exits 3.
    from ScribbleSegLib import jobs
    from ScribbleSegLib.errors import CancelledError

    class Session:
        shape, features_cached, warnings, timings = (1, 2, 2), True, [], {}

    def session_files(session, job, progress=None, cancel=None):
        deadline = time.monotonic() + 10
        while not cancel.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        raise CancelledError("cancelled by the user")

    monkeypatch.setattr(jobs, "open_session", lambda job, progress=None, cancel=None: Session())
    monkeypatch.setattr(jobs, "session_files", session_files)
    monkeypatch.setattr(worker, "_job", lambda request, field="request field": None)
    monkeypatch.setattr(worker, "load_run", lambda line, request: {"forget": False})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"id": 1}\n{"id": 2}\n')))
    out = io.StringIO()
    status = worker._serve_session({"device": "cpu"}, worker.Emitter(out))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    answers = [(e.get("id"), e["kind"], e["message"]) for e in events if e["event"] == "error"]
    assert answers == [(1, "cancelled", worker.PARENT_GONE), (2, "cancelled", worker.PARENT_GONE)], events
    assert status == worker.EXIT_CANCELLED
    # Closed while idle: the session ends as after "quit".
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert worker._serve_session({"device": "cpu"}, worker.Emitter(io.StringIO())) == worker.EXIT_DONE


def test_stdin_closing_while_the_session_opens_answers_each_run_sent_meanwhile(monkeypatch):
    # Runs sent while the M-Unet still ran, then stdin closed: one id-less "cancelled by the user", and the runs
    # never got an answer, though each queued run is answered "cancelled".
    from ScribbleSegLib import jobs
    from ScribbleSegLib.errors import CancelledError

    def open_session(job, progress=None, cancel=None):
        deadline = time.monotonic() + 10
        while not cancel.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        raise CancelledError("cancelled by the user")

    monkeypatch.setattr(jobs, "open_session", open_session)
    monkeypatch.setattr(worker, "_job", lambda request, field="request field": None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"id": 1}\n{"id": 2}\n')))
    out = io.StringIO()
    status = worker._serve_session({"device": "cpu"}, worker.Emitter(out))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    answers = [(e.get("id"), e["kind"], e["message"]) for e in events if e["event"] == "error"]
    assert answers == [(None, "cancelled", worker.PARENT_GONE), (1, "cancelled", worker.PARENT_GONE),
                       (2, "cancelled", worker.PARENT_GONE)], events
    assert status == worker.EXIT_CANCELLED


def test_a_session_refuses_a_run_id_that_cannot_key_its_events(tmp_path):
    process = worker.SessionProcess(tmp_path / "session.json")
    for bad in ([1, 2], {"a": 1}, True, 1.5):
        with pytest.raises(ValueError, match="id must be an integer or a string"):
            process.send({"id": bad, "scribbles": "s.nrrd"})



def test_waiting_for_a_worker_never_started_is_an_error_not_a_wait_forever(tmp_path):
    # Its poll found no process and no end: wait, wait_ready and wait_run looped until their timeout, or forever.
    for process, waits in ((worker.WorkerProcess(tmp_path / "r.json"), ("wait",)),
                           (worker.SessionProcess(tmp_path / "s.json"), ("wait_ready", "wait_run"))):
        for name in waits:
            call = getattr(process, name)
            with pytest.raises(RuntimeError, match=r"start\(\) it before waiting for it"):
                call(1) if name == "wait_run" else call()
        assert process.failure_message() == "The ScribbleSeg worker process was never started."


def test_a_session_gives_each_run_its_own_id(tmp_path):
    # Numbered ids skipped only answered ones: id 2 given, then two runs without one, were numbered 1 and 2, and
    # the two answers keyed one run.  An id given again kept its earlier answer, which wait_run then returned.
    class Running:
        stdin = io.StringIO()

        @staticmethod
        def poll():
            return None

    process = worker.SessionProcess(tmp_path / "session.json")
    process._proc = Running()
    assert [process.send({"id": 2}), process.send({}), process.send({})] == [2, 1, 3]
    with pytest.raises(ValueError, match="run id 2 is still running"):
        process.send({"id": 2})
    process.runs["x"] = {"event": "done", "id": "x"}  # an earlier run "x", answered
    assert process.send({"id": "x"}) == "x" and "x" not in process.runs


# ---------------------------------------------------------------------------
# Protocol lines
# ---------------------------------------------------------------------------


def test_parse_line_keeps_events_and_turns_anything_else_into_log_lines():
    assert worker.parse_line('{"event": "progress", "stage": "read", "fraction": 0.5}\n') == {
        "event": "progress", "stage": "read", "fraction": 0.5}
    assert worker.parse_line("some library printed this\n") == {
        "event": "log", "level": "info", "message": "some library printed this"}
    assert worker.parse_line('{"not": "an event"}')["event"] == "log"
    assert worker.parse_line('{"event": "done"}', "stderr")["level"] == "stderr"


def test_progress_lines_are_throttled_per_stage_but_stage_changes_and_ends_always_pass():
    stream = io.StringIO()
    emitter = worker.Emitter(stream)
    for i in range(50):
        emitter.progress("inference", i / 100, f"section {i}")
    emitter.progress("inference", 1.0, "done")
    emitter.progress("graph cut", 0.0, "")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) < 10
    assert lines[0]["message"] == "section 0"
    assert [(e["stage"], e["fraction"]) for e in lines[-2:]] == [("inference", 1.0), ("graph cut", 0.0)]


def test_train_request_reaches_train_model_with_its_settings(tmp_path, phantom_files, monkeypatch):
    from ScribbleSegLib import training

    files, _ = phantom_files
    seen = {}

    def fake_train_model(images, labels, out_path, config, **kwargs):
        seen.update(images=images, labels=labels, config=config, **kwargs)
        Path(out_path).write_bytes(b"model")
        return Path(out_path)

    monkeypatch.setattr(training, "train_model", fake_train_model)
    path = worker.write_request(tmp_path / "t.json", {
        "task": "train", "images": [str(files["image"])], "labels": [str(files["label"])], "output": "new.model",
        "arch": "unet", "preset": "small", "max_minutes": 2.5, "device": "cpu", "seed": 7})
    done = worker.run_request(worker.load_request(path), worker.Emitter(io.StringIO()))
    assert done["outputs"] == {"model": str(tmp_path / "new.model")}
    assert seen["config"].arch == "unet"
    assert (seen["max_minutes"], seen["device"], seen["seed"]) == (2.5, "cpu", 7)
    from ScribbleSegLib.choices import PRESETS

    assert seen["max_iters"] == PRESETS["small"].max_iters  # the preset's step budget reaches training
    assert seen["images"][0].array.shape == tuple(PHANTOM_SHAPE) + (3,)
    assert seen["labels"][0].shape == tuple(PHANTOM_SHAPE) and seen["labels"][0].any()
    assert seen["cancel"] is None and callable(seen["progress"])
    assert seen["init"] is None
    # The provenance names each volume by its image and label, as absolute paths (as the command line does).
    assert seen["provenance"]["volumes"] == [f"{files['image']} (label {files['label']})"]
    assert seen["names"] == [str(files["label"])]  # a bad label is named by its file


def test_a_train_request_takes_the_command_lines_path_from_files(tmp_path, phantom_files, monkeypatch, caplog):
    # The worker trained through its own reading of the files, without the command line's warning of an image
    # given twice or its check that the disk holds the model file.
    from ScribbleSegLib import fileio, training

    files, _ = phantom_files
    seen = {}
    monkeypatch.setattr(training, "train_model", lambda *a, **k: seen.update(called=True))
    fields = {"task": "train", "images": [str(files["image"])] * 2, "labels": [str(files["label"])] * 2,
              "output": "new.model", "device": "cpu"}
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        worker.run_request(worker.load_request(worker.write_request(tmp_path / "t.json", fields)),
                           worker.Emitter(io.StringIO()))
    assert seen == {"called": True}
    assert any("is given twice in images" in r.getMessage() for r in caplog.records)

    def full(sizes, *args, **kwargs):
        if sizes:
            raise ScribbleSegError(f"{next(iter(sizes))}: not enough free space")

    monkeypatch.setattr(fileio, "check_free_space", full)
    seen.clear()
    with pytest.raises(ScribbleSegError, match="not enough free space"):
        worker.run_request(worker.load_request(worker.write_request(tmp_path / "t.json", fields)),
                           worker.Emitter(io.StringIO()))
    assert seen == {}, "refused before any training"


def test_a_train_request_with_init_fine_tunes_that_model(tmp_path, phantom_files, tiny_model, monkeypatch):
    from ScribbleSegLib import starter, training

    files, _ = phantom_files
    seen = {}

    def fake_train_model(images, labels, out_path, config, **kwargs):
        seen.update(config=config, **kwargs)
        Path(out_path).write_bytes(Path(tiny_model).read_bytes())  # a model: the second request replaces it
        return Path(out_path)

    monkeypatch.setattr(training, "train_model", fake_train_model)
    fields = {"task": "train", "images": [str(files["image"])], "labels": [str(files["label"])],
              "output": "tuned.model", "init": str(tiny_model), "max_iters": 40, "names": ["Phantom0"]}
    done = worker.run_request(worker.load_request(worker.write_request(tmp_path / "t.json", fields)),
                              worker.Emitter(io.StringIO()))
    assert seen["config"] is None, "a fine-tuned model keeps its parent's architecture"
    # The parent is loaded once, before any volume is read (the free-space check needs its network).
    assert (str(seen["init"].path), seen["max_iters"]) == (str(tiny_model), 40)
    assert seen["provenance"]["volumes"] == ["Phantom0"]
    assert done["metrics"]["fine_tuned_from"] == str(tiny_model)
    monkeypatch.setattr(starter, "MODELS_FOLDER", tmp_path / "models")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / starter.STARTER_MODEL_NAME).write_bytes(Path(tiny_model).read_bytes())
    fields["init"] = "starter"
    worker.run_request(worker.load_request(worker.write_request(tmp_path / "s.json", fields)),
                       worker.Emitter(io.StringIO()))
    assert str(seen["init"].path) == str(tmp_path / "models" / starter.STARTER_MODEL_NAME)


def test_a_fine_tune_request_without_budgets_takes_the_command_lines(tmp_path, tiny_model):
    from ScribbleSegLib import choices

    image = tmp_path / "i.nrrd"
    image.write_bytes(b"")
    request = worker.load_request(worker.write_request(tmp_path / "t.json", {
        "task": "train", "images": [str(image)], "labels": [str(image)], "output": "tuned.model",
        "init": str(tiny_model)}))
    # A fine-tune has its own budgets, wherever it is asked for (the preset's 30 minutes were the worker's alone,
    # the panel's 15 minutes its own).
    assert (request["max_iters"], request["max_minutes"]) == (choices.FINETUNE_ITERS, choices.FINETUNE_MINUTES)
    assert choices.training_budget(fine_tune=True) == (choices.FINETUNE_ITERS, choices.FINETUNE_MINUTES,
                                                       choices.FINETUNE_LR)
    request = worker.load_request(worker.write_request(tmp_path / "s.json", {
        "task": "train", "images": [str(image)], "labels": [str(image)], "output": "new.model", "preset": "paper"}))
    paper = choices.PRESETS["paper"]
    assert (request["max_iters"], request["max_minutes"]) == (paper.max_iters, paper.max_minutes)


def test_devices_lists_the_cpu():
    done = worker.run_request({"task": "devices"}, worker.Emitter(io.StringIO()))
    devices = done["outputs"]["devices"]
    assert devices[0]["id"] == "cpu"
    assert all(d["id"].startswith("cuda:") and d["memory_gb"] > 0 for d in devices[1:])


def test_a_broken_worker_command_line_is_one_error_event(capsys):
    for argv in ([], ["request.json", "--no-such-option"]):
        with pytest.raises(SystemExit) as stop:
            worker.main(argv)
        assert stop.value.code == worker.EXIT_BAD_INPUT
        out, err = capsys.readouterr()
        assert err == "" and len(out.splitlines()) == 1
        event = worker.parse_line(out.strip())
        assert event["event"] == "error" and event["kind"] == "input"
        assert event["message"].startswith("worker command line: ")
        assert ("request" if not argv else "--no-such-option") in event["message"]


# ---------------------------------------------------------------------------
# End to end: the real worker in a child process
# ---------------------------------------------------------------------------


def test_phantom_task_writes_image_truth_and_scribbles(phantom_files):
    from ScribbleSegLib import volume_io

    files, events = phantom_files
    assert kinds(events)[0] == "started" and kinds(events)[-2:] == ["done", "exit"]
    image = volume_io.read_image(files["image"])
    assert image.array.shape == tuple(PHANTOM_SHAPE) + (3,)
    scribbles = volume_io.read_scribbles(files["scribbles"], image.shape, image.geometry)
    assert set(np.unique(scribbles)) == {0, 1, 2}
    assert volume_io.read_label(files["label"], image.shape, image.geometry).any()


def test_segment_writes_results_and_the_second_run_reuses_the_cached_features(folder, phantom_files, tiny_model):
    from ScribbleSegLib import volume_io

    status, events, process = run(segment_request(folder, phantom_files, tiny_model, "first"))
    assert status == worker.EXIT_DONE, process.failure_message()
    assert kinds(events)[0] == "started" and kinds(events)[-2:] == ["done", "exit"]
    progress = [e for e in events if e["event"] == "progress"]
    assert {"read", "graph cut", "write"} <= {e["stage"] for e in progress}
    assert all(0.0 <= e["fraction"] <= 1.0 for e in progress)
    done = process.result
    assert done["metrics"]["features_cached"] is False
    assert set(done["timings"]) >= {"M-Unet features", "DDML + head", "graph cut"}
    image = volume_io.read_image(phantom_files[0]["image"])
    labels = volume_io.read_label(done["outputs"]["labels"], image.shape, image.geometry)
    assert int(labels.sum()) == done["metrics"]["heart_voxels"]
    assert Path(done["outputs"]["probability"]).is_file()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"

    status, events, process = run(segment_request(folder, phantom_files, tiny_model, "second"))
    assert status == worker.EXIT_DONE, process.failure_message()
    assert process.result["metrics"]["features_cached"] is True


def test_cancel_stops_the_run_without_outputs(folder, phantom_files, tiny_model):
    process = worker.WorkerProcess(segment_request(folder, phantom_files, tiny_model, "cancelled"))
    process.start()
    process.cancel()
    events = []
    status = process.wait(on_event=events.append, timeout=120)
    assert status == worker.EXIT_CANCELLED
    assert process.error["kind"] == "cancelled" and process.result is None
    assert not (folder / "cancelled_labels.nrrd").exists()


def test_bad_input_ends_with_an_input_error_and_exit_2(tmp_path, tiny_model):
    (tmp_path / "image.nrrd").write_text("not an image")
    (tmp_path / "scribbles.nrrd").write_text("")
    request = worker.write_request(tmp_path / "r.json", {
        "task": "segment", "image": "image.nrrd", "scribbles": "scribbles.nrrd", "model": str(tiny_model),
        "device": "cpu", "outputs": {"labels": "labels.nrrd"}})
    status, events, process = run(request)
    assert status == worker.EXIT_BAD_INPUT
    assert process.error["kind"] == "input"
    assert "image.nrrd" in process.failure_message()
    assert not (tmp_path / "labels.nrrd").exists()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _launcher(tmp_path):
    """A stand-in for Slicer's PythonSlicer: a launcher that runs the real interpreter as its child."""
    path = tmp_path / "PythonSlicer"
    path.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(not POSIX, reason="process groups and /bin/sh")
def test_kill_ends_the_launcher_and_the_worker(folder, phantom_files, tiny_model, tmp_path):
    process = worker.WorkerProcess(segment_request(folder, phantom_files, tiny_model, "killed"),
                                   python=_launcher(tmp_path))
    process.start()
    started = None
    deadline = time.monotonic() + 60
    while started is None and time.monotonic() < deadline:
        started = next((e for e in process.poll() if e["event"] == "started"), None)
        time.sleep(0.02)
    assert started is not None and started["pid"] != process.pid, "the worker runs under the launcher"
    process.kill()
    status = process.wait(timeout=30)
    assert status == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _alive(started["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(started["pid"]), "the worker outlived its launcher"
    # The signal is named as this object's own kill (a Cancel not heeded in time), not as the system's for memory.
    assert "killed by SIGKILL, as asked" in process.failure_message()
    assert not (folder / "killed_labels.nrrd").exists()


def _fake_torch(tmp_path, body):
    package = tmp_path / "fake" / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    return str(tmp_path / "fake")


def test_a_worker_that_dies_is_reported_with_its_last_output(tmp_path):
    fake = _fake_torch(tmp_path, "import os, sys\nprint('fatal: CUDA driver crashed', file=sys.stderr, flush=True)\n"
                                 "os._exit(7)\n")
    request = worker.write_request(tmp_path / "r.json", {"task": "devices"})
    status, events, process = run(request, pythonpath=[fake])
    assert status == 7
    assert process.error is None and process.result is None
    message = process.failure_message()
    assert "exit status 7" in message and "fatal: CUDA driver crashed" in message


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_a_worker_killed_by_the_system_is_named_as_a_kill_for_memory(tmp_path):
    # A SIGKILL that kill() did not send is what the system sends when memory runs out.
    fake = _fake_torch(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    request = worker.write_request(tmp_path / "r.json", {"task": "devices"})
    status, events, process = run(request, pythonpath=[fake])
    assert status == -signal.SIGKILL
    assert "killed by SIGKILL, as the system kills a process when memory runs out" in process.failure_message()


def test_out_of_memory_is_reported_as_such(tmp_path):
    fake = _fake_torch(tmp_path, "raise MemoryError('cannot allocate 178 GB')\n")
    request = worker.write_request(tmp_path / "r.json", {"task": "devices"})
    status, events, process = run(request, pythonpath=[fake])
    assert status == worker.EXIT_FAILED
    assert process.error["kind"] == "memory"
    assert "CPU" in process.error["message"]
    assert any("MemoryError" in line for line in process.lines), "the traceback is in the log"


# ---------------------------------------------------------------------------
# The persistent worker (task: session)
# ---------------------------------------------------------------------------


def session_request(folder, phantom_files, model, name, **fields):
    files, _ = phantom_files
    request = {"task": "session", "image": str(files["image"]), "model": str(model), "device": "cpu",
               "cache_dir": "cache"}
    request.update(fields)
    return worker.write_request(folder / f"{name}.json", request)


def start_session(request, **kwargs):
    process = worker.SessionProcess(request, **kwargs)
    process.start()
    ready = process.wait_ready(timeout=120)
    assert ready is not None, process.failure_message()
    return process, ready


def test_load_run_checks_fields_and_names_the_run(tmp_path):
    for name in ("s.nrrd", "i.nrrd", "m.model"):
        (tmp_path / name).write_text("")
    session = {"path": str(tmp_path / "session.json"), "image": str(tmp_path / "i.nrrd"),
               "model": str(tmp_path / "m.model"), "device": "cpu", "cache_dir": None}
    run = worker.load_run(json.dumps({"id": 7, "scribbles": "s.nrrd", "outputs": {"labels": "l.nrrd"}}), session)
    assert run["scribbles"] == str(tmp_path / "s.nrrd") and run["outputs"]["labels"] == str(tmp_path / "l.nrrd")
    assert run["id"] == 7 and run["image"] == session["image"] and run["suggest"] == choices.DEFAULT_SUGGESTIONS
    assert run["forget"] is False
    forget = worker.load_run(json.dumps({"forget": True, "scribbles": "s.nrrd", "outputs": {"labels": "l.nrrd"}}),
                             session)
    assert forget["forget"] is True
    with pytest.raises(ScribbleSegError, match=r"^run 6: 'forget' must be true or false, got 'yes'$"):
        worker.load_run(json.dumps({"id": 6, "forget": "yes", "outputs": {"labels": "l.nrrd"}}), session)
    with pytest.raises(ScribbleSegError, match=r"^run 9: 'cuts' is not a field of a run request \(misspelt\?\)"):
        worker.load_run(json.dumps({"id": 9, "scribbles": "s.nrrd", "cuts": {"gamma": 4},
                                    "outputs": {"labels": "l.nrrd"}}), session)
    with pytest.raises(ScribbleSegError, match=r"^run 8: 'method' must be one of"):
        worker.load_run(json.dumps({"id": 8, "scribbles": "s.nrrd", "method": "x", "outputs": {"labels": "l.nrrd"}}),
                        session)
    with pytest.raises(ScribbleSegError, match="image belongs to the session request"):
        worker.load_run(json.dumps({"image": "other.nrrd", "outputs": {"labels": "l.nrrd"}}), session)
    with pytest.raises(ScribbleSegError, match=r"gone.nrrd: no such file or folder \(run field 'scribbles'\)$"):
        worker.load_run(json.dumps({"scribbles": "gone.nrrd", "outputs": {"labels": "l.nrrd"}}), session)
    with pytest.raises(ScribbleSegError, match="orientations belongs to the session request"):
        worker.load_run(json.dumps({"orientations": 2, "outputs": {"labels": "l.nrrd"}}), session)
    flipped = worker.load_run(json.dumps({"scribbles": "s.nrrd", "outputs": {"labels": "l.nrrd"}}),
                              {**session, "orientations": 4})
    assert flipped["orientations"] == 4 and worker._job(flipped).orientations == 4
    with pytest.raises(ScribbleSegError, match="run line: must be a JSON object"):
        worker.load_run("[1]", session)
    # An id that cannot key the parent's answers is refused, and not echoed in the error event.
    line = json.dumps({"id": [1, 2], "scribbles": "s.nrrd", "outputs": {"labels": "l.nrrd"}})
    with pytest.raises(ScribbleSegError, match="run line: 'id' must be an integer or a string"):
        worker.load_run(line, session)
    assert worker._run_id(line) is None


def test_a_session_runs_many_scribbles_on_warm_features(folder, phantom_files, tiny_model):
    from ScribbleSegLib import volume_io

    files, _ = phantom_files
    process, ready = start_session(session_request(folder, phantom_files, tiny_model, "session"))
    try:
        assert ready["metrics"]["shape_zyx"] == PHANTOM_SHAPE
        assert "M-Unet features" in ready["timings"]
        first = process.send({"scribbles": str(files["scribbles"]), "ddml": FAST_DDML,
                              "outputs": {"labels": "s1_labels.nrrd", "probability": "s1_probability.nrrd"}})
        done = process.wait_run(first, timeout=120)
        assert done is not None and done["event"] == "done", process.failure_message()
        assert done["id"] == first
        assert "M-Unet features" not in done["timings"] and "graph cut" in done["timings"]
        assert done["metrics"]["features_cached"] is True

        # A bad run is an input error for that run only; the session keeps serving.
        bad = process.send({"scribbles": "missing.nrrd", "outputs": {"labels": "bad.nrrd"}})
        error = process.wait_run(bad, timeout=60)
        assert error["event"] == "error" and error["kind"] == "input" and "missing.nrrd" in error["message"]

        # New scribbles (a background stroke in a corner of section 0): a new result from the same session.
        image = volume_io.read_image(files["image"])
        more = volume_io.read_scribbles(files["scribbles"], image.shape, image.geometry)
        more[0, :4, :4] = 2
        volume_io.write_labelmap(folder / "more_scribbles.nrrd", more, image.geometry)
        second = process.send({"scribbles": "more_scribbles.nrrd", "ddml": FAST_DDML,
                               "outputs": {"labels": "s2_labels.nrrd"}})
        done2 = process.wait_run(second, timeout=120)
        assert done2["event"] == "done", done2
        assert done2["metrics"]["scribbled_voxels"]["background"] == int(np.count_nonzero(more == 2))
        assert (volume_io.read_label(done2["outputs"]["labels"], image.shape, image.geometry)[0, :4, :4] == 0).all()

        # "forget": the first scribbles again, as the first run saw them (its DDML network and cut from scratch).
        third = process.send({"scribbles": str(files["scribbles"]), "ddml": FAST_DDML, "forget": True,
                              "outputs": {"labels": "s3_labels.nrrd"}})
        done3 = process.wait_run(third, timeout=120)
        assert done3["event"] == "done", done3
        np.testing.assert_array_equal(volume_io.read_label(folder / "s3_labels.nrrd", image.shape, image.geometry),
                                      volume_io.read_label(folder / "s1_labels.nrrd", image.shape, image.geometry))
    finally:
        process.close()
    assert process.wait(timeout=60) == worker.EXIT_DONE

    # The session's first run gives what the one-shot segment task gives.
    status, _, oneshot = run(segment_request(folder, phantom_files, tiny_model, "oneshot"))
    assert status == worker.EXIT_DONE, oneshot.failure_message()
    np.testing.assert_array_equal(
        volume_io.read_label(folder / "s1_labels.nrrd", image.shape, image.geometry),
        volume_io.read_label(oneshot.result["outputs"]["labels"], image.shape, image.geometry))


def test_a_run_cancelled_once_made_leaves_the_next_run_to_start_as_the_first(folder, phantom_files, tiny_model):
    # A cancel sent during the cut is taken as the results are written: the session's DDML network and cut were
    # that run's, which the user never saw, and the next run built on them.
    from ScribbleSegLib import jobs
    from ScribbleSegLib.errors import CancelledError
    from ScribbleSegLib.progress import CancelToken

    files, _ = phantom_files
    request = worker.load_request(session_request(folder, phantom_files, tiny_model, "session_late_cancel"))
    session = jobs.open_session(worker._job(request))

    def job(name):
        # The bank always kept (the tiny model's network doubts the strokes): only that adaptation's f is kept.
        return jobs.SegmentFiles(image=str(files["image"]), model=str(tiny_model), labels=str(folder / name),
                                 scribbles=str(files["scribbles"]), ddml=dict(FAST_DDML, bank_doubt=None),
                                 device="cpu")

    jobs.session_files(session, job("late_first.nrrd"))
    assert session.adapt_memory.f is not None, "a finished run is what the next starts from"
    token = CancelToken()

    def cancel_at_write(stage, fraction, message):
        if stage == "write":
            token.cancel()

    with pytest.raises(CancelledError):
        jobs.session_files(session, job("late_cancelled.nrrd"), progress=cancel_at_write, cancel=token)
    assert not (folder / "late_cancelled.nrrd").exists()
    assert session.adapt_memory.f is None, "the next run starts as the first did"


def test_cancel_stops_a_session_run_and_the_session_goes_on(folder, phantom_files, tiny_model):
    files, _ = phantom_files
    process, _ = start_session(session_request(folder, phantom_files, tiny_model, "session_cancel"))
    try:
        slow = process.send({"scribbles": str(files["scribbles"]), "ddml": {**FAST_DDML, "steps": 100000},
                             "outputs": {"labels": "cancelled_run.nrrd"}})
        process.cancel()
        error = process.wait_run(slow, timeout=120)
        assert error["event"] == "error" and error["kind"] == "cancelled"
        assert not (folder / "cancelled_run.nrrd").exists()
        again = process.send({"scribbles": str(files["scribbles"]), "ddml": FAST_DDML,
                              "outputs": {"labels": "after_cancel.nrrd"}})
        assert process.wait_run(again, timeout=120)["event"] == "done"
        assert (folder / "after_cancel.nrrd").is_file()
    finally:
        process.kill()
    assert process.wait(timeout=30) != worker.EXIT_DONE
    assert "killed by" in process.failure_message() or "exit status" in process.failure_message()
    assert "It was at: " in process.failure_message()  # the last stage the killed session reported
    with pytest.raises(RuntimeError, match="not running"):
        process.send({"scribbles": str(files["scribbles"]), "outputs": {"labels": "never.nrrd"}})


@pytest.mark.skipif(os.name == "nt", reason="process groups and SIGTERM are POSIX")
def test_a_session_takes_paths_and_numpy_numbers_and_names_the_signal_that_stopped_it(folder, phantom_files,
                                                                                      tiny_model):
    # A Path or a numpy number in a run raised json's TypeError after the run's id was used up; a SIGTERM
    # during a run was reported as "stopped without a result", the worker's own "stopped by signal 15" lost.
    files, _ = phantom_files
    process, _ = start_session(session_request(folder, phantom_files, tiny_model, "session_signal"))
    try:
        with pytest.raises(ValueError, match="a run field holds set"):
            process.send({"scribbles": str(files["scribbles"]), "outputs": {"labels": {"x.nrrd"}}})
        slow = process.send({"scribbles": Path(files["scribbles"]), "seed": np.int64(3),
                             "ddml": {**FAST_DDML, "steps": 100000}, "outputs": {"labels": Path("never.nrrd")}})
        assert slow == 1  # the refused run used no id
        deadline, started = time.monotonic() + 60, False
        while not started and time.monotonic() < deadline:  # the run has started once it reports progress
            started = any(event["event"] == "progress" for event in process.poll())
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == worker.EXIT_CANCELLED
    finally:
        process.kill()
    assert process.runs[slow]["kind"] == "cancelled"
    assert process.failure_message() == "stopped by SIGTERM (signal 15)"
    assert not (folder / "never.nrrd").exists()


def test_a_session_that_cannot_open_ends_with_the_reason(tmp_path, tiny_model):
    (tmp_path / "image.nrrd").write_text("not an image")
    request = worker.write_request(tmp_path / "s.json", {"task": "session", "image": "image.nrrd",
                                                         "model": str(tiny_model), "device": "cpu"})
    process = worker.SessionProcess(request)
    process.start()
    assert process.wait_ready(timeout=120) is None
    assert process.wait(timeout=30) == worker.EXIT_BAD_INPUT
    assert process.error["kind"] == "input" and "image.nrrd" in process.failure_message()


def test_a_session_that_crashes_is_reported_with_its_last_output(tmp_path, folder, phantom_files, tiny_model):
    fake = _fake_torch(tmp_path, "import os, sys\nprint('fatal: CUDA driver crashed', file=sys.stderr, flush=True)\n"
                                 "os._exit(7)\n")
    process = worker.SessionProcess(session_request(folder, phantom_files, tiny_model, "crash"), pythonpath=[fake])
    process.start()
    assert process.wait_ready(timeout=120) is None
    assert process.wait(timeout=30) == 7
    message = process.failure_message()
    assert "exit status 7" in message and "fatal: CUDA driver crashed" in message


def test_a_one_shot_segment_request_takes_how_many_sections_to_suggest(tmp_path):
    (tmp_path / "i.nrrd").write_bytes(b"")
    fields = {"task": "segment", "image": "i.nrrd", "scribbles": "i.nrrd", "model": "i.nrrd",
              "outputs": {"labels": "l.nrrd"}}
    assert worker.load_request(worker.write_request(tmp_path / "r.json", fields))["suggest"] == \
        choices.DEFAULT_SUGGESTIONS
    request = worker.load_request(worker.write_request(tmp_path / "r.json", {**fields, "suggest": 5}))
    assert request["suggest"] == 5 and worker._job(request).suggest == 5
