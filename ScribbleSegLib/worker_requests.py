"""The worker's request files and their checks, and the protocol constants both sides share.

:func:`write_request` writes the JSON request file that the worker reads (the
parent's side); :func:`load_request` reads and checks one, and :func:`load_run`
one run line of a session (the worker's side), each naming the file or run and
the field that is wrong.  The formats are described in :mod:`ScribbleSegLib.worker`,
which re-exports the public names.  Slicer's own process imports this module, so
it imports nothing heavy (numpy and torch stay out).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from . import choices
from .errors import ScribbleSegError
from .starter import STARTER, starter_name_hint

PROTOCOL = 1
"""Version of the request and event format; a request with another version is refused."""

TASKS = ("segment", "train", "phantom", "devices", "session")
METHODS = choices.METHODS
DEVICES = choices.DEVICES

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 3

Event = Dict[str, Any]


def write_request(path: Union[str, os.PathLike], request: Dict[str, Any]) -> Path:
    """Write ``request`` as the JSON file the worker reads; add the protocol version.

    Examples
    --------
    >>> import tempfile
    >>> path = write_request(Path(tempfile.mkdtemp()) / "r.json", {"task": "devices"})
    >>> json.loads(path.read_text(encoding="utf-8"))
    {'protocol': 1, 'task': 'devices'}
    """
    path = Path(path)
    path.write_text(json.dumps({"protocol": PROTOCOL, **request}, indent=1), encoding="utf-8")
    return path


def load_request(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read and check a request file; resolve relative paths against its folder.

    Returns
    -------
    dict
        The request with every path made absolute and optional fields filled in.

    Raises
    ------
    ScribbleSegError
        With one line naming the request file and the field that is wrong.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> outputs = {"image": "i.nrrd", "label": "l.seg.nrrd", "scribbles": "s.seg.nrrd"}
    >>> request = load_request(write_request(folder / "r.json", {"task": "phantom", "outputs": outputs}))
    >>> request["every"], request["outputs"]["image"] == str(folder.resolve() / "i.nrrd")
    (8, True)
    >>> load_request(write_request(folder / "r.json", {"task": "phantom", "seed": -1}))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: ...r.json: 'seed' must be a non-negative integer, got -1
    """
    path = Path(path)
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScribbleSegError(f"{path}: cannot read the request ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise ScribbleSegError(f"{path}: is not valid JSON ({_json_problem(exc)})") from None
    if not isinstance(request, dict):
        raise ScribbleSegError(f"{path}: the request must be a JSON object")
    checker = _RequestChecker(path, request)
    if "protocol" not in request:  # a request written by hand, not by write_request
        raise ScribbleSegError(f"{path}: 'protocol' is missing (this ScribbleSegLib reads protocol {PROTOCOL}; "
                               "write_request adds it)")
    if request.get("protocol") != PROTOCOL:
        raise ScribbleSegError(
            f"{path}: protocol {request.get('protocol')!r} is not supported by this ScribbleSegLib "
            f"(expected {PROTOCOL}); the module and the library come from different versions"
        )
    task = checker.choice("task", TASKS)
    if task == "segment":
        checked = checker.segment()
    elif task == "train":
        checked = checker.train()
    elif task == "phantom":
        checked = checker.phantom()
    elif task == "session":
        checked = checker.session()
    else:
        checked = {"protocol": PROTOCOL, "task": task}
    checker.refuse_unknown({"segment": SEGMENT_OUTPUTS, "phantom": PHANTOM_OUTPUTS}.get(task, ()))
    return checked


def load_run(line: str, session_request: Dict[str, Any]) -> Dict[str, Any]:
    """Read and check one run line of a session (see :mod:`ScribbleSegLib.worker`).

    Returns
    -------
    dict
        The run as a ``segment`` request (the session's image, model, device and
        cache), with every path made absolute and ``id`` (None if not given).

    Raises
    ------
    ScribbleSegError
        With one line naming the run and the field that is wrong.

    Examples
    --------
    >>> load_run("{", {"path": "s.json"})
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: run line: is not valid JSON (Expecting property name ...)
    """
    if not line.lstrip().startswith(("{", "[")):  # a word: a misspelt command rather than broken JSON
        shown = line.strip()[:40]
        raise ScribbleSegError(f"run line {shown!r}: not a run (a JSON object), 'cancel' or 'quit'")
    try:
        run = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ScribbleSegError(f"run line: is not valid JSON ({_json_problem(exc)})") from None
    if not isinstance(run, dict):
        raise ScribbleSegError("run line: must be a JSON object")
    run_id = run.get("id")
    if not _is_run_id(run_id):
        raise ScribbleSegError(f"run line: 'id' must be an integer or a string, got {run_id!r}")
    label = "run" if run_id is None else f"run {run_id}"
    forget = run.pop("forget", False)
    if not isinstance(forget, bool):  # "no" would be taken as true
        raise ScribbleSegError(f"{label}: 'forget' must be true or false, got {forget!r}")
    fixed = {k: session_request[k] for k in SESSION_FIELDS if k in session_request}
    stray = sorted(set(run) & {*SESSION_FIELDS, "task"})
    if stray:
        verb = "belongs" if len(stray) == 1 else "belong"
        raise ScribbleSegError(f"{label}: {', '.join(stray)} {verb} to the session request, not to a run")
    checker = _RequestChecker(Path(session_request["path"]), {**run, **fixed}, label=label)
    checked = checker.segment()
    checker.refuse_unknown(SEGMENT_OUTPUTS)
    checked["id"], checked["forget"] = run_id, forget
    return checked


#: Fields every request or run line may hold besides its task's (``path``: where a session request was read).
FRAMING_FIELDS = frozenset({"protocol", "task", "id", "path"})

#: The outputs a segment request (or a session's run) names, and a phantom request.
SEGMENT_OUTPUTS = ("labels", "probability")
PHANTOM_OUTPUTS = ("image", "label", "scribbles")

#: Fields of a session request that its runs take from it (a run line must not give them).
SESSION_FIELDS = ("image", "model", "device", "cache_dir", "orientations", "scan_pixel")


#: What a request's JSON calls the Python types its fields are read as.
_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a whole number", float: "a number",
               bool: "true or false"}


def _json_kinds(types: tuple) -> str:
    """The JSON kinds of ``types``, as a request's writer knows them ('int or float' is a number).

    Examples
    --------
    >>> _json_kinds((int, float)), _json_kinds((dict,)), _json_kinds((str, list))
    ('a number', 'an object', 'a string or a list')
    """
    kinds = [_JSON_KINDS.get(t, t.__name__) for t in types if not (t is int and float in types)]
    return " or ".join(dict.fromkeys(kinds))


def _json_text(value: Any) -> str:
    """``value`` as the request's JSON writes it (true, "5"), or its Python text where JSON has none.

    Examples
    --------
    >>> _json_text(True), _json_text("5"), _json_text([1])
    ('true', '"5"', '[1]')
    """
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class _RequestChecker:
    """Field checks that name the request file and the field."""

    def __init__(self, path: Path, request: Dict[str, Any], label: Optional[str] = None) -> None:
        self.path = path
        self.request = request
        self.base = path.resolve().parent
        self.label = label or str(path)
        self.run_line = "task" not in request  # a session's run line: the session request holds the task
        self.read = set(FRAMING_FIELDS)  # the fields looked at; any other is refused
        self.unlisted: set = set()  # fields let through only empty: not named among a request's fields

    def fail(self, field: str, problem: str) -> ScribbleSegError:
        return ScribbleSegError(f"{self.label}: '{field}' {problem}")

    def refuse_unknown(self, outputs: Sequence[str] = ()) -> None:
        """Refuse a field no check looked at (and, with ``outputs``, an output not among them): a misspelt
        field must not leave its setting at the default without a word."""
        unknown = sorted(set(self.request) - self.read)
        if unknown:
            # A run line's own fields leave out the session's.
            known = self.read - FRAMING_FIELDS - self.unlisted - (set(SESSION_FIELDS) if self.run_line else set())
            fields = (f"the fields are {', '.join(sorted(known))}" if known else
                      "it takes none besides 'protocol' and 'task'")
            raise self.fail(unknown[0], f"is not a field of a {'run' if self.run_line else self.request['task']} "
                                        f"request (misspelt?); {fields}")
        given = self.request.get("outputs") or {}
        unknown = sorted(set(given) - set(outputs)) if outputs else []
        if unknown:
            raise self.fail(f"outputs.{unknown[0]}", f"is not an output of this request (misspelt?); the outputs "
                                                    f"are {', '.join(outputs)}")

    def value(self, field: str, default: Any = ..., types: tuple = ()) -> Any:
        self.read.add(field)
        if field not in self.request or self.request[field] is None:
            if default is ...:
                raise self.fail(field, "is missing")
            return default
        value = self.request[field]
        if types and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
            raise self.fail(field, f"must be {_json_kinds(types)}, got {_json_text(value)}")
        return value

    def choice(self, field: str, choices: Sequence[str], default: Any = ...) -> str:
        value = self.value(field, default, (str,))
        if value not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def path_value(self, value: Any, field: str, must_exist: bool) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, f"must be a file name, got {value!r}")
        resolved = self.base / value
        if must_exist and not resolved.exists():
            kind = "run" if self.run_line else "request"
            hint = starter_name_hint(value) if field in ("model", "init") else ""
            raise ScribbleSegError(f"{resolved}: no such file or folder ({kind} field '{field}'{hint})")
        return str(resolved)

    def input_path(self, field: str, default: Any = ...) -> Optional[str]:
        value = self.value(field, default)
        return None if value is None else self.path_value(value, field, must_exist=True)

    def model_path(self) -> str:
        """The ``model`` field as a file: ``starter`` is the shipped starter model, as on the command line."""
        if self.value("model") == STARTER:
            from .starter import resolve_model

            return str(resolve_model(STARTER))
        return self.input_path("model")

    def path_list(self, field: str, default: Any = ...) -> List[str]:
        values = self.value(field, default, (list,))
        return [self.path_value(v, f"{field}[{i}]", must_exist=True) for i, v in enumerate(values)]

    def settings_dict(self, field: str) -> Dict[str, Optional[Union[int, float, str]]]:
        """A dict of JSON scalars; each field's type and value are checked by ``jobs.settings``, as for
        job files (numbers; strings for choices such as ``cut.data_term``; null for optional settings)."""
        values = self.value(field, {}, (dict,))
        for key, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
                raise self.fail(f"{field}.{key}", f"must be a number or a string, got {value!r}")
        return dict(values)

    def orientations(self) -> int:
        # Not checks.check_orientations: Slicer's own process imports this module, which must not pull numpy in.
        value = self.value("orientations", choices.DEFAULT_ORIENTATIONS, (int,))
        if value not in choices.ORIENTATIONS:
            raise self.fail("orientations", f"must be one of {', '.join(map(str, choices.ORIENTATIONS))}, "
                                            f"got {value!r}")
        return value

    def scan_pixel(self) -> Optional[List[float]]:
        """The optional ``scan_pixel``: two positive numbers, the scan's pixel size X Y in mm."""
        from .jobs import is_positive_pair

        value = self.value("scan_pixel", None, (list,))
        if value is not None and not is_positive_pair(value):
            raise self.fail("scan_pixel", f"must be two positive numbers X Y in mm, got {value!r}")
        return None if value is None else [float(v) for v in value]

    def seed(self) -> int:
        seed = self.value("seed", 0, (int,))
        if seed < 0:
            raise self.fail("seed", f"must be a non-negative integer, got {seed!r}")
        return seed

    def device(self) -> str:
        value = self.value("device", choices.DEFAULT_DEVICE, (str,))
        name = choices.device_name(value)
        if name is None:
            raise self.fail("device", f"must be one of {choices.DEVICES_TEXT}, got {value!r}")
        return name

    def common(self, task: str) -> Dict[str, Any]:
        return {"protocol": PROTOCOL, "task": task, "device": self.device(), "seed": self.seed()}

    def segment(self) -> Dict[str, Any]:
        method = self.choice("method", METHODS, choices.DEFAULT_METHOD)
        inputs = {
            "image": self.input_path("image"),
            "scribbles": self.input_path("scribbles", None if method == "munet" else ...),
            "model": self.model_path(),
        }
        outputs = self.value("outputs", types=(dict,))
        if not outputs.get("labels"):
            raise self.fail("outputs.labels", "is missing")
        cache_dir = self.value("cache_dir", None, (str,))
        suggest = self.value("suggest", choices.DEFAULT_SUGGESTIONS, (int,))
        if suggest < 0:
            raise self.fail("suggest", f"must be a non-negative integer, got {suggest!r}")
        return {
            **self.common("segment"),
            **inputs,
            "method": method,
            "suggest": suggest,
            "cut": self.settings_dict("cut"),
            "ddml": self.settings_dict("ddml"),
            "cache_dir": None if cache_dir is None else self.path_value(cache_dir, "cache_dir", must_exist=False),
            "orientations": self.orientations(),
            "scan_pixel": self.scan_pixel(),
            # The user took back the last run ("Undo last run"): the results kept with the strokes go first.
            "forget": self.value("forget", False, (bool,)),
            "outputs": {
                "labels": self.path_value(outputs["labels"], "outputs.labels", must_exist=False),
                "probability": (self.path_value(outputs["probability"], "outputs.probability", must_exist=False)
                                if outputs.get("probability") else None),
            },
        }

    def session(self) -> Dict[str, Any]:
        if self.request.get("seed") is not None:  # each run line has its own; one here would be ignored
            raise self.fail("seed", "belongs to each run line, not to the session request")
        self.read.add("seed")  # an empty one is let through, and not named as a field of the session's
        self.unlisted.add("seed")
        cache_dir = self.value("cache_dir", None, (str,))
        return {
            "protocol": PROTOCOL, "task": "session", "device": self.device(),
            "image": self.input_path("image"),
            "model": self.model_path(),
            "cache_dir": None if cache_dir is None else self.path_value(cache_dir, "cache_dir", must_exist=False),
            "orientations": self.orientations(),
            "scan_pixel": self.scan_pixel(),
            "path": str(self.path.resolve()),
        }

    def phantom(self) -> Dict[str, Any]:
        seed = self.seed()
        shape = self.value("shape", None, (list,))
        if shape is not None and (len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape)):
            raise self.fail("shape", f"must be three positive integers Z Y X, got {shape!r}")
        every = self.value("every", choices.SAMPLE_SCRIBBLE_EVERY, (int,))
        if every < 1:
            raise self.fail("every", f"must be a positive integer, got {every!r}")
        outputs = self.value("outputs", types=(dict,))
        paths = {}
        for key, suffix in zip(PHANTOM_OUTPUTS, (".nrrd", ".seg.nrrd", ".seg.nrrd")):
            path = self.path_value(outputs.get(key), f"outputs.{key}", must_exist=False)
            if not path.lower().endswith(suffix):
                raise self.fail(f"outputs.{key}", f"must end in {suffix}")
            paths[key] = path
        return {"protocol": PROTOCOL, "task": "phantom", "seed": seed,
                "shape": shape, "every": every, "outputs": paths}

    def train(self) -> Dict[str, Any]:
        images, labels = self.path_list("images"), self.path_list("labels")
        if not images or len(images) != len(labels):
            raise self.fail("labels", f"must name one label per image ({len(images)} images, {len(labels)} labels)")
        val_images, val_labels = self.path_list("val_images", []), self.path_list("val_labels", [])
        if len(val_images) != len(val_labels):
            raise self.fail("val_labels", "must name one label per validation image")
        preset = self.choice("preset", tuple(choices.PRESETS), choices.DEFAULT_PRESET)
        max_minutes = self.value("max_minutes", None, (int, float))
        if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
            # JSON's Infinity would run the whole training, then fail to be stored in the model's record.
            raise self.fail("max_minutes", f"must be a positive finite number, got {max_minutes!r}")
        init = self.value("init", None, (str,))
        if init is not None and init != "starter":
            init = self.path_value(init, "init", must_exist=True)
        given = [field for field in ("arch", "preset") if self.request.get(field) is not None]
        if init is not None and given:  # as the command line: a fine-tune keeps its parent's network
            raise self.fail(given[0], "cannot be given with 'init': a fine-tuned model keeps its parent's "
                                      "architecture and size")
        max_iters = self.value("max_iters", None, (int,))
        if max_iters is not None and max_iters < 1:
            raise self.fail("max_iters", f"must be a positive integer, got {max_iters!r}")
        # The budgets not given: the preset's, or a fine-tune's own (as on the command line).
        max_iters, max_minutes, _ = choices.training_budget(preset, init is not None, max_iters=max_iters,
                                                            max_minutes=max_minutes)
        names = self.value("names", None, (list,))
        if names is not None and (len(names) != len(images) or not all(isinstance(n, str) for n in names)):
            raise self.fail("names", "must give one name (a string) per image")
        from .fileio import check_outputs

        output = self.path_value(self.value("output"), "output", must_exist=False)
        # Before any work: the model must not replace a training file, the parent model or this request.
        inputs = {"the request": str(self.path), "'init'": init}
        for field, paths in (("images", images), ("labels", labels), ("val_images", val_images),
                             ("val_labels", val_labels)):
            inputs.update({f"'{field}[{k}]'": v for k, v in enumerate(paths)})
        try:
            check_outputs({"'output'": output}, {k: v for k, v in inputs.items() if v != "starter"})
        except ScribbleSegError as exc:
            raise ScribbleSegError(f"{self.label}: {exc}") from None
        return {
            **self.common("train"),
            "images": images, "labels": labels, "val_images": val_images, "val_labels": val_labels,
            "output": output,
            "arch": self.choice("arch", choices.ARCHITECTURES, choices.DEFAULT_ARCHITECTURE),
            "preset": preset,
            "max_minutes": None if max_minutes is None else float(max_minutes),
            "max_iters": max_iters, "init": init, "names": names,
        }


def _json_problem(exc: Exception) -> str:
    """What json.loads found wrong (its RecursionError's text says nothing about the JSON)."""
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _is_run_id(value: Any) -> bool:
    """Whether ``value`` can be a run's ``id`` (None: not given)."""
    return value is None or (isinstance(value, (int, str)) and not isinstance(value, bool))
