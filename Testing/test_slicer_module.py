"""Checks of the Slicer module that run without Slicer.

Slicer cannot be installed here, so these tests read ``ScribbleSeg.py`` and its
``.ui`` file as text: the names the module uses exist in the ``.ui``, the
parameter node matches the widgets bound to it, nothing heavy is imported at
file scope, the syntax is Python 3.9 (Slicer 5.6 and 5.8) and 3.12 (5.10+),
and the icons, colours and dependency lists agree with the library.
"""

import ast
import os
import time
import dataclasses
import struct
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "ScribbleSeg" / "ScribbleSeg.py"
UI = ROOT / "ScribbleSeg" / "Resources" / "UI" / "ScribbleSeg.ui"
REQUIREMENTS = ROOT / "ScribbleSeg" / "Resources" / "requirements.txt"
ICONS = [ROOT / "Resources" / "ScribbleSeg.png", ROOT / "ScribbleSeg" / "Resources" / "Icons" / "ScribbleSeg.png"]
SLICER_SCRIPTS = [MODULE, *sorted((ROOT / "ScribbleSeg" / "Testing").rglob("*.py"))]
LIBRARY = sorted(p for p in (ROOT / "ScribbleSegLib").rglob("*.py") if "__pycache__" not in p.parts)

# What ScribbleSeg.py may import at file scope: the standard library and Slicer's own modules.
FILE_SCOPE_IMPORTS = {"contextlib", "enum", "importlib", "logging", "os", "pathlib", "shutil", "subprocess", "sys",
                      "tempfile", "time", "typing", "ctk", "qt", "vtk", "slicer"}
HEAVY = {"torch", "maxflow", "numpy", "SimpleITK", "scipy", "skimage", "sklearn", "slicerio", "nrrd",
         "ScribbleSegLib", "PyTorchUtils"}


@pytest.fixture(scope="module")
def tree():
    return ast.parse(MODULE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ui():
    return ET.parse(UI).getroot()


def widgets(ui):
    return {w.get("name"): w for w in ui.iter("widget")}


def widget_property(widget, name):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return prop
    return None


def parameter_class(tree):
    return next(node for node in tree.body
                if isinstance(node, ast.ClassDef) and node.name == "ScribbleSegParameterNode")


def parameters(tree):
    """``{name: (type text, default text or None)}`` of the parameter node's fields."""
    out = {}
    for node in parameter_class(tree).body:
        if isinstance(node, ast.AnnAssign):
            value = None if node.value is None else ast.unparse(node.value)
            out[node.target.id] = (ast.unparse(node.annotation), value)
    return out


def module_constant(tree, name):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def enum_values(tree, name):
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)
    return [ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.Assign)]


# ---------------------------------------------------------------------------
# The .ui file
# ---------------------------------------------------------------------------


def test_ui_is_a_designer_file_whose_top_widget_is_a_qmrmlwidget(ui):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    assert ui.findtext("class") == "ScribbleSeg"
    top = ui.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "ScribbleSeg")
    names = [w.get("name") for w in ui.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"


def test_every_custom_widget_is_declared_with_its_header(ui):
    declared = {cw.findtext("class"): cw for cw in ui.find("customwidgets")}
    used = {w.get("class") for w in ui.iter("widget")}
    for cls in used:
        if not cls.startswith("Q"):
            assert cls in declared, f"{cls} is used but not declared in <customwidgets>"
            assert declared[cls].findtext("header") == f"{cls}.h"


def test_every_ui_name_the_module_uses_exists_in_the_ui(tree, ui):
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert len(used) > 20
    missing = used - set(widgets(ui))
    assert not missing, f"self.ui names missing from {UI.name}: {sorted(missing)}"


def test_parameter_bound_widgets_can_represent_their_parameters(tree, ui):
    # The widget types that slicer.parameterNodeWrapper connects (its guiConnectors.py) for each type.
    enums = {"Method", "Architecture", "NetworkSize", "Orientations"}
    accepted = {"float": {"QDoubleSpinBox", "ctkSliderWidget"}, "int": {"QSpinBox", "QSlider"},
                "bool": {"QCheckBox"}, "node": {"qMRMLNodeComboBox"}, "enum": {"QComboBox"}}
    fields = parameters(tree)
    bound = {}
    for name, widget in widgets(ui).items():
        prop = widget_property(widget, "SlicerParameterName")
        if prop is not None:
            bound[prop.findtext("string")] = widget.get("class")
    assert len(bound) >= 15
    for parameter, cls in bound.items():
        assert parameter in fields, f"{parameter} is bound in the .ui but not a parameter"
        annotation = fields[parameter][0]
        kind = ("node" if annotation.startswith("vtkMRML") else "enum" if annotation in enums
                else next(k for k in ("float", "int", "bool") if k in annotation))
        assert cls in accepted[kind], f"{parameter} ({annotation}) is bound to a {cls}"


def test_combo_boxes_filled_by_the_module_match_its_constants(tree, ui):
    items = widgets(ui)["deviceComboBox"].findall("item")
    assert len(items) == len(module_constant(tree, "DEVICES")) == 3
    assert module_constant(tree, "DEVICES") == ("auto", "cpu", "cuda")


# ---------------------------------------------------------------------------
# Agreement with the library
# ---------------------------------------------------------------------------


def test_parameter_defaults_are_the_library_defaults(tree):
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.graphcut import GraphCutParams

    fields = {name: float(ast.literal_eval(default)) for name, (_t, default) in parameters(tree).items()
              if default and default[0].isdigit()}
    cut, ddml = GraphCutParams(), DDMLConfig()
    assert (fields["gamma"], fields["sigma"], fields["delta"]) == (cut.gamma, cut.sigma, cut.delta)
    assert (fields["ddmlSteps"], fields["headSteps"], fields["scribbleShare"]) == (
        ddml.steps, ddml.head_steps, ddml.scribble_share)


def test_cut_and_ddml_settings_the_module_sends_are_library_fields(tree):
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.graphcut import GraphCutParams

    known = {"cut": {f.name for f in dataclasses.fields(GraphCutParams)},
             "ddml": {f.name for f in dataclasses.fields(DDMLConfig)}}
    sent = {"cut": set(), "ddml": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in sent and isinstance(node.value, ast.Dict):
            sent[node.arg] |= {ast.literal_eval(k) for k in node.value.keys}
    assert sent["cut"] == {"gamma", "sigma", "delta"}
    assert sent["ddml"] and sent["ddml"] <= known["ddml"]
    assert sent["cut"] <= known["cut"]


def test_choices_match_the_library(tree):
    # The panel keeps literal copies (no library import at file scope); ScribbleSegLib.choices is the source.
    from ScribbleSegLib import choices, worker
    from ScribbleSegLib.nets import ARCHS

    assert tuple(enum_values(tree, "Method")) == choices.METHODS == worker.METHODS
    assert tuple(enum_values(tree, "Architecture")) == choices.ARCHITECTURES == ARCHS
    assert tuple(enum_values(tree, "NetworkSize")) == tuple(choices.PRESETS)
    assert tuple(enum_values(tree, "Orientations")) == choices.ORIENTATIONS
    assert module_constant(tree, "DEVICES") == choices.DEVICES == worker.DEVICES


def test_panel_defaults_are_the_library_defaults(tree):
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ScribbleSegParameterNode")
    defaults = {n.target.id: ast.unparse(n.value) for n in node.body if isinstance(n, ast.AnnAssign) and n.value}
    from ScribbleSegLib import choices

    members = {"Method": "method", "Architecture": "trainArchitecture", "NetworkSize": "trainSize",
               "Orientations": "orientations"}
    values = {}
    for enum_name, field in members.items():
        member = defaults[field].split(".")[1]
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == enum_name)
        values[field] = next(ast.literal_eval(a.value) for a in cls.body
                             if isinstance(a, ast.Assign) and a.targets[0].id == member)
    assert values == {"method": choices.DEFAULT_METHOD, "trainArchitecture": choices.DEFAULT_ARCHITECTURE,
                      "trainSize": choices.DEFAULT_PRESET, "orientations": choices.DEFAULT_ORIENTATIONS}


def test_the_panel_leaves_the_training_time_to_the_network_size(tree, ui, tmp_path):
    # The time budget of each size is defined once (ScribbleSegLib.choices.PRESETS) and filled in by the
    # worker: by default the panel (parameter, logic, .ui spin box at its special value) sends none, so a
    # Paper network is not cut off at the Small one's 30 minutes.
    from ScribbleSegLib import choices, worker

    own = module_constant(tree, "OWN_BUDGET")
    assert own == 0.0
    node = parameter_class(tree)
    field = next(n for n in node.body if isinstance(n, ast.AnnAssign) and n.target.id == "trainMinutes")
    assert ast.unparse(field.value) == "OWN_BUDGET"
    assert "WithinRange(OWN_BUDGET," in ast.unparse(field.annotation)
    start = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "startTraining")
    keywords = dict(zip((a.arg for a in start.args.kwonlyargs), start.args.kw_defaults))
    assert ast.unparse(keywords["maxMinutes"]) == "None"
    assert "'max_minutes': float(maxMinutes) if maxMinutes else None" in ast.unparse(start)
    spin = widgets(ui)["trainMinutesSpinBox"]
    assert float(widget_property(spin, "value").findtext("double")) == own
    assert float(widget_property(spin, "minimum").findtext("double")) == own  # where Qt shows the special text
    special = widget_property(spin, "specialValueText").findtext("string")
    tip = widget_property(spin, "toolTip").findtext("string")
    small, paper = choices.PRESETS["small"].max_minutes, choices.PRESETS["paper"].max_minutes
    assert paper is None and f"Small: {small:g} min" in special and "Paper: none" in special
    assert f"{small:g} minutes for Small, none for Paper" in tip
    for name, preset in choices.PRESETS.items():
        (tmp_path / "i.nrrd").write_bytes(b"x")
        path = worker.write_request(tmp_path / "r.json", {
            "task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model",
            "preset": name, "max_minutes": None})
        assert worker.load_request(path)["max_minutes"] == preset.max_minutes, name


def test_paper_training_gets_the_presets_step_budget(tmp_path):
    # The panel sends only the preset and minutes; the worker fills in the preset's step budget.
    from ScribbleSegLib import choices, worker

    for name, preset in choices.PRESETS.items():
        (tmp_path / "i.nrrd").write_bytes(b"x")
        path = worker.write_request(tmp_path / "r.json", {
            "task": "train", "images": ["i.nrrd"], "labels": ["i.nrrd"], "output": "m.model",
            "preset": name, "max_minutes": 30.0})
        request = worker.load_request(path)
        assert request["max_iters"] == preset.max_iters
    assert choices.PRESETS["paper"].max_iters > choices.PRESETS["small"].max_iters


def test_segment_colours_are_those_of_the_files(tree):
    from ScribbleSegLib import volume_io

    assert module_constant(tree, "HEART_COLOR") == volume_io.HEART_COLOR
    assert module_constant(tree, "BACKGROUND_COLOR") == volume_io.BACKGROUND_COLOR


def test_requirements_are_the_project_dependencies_slicer_does_not_ship():
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    wanted = {Requirement(r).name.lower(): Requirement(r).specifier for r in lines}
    declared = {Requirement(r).name.lower(): Requirement(r).specifier for r in project}
    for name, specifier in wanted.items():
        assert declared.get(name) == specifier, f"{name}{specifier} differs from pyproject.toml"
        assert all(s.operator == ">=" for s in specifier), "lower bounds only"
    # torch comes from the PyTorch extension, numpy/SimpleITK/vtk are Slicer's, tqdm only serves the CLI.
    assert set(declared) - set(wanted) == {"torch", "numpy", "simpleitk", "vtk", "tqdm"}


def test_library_modules_the_slicer_process_imports_are_light():
    # ScribbleSeg.py imports these in Slicer's own process; the heavy work happens in the worker.
    code = ("import sys; import ScribbleSegLib.worker, ScribbleSegLib.errors, ScribbleSegLib.progress, "
            "ScribbleSegLib.fileio, ScribbleSegLib.commands.common; "
            "print(','.join(sorted(m for m in ('torch', 'maxflow', 'numpy', 'SimpleITK', 'vtk', 'slicerio') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------
# What runs when Slicer imports the module
# ---------------------------------------------------------------------------


def _file_scope_imports(tree):
    names = set()
    for node in tree.body:
        for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(inner, ast.Import):
                names |= {alias.name.split(".")[0] for alias in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.level == 0:
                names.add(inner.module.split(".")[0])
    return names


def test_no_heavy_package_is_imported_at_file_scope(tree):
    imported = _file_scope_imports(tree)
    assert not imported & HEAVY
    assert imported <= FILE_SCOPE_IMPORTS, f"unexpected file-scope imports: {sorted(imported - FILE_SCOPE_IMPORTS)}"


def test_importing_the_module_runs_no_code(tree):
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # the docstring
            continue
        assert isinstance(node, ast.Assign), f"line {node.lineno}: statement at file scope"
        ast.literal_eval(node.value)  # constants only


@pytest.mark.parametrize("version", [(3, 9), (3, 12)])
@pytest.mark.parametrize("path", SLICER_SCRIPTS, ids=lambda p: p.name)
def test_module_compiles_under_the_python_of_every_supported_slicer(path, version):
    source = path.read_text(encoding="utf-8")
    ast.parse(source, filename=str(path), feature_version=version)
    compile(source, str(path), "exec")


def _runtime_union_annotations(tree):
    """``X | Y`` annotations evaluated when the module is imported (TypeError on Python 3.9)."""
    if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
           for n in tree.body):
        return []
    found = []
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in annotations:
            if annotation is not None and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                                              for n in ast.walk(annotation)):
                found.append(node.lineno)
    return found


@pytest.mark.parametrize("path", SLICER_SCRIPTS + LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_that_runs_in_slicer_is_python_39(path):
    # Slicer 5.6 and 5.8 run the module and the worker (ScribbleSegLib) with Python 3.9.
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=(3, 9))
    assert not _runtime_union_annotations(tree), "X | Y annotations need 'from __future__ import annotations'"


# ---------------------------------------------------------------------------
# Icons
# ---------------------------------------------------------------------------


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("path", ICONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_icons_are_128x128_pngs(path):
    assert png_size(path) == (128, 128)


def test_the_screenshot_is_a_png():
    width, height = png_size(ROOT / "Resources" / "Screenshot01.png")
    assert width >= 600 and height >= 300


# ---------------------------------------------------------------------------
# The logic's job machinery, run with stand-ins for Slicer's Python modules
# ---------------------------------------------------------------------------
#
# Only what ScribbleSegJob and the logic's job methods touch is imitated: a QTimer driven by
# processEvents, QSettings, a temporary folder.  The worker process and ScribbleSegLib are real.


class _FakeTimer:
    active = []
    shots = []

    def __init__(self):
        self._callback = None
        self._active = False

    def setInterval(self, msec):
        pass

    def connect(self, signal, callback):
        self._callback = callback

    def start(self):
        self._active = True
        _FakeTimer.active.append(self)

    def stop(self):
        self._active = False

    def isActive(self):
        return self._active

    @staticmethod
    def singleShot(msec, callback):
        _FakeTimer.shots.append((time.monotonic() + msec / 1000, callback))


def _process_events():
    for timer in list(_FakeTimer.active):
        if timer.isActive():
            timer._callback()
    due = [shot for shot in _FakeTimer.shots if shot[0] <= time.monotonic()]
    for shot in due:
        _FakeTimer.shots.remove(shot)
        shot[1]()


class _ObservationMixin:
    """slicer.util.VTKObservationMixin's bookkeeping (5.6 to main): removing an observer it does not hold warns
    "does not have observer", as the real one does."""

    def _observations(self) -> set:
        return self.__dict__.setdefault("_fake_observations", set())

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        self._observations().add((id(obj), event, method))

    def removeObserver(self, obj, event, method):
        import warnings

        try:
            self._observations().remove((id(obj), event, method))
        except KeyError:
            warnings.warn("does not have observer")

    def hasObserver(self, obj, event, method):
        return (id(obj), event, method) in self._observations()

    def removeObservers(self, method=None):
        self._observations().clear()


@pytest.fixture
def scribbleseg(monkeypatch, tmp_path):
    """ScribbleSeg.py imported with stand-ins for qt, ctk and slicer."""
    import importlib.util
    import types

    settings = {}
    monkeypatch.setenv("SCRIBBLESEG_CACHE_DIR", str(tmp_path / "features"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    qt = types.SimpleNamespace(
        QTimer=_FakeTimer,
        QSettings=lambda: types.SimpleNamespace(value=lambda key, default="": settings.get(key, default),
                                                setValue=settings.__setitem__))
    app = types.SimpleNamespace(processEvents=_process_events, testingEnabled=lambda: False,
                                temporaryPath=str(tmp_path), cachePath=str(tmp_path / "cache"))
    def temp_directory(key):
        # As Slicer's: the key and the time to the millisecond, an existing folder taken as it is (two calls in
        # one millisecond share it). The module must not use it for job folders.
        path = tmp_path / f"{key}-same-millisecond"
        path.mkdir(exist_ok=True)
        return str(path)

    displayed = []
    util = types.SimpleNamespace(VTKObservationMixin=_ObservationMixin, tempDirectory=temp_directory,
                                 displayed=displayed)
    slicer = types.ModuleType("slicer")
    slicer.app = app
    slicer.util = util
    slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
    slicer.vtkMRMLSegmentationNode = type("vtkMRMLSegmentationNode", (), {})
    slicer.i18n = types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text)
    slicer.parameterNodeWrapper = types.SimpleNamespace(parameterNodeWrapper=lambda cls: cls,
                                                        WithinRange=lambda low, high: (low, high))
    base = type("Base", (), {"__init__": lambda self, *args: None})
    import unittest

    test_base = type("ScriptedLoadableModuleTest", (unittest.TestCase,),
                     {"delayDisplay": lambda self, message, msec=100: displayed.append(message)})
    slicer.ScriptedLoadableModule = types.SimpleNamespace(
        ScriptedLoadableModule=base, ScriptedLoadableModuleLogic=base, ScriptedLoadableModuleWidget=base,
        ScriptedLoadableModuleTest=test_base)
    for name, module in {"qt": qt, "ctk": types.SimpleNamespace(), "slicer": slicer, "slicer.util": util,
                         "slicer.i18n": slicer.i18n, "slicer.parameterNodeWrapper": slicer.parameterNodeWrapper,
                         "slicer.ScriptedLoadableModule": slicer.ScriptedLoadableModule}.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("ScribbleSeg", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _FakeTimer.active.clear()
    _FakeTimer.shots.clear()
    yield module
    for timer in _FakeTimer.active:
        timer.stop()


def test_the_parameter_node_annotations_evaluate(scribbleseg):
    import typing

    hints = typing.get_type_hints(scribbleseg.ScribbleSegParameterNode, include_extras=True)
    assert hints["method"] is scribbleseg.Method
    assert scribbleseg.Method.FULL.label().endswith("(full)")


def test_the_library_is_found_beside_the_module_folder(scribbleseg):
    assert Path(scribbleseg.libraryFolder()) == ROOT


def test_each_job_and_session_gets_a_folder_of_its_own(scribbleseg, tmp_path):
    # slicer.util.tempDirectory names a folder by its key and the millisecond and takes an existing one: device
    # detection beside a job could share the job's folder, overwrite its request and delete it when done.
    folders = {scribbleseg.newTemporaryFolder("ScribbleSeg") for _ in range(3)}
    folders.add(scribbleseg.newTemporaryFolder("ScribbleSegSession"))
    assert len(folders) == 4 and all(Path(f).parent == tmp_path and not any(Path(f).iterdir()) for f in folders)
    source = Path(scribbleseg.__file__).read_text(encoding="utf-8")
    assert "tempDirectory(" not in source


def test_a_job_runs_the_worker_and_returns_its_error_with_the_scene_folder_cleaned(scribbleseg):
    logic = scribbleseg.ScribbleSegLogic()
    folder = logic._jobFolder()
    events = []
    job = logic._startJob("segment", folder, {"image": "missing.nrrd"}, onEvent=events.append)
    assert logic.busy
    with pytest.raises(Exception, match="already running a segment job"):
        logic._jobFolder()
    job.wait()
    assert not logic.busy and not job.succeeded and not job.cancelled
    assert "missing.nrrd: no such file" in job.errorMessage
    assert [e["event"] for e in events][-2:] == ["error", "exit"]
    assert not Path(folder).exists()
    with pytest.raises(Exception, match="missing.nrrd"):
        logic._raiseIfFailed(job)


@pytest.mark.skipif(sys.platform == "win32", reason="exit status of a killed process")
def test_cancel_kills_a_worker_that_does_not_stop_in_time(scribbleseg, tmp_path):
    scribbleseg.CANCEL_GRACE_MS = 200
    logic = scribbleseg.ScribbleSegLogic()
    outputs = {key: str(tmp_path / name) for key, name in
               (("image", "i.nrrd"), ("label", "l.seg.nrrd"), ("scribbles", "s.seg.nrrd"))}
    events = []
    job = logic._startJob("phantom", logic._jobFolder(), {"seed": 0, "shape": [64, 256, 256], "outputs": outputs},
                          onEvent=events.append)
    while not any(e["event"] == "started" for e in events):
        _process_events()
        time.sleep(0.01)
    logic.cancel()
    job.wait()
    assert job.cancelled and not job.succeeded and job.errorMessage == "Cancelled."
    assert job.process.returncode == -9, "killed, since making the phantom has no cancel check for seconds"
    assert not any(Path(p).exists() for p in outputs.values())


def test_devices_are_described_for_the_panel(scribbleseg):
    describe = scribbleseg.ScribbleSegLogic.describeDevices
    assert "no CUDA GPU (torch 2.1.0)" in describe({"torch": "2.1.0", "devices": [{"id": "cpu"}]})
    gpu = {"id": "cuda:0", "name": "NVIDIA H100", "memory_gb": 79.6}
    assert describe({"torch": "2.5.1+cu121", "devices": [{"id": "cpu"}, gpu]}) == "NVIDIA H100, 79.6 GB"


def test_results_of_another_volume_are_not_reused(scribbleseg):
    class Node:
        def __init__(self, node_id, owner=None):
            self.node_id, self.owner = node_id, owner

        def GetID(self):
            return self.node_id

        def GetAttribute(self, name):
            assert name == scribbleseg.OUTPUT_VOLUME_ATTRIBUTE
            return self.owner

    volume = Node("vtkMRMLVectorVolumeNode1")
    result_of = scribbleseg.ScribbleSegLogic.resultOf
    assert result_of(Node("s1", owner="vtkMRMLVectorVolumeNode1"), volume) is not None
    assert result_of(Node("s2"), volume) is not None, "a node the user picked and never used"
    assert result_of(Node("s3", owner="vtkMRMLVectorVolumeNode2"), volume) is None
    assert result_of(None, volume) is None


def test_dependency_checks_read_requirements_and_pin_what_slicer_ships(scribbleseg):
    import importlib.metadata

    logic = scribbleseg.ScribbleSegLogic()
    assert logic.requirements() == ["PyMaxflow>=1.3.0", "slicerio>=1.0"]
    assert logic.missingRequirements() == []
    path = logic._writeConstraints()
    try:
        pins = Path(path).read_text().split()
    finally:
        Path(path).unlink()
    assert f"numpy=={importlib.metadata.version('numpy')}" in pins
    assert f"SimpleITK=={importlib.metadata.version('SimpleITK')}" in pins
    assert f"torch=={importlib.metadata.version('torch')}" in pins


def test_device_and_model_path_are_remembered(scribbleseg):
    logic = scribbleseg.ScribbleSegLogic()
    assert logic.device() == "auto"
    logic.setDevice("cpu")
    logic.setModelPath("/models/heart.model")
    assert (logic.device(), logic.modelPath()) == ("cpu", "/models/heart.model")
    with pytest.raises(ValueError):
        logic.setDevice("tpu")


# ---------------------------------------------------------------------------
# The panel, with stand-in widgets
# ---------------------------------------------------------------------------


class _FakeWidget:
    """A Qt widget stand-in: any property can be set; any method call is recorded and returns None."""

    def __init__(self):
        self.__dict__["calls"] = []
        self.__dict__["visible"] = True
        self.__dict__["enabled"] = True

    def hide(self):
        self.visible = False

    def show(self):
        self.visible = True

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, args))


class _FakeUi:
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        widget = _FakeWidget()
        setattr(self, name, widget)
        return widget


def _panel(scribbleseg, **parameters):
    """A ScribbleSegWidget with stand-in widgets, a logic and a parameter node stand-in (no setup())."""
    import types

    widget = scribbleseg.ScribbleSegWidget()
    widget.ui = _FakeUi()
    widget.logic = scribbleseg.ScribbleSegLogic()
    widget._binding = scribbleseg.ParameterNodeGuiBinding(widget.ui)
    fields = dict(inputVolume=None, scribbleSegmentation=None, outputSegmentation=None, outputProbability=None,
                  method=scribbleseg.Method.FULL, gamma=8.0, sigma=0.1, delta=0.05, ddmlSteps=400, headSteps=200,
                  scribbleShare=0.05, seed=0, orientations=scribbleseg.Orientations.ONE,
                  createProbability=False, show3D=True, sectionPixelSize=0.001,
                  sectionSpacing=0.005, sectionDownsample=1)
    fields.update(parameters)
    widget._parameterNode = types.SimpleNamespace(**fields)
    widget.parent = types.SimpleNamespace(isEntered=True)  # qSlicerAbstractModuleWidget's property: shown
    return widget


def test_leaving_the_module_and_stopping_again_does_not_warn(scribbleseg):
    # exit() stops observing the parameter node, and setParameterNode on the next enter (or a scene close while
    # hidden) stopped again: VTKObservationMixin warned "does not have observer" each time.
    import warnings

    panel = _panel(scribbleseg)
    event = scribbleseg.vtk.vtkCommand.ModifiedEvent
    panel.addObserver(panel._parameterNode, event, panel._onParameterNodeModified)
    panel._releaseSegmentEditor = lambda: None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        panel.exit()
        assert not panel.hasObserver(panel._parameterNode, event, panel._onParameterNodeModified)
        panel._stopObservingParameterNode()


def test_an_early_error_leaves_no_progress_bar_or_status_behind(scribbleseg):
    errors = []
    scribbleseg.slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
    panel = _panel(scribbleseg)
    panel.onApplyButton()  # no input volume: refused before any job starts
    assert errors and "input volume" in errors[0]
    assert panel.ui.progressBar.visible is False
    assert panel.ui.statusLabel.text == ""
    assert panel.ui.applyButton.enabled and panel.ui.applyButton.text == "Apply"


def test_cancelling_the_loading_of_sections_shows_no_error(scribbleseg, tmp_path):
    from ScribbleSegLib.errors import CancelledError

    errors = []
    panel = _panel(scribbleseg)
    panel.ui.sectionFolderPathLineEdit.currentPath = str(tmp_path)
    scribbleseg.slicer.util.createProgressDialog = lambda **kwargs: _FakeWidget()
    scribbleseg.slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
    panel.logic.ensureDependencies = lambda torch=True: None

    def cancelled(*args, **kwargs):
        raise CancelledError()

    panel.logic.loadSectionFolder = cancelled
    panel.onLoadSectionsButton()
    assert errors == []
    panel.logic.loadSectionFolder = lambda *args, **kwargs: (_ for _ in ()).throw(scribbleseg.userError("no images"))
    panel.onLoadSectionsButton()
    assert errors == ["no images"], "a real error is still shown"


def test_loaded_section_folders_go_into_the_path_history(scribbleseg, tmp_path):
    import types

    panel = _panel(scribbleseg)
    panel.ui.sectionFolderPathLineEdit.currentPath = str(tmp_path)
    scribbleseg.slicer.util.createProgressDialog = lambda **kwargs: _FakeWidget()
    scribbleseg.slicer.util.setSliceViewerLayers = lambda **kwargs: None
    scribbleseg.slicer.util.errorDisplay = lambda text, **kwargs: None
    panel.logic.ensureDependencies = lambda torch=True: None
    panel.logic.loadSectionFolder = lambda *args, **kwargs: (_ for _ in ()).throw(
        scribbleseg.userError("no images"))
    panel.onLoadSectionsButton()
    history = [c for c in panel.ui.sectionFolderPathLineEdit.calls if c[0] == "addCurrentPathToHistory"]
    assert history == [], "a folder that did not load is not remembered"
    panel.logic.loadSectionFolder = lambda *args, **kwargs: types.SimpleNamespace(name="volume")
    panel.onLoadSectionsButton()
    history = [c for c in panel.ui.sectionFolderPathLineEdit.calls if c[0] == "addCurrentPathToHistory"]
    assert len(history) == 1


def _panel_with_editor_node(scribbleseg):
    """A :func:`_panel` sharing a stand-in editor node (its mode 0) whose overwrite mode the panel set to None (2)."""
    import types

    scribbleseg.slicer.vtkMRMLSegmentEditorNode = types.SimpleNamespace(OverwriteNone=2)
    panel = _panel(scribbleseg)
    node = types.SimpleNamespace(mode=0)
    node.GetOverwriteMode = lambda: node.mode
    node.SetOverwriteMode = lambda mode: setattr(node, "mode", mode)
    panel._segmentEditorNode = node
    panel._setOverwriteNone()
    return panel, node


def test_a_reload_releases_the_embedded_editor_and_restores_the_overwrite_mode(scribbleseg):
    # Slicer's reload calls cleanup() only, never exit().
    import types

    panel, node = _panel_with_editor_node(scribbleseg)
    assert node.mode == 2
    calls = []
    editor = types.SimpleNamespace(setActiveEffect=lambda effect: calls.append(("setActiveEffect", effect)),
                                   uninstallKeyboardShortcuts=lambda: calls.append("uninstallKeyboardShortcuts"),
                                   removeViewObservations=lambda: calls.append("removeViewObservations"),
                                   setMRMLSegmentEditorNode=lambda n: calls.append(("setMRMLSegmentEditorNode", n)))
    panel.ui.segmentEditorWidget = editor
    panel.removeObservers = lambda: None  # VTKObservationMixin's, not stood in for
    panel.cleanup()
    assert node.mode == 0
    # ... and the old panel's editor, which a reload only hides, lets go of the shared editor node.
    assert calls == [("setActiveEffect", None), "uninstallKeyboardShortcuts", "removeViewObservations",
                     ("setMRMLSegmentEditorNode", None)]
    assert panel._segmentEditorNode is None


def test_the_overwrite_mode_of_a_closed_scene_is_not_restored_onto_the_next(scribbleseg):
    import types

    class EditorNode:
        def __init__(self, mode):
            self.mode = mode

        def GetOverwriteMode(self):
            return self.mode

        def SetOverwriteMode(self, mode):
            self.mode = mode

    scribbleseg.slicer.vtkMRMLSegmentEditorNode = types.SimpleNamespace(OverwriteNone=2)
    panel = _panel(scribbleseg)
    first, second = EditorNode(0), EditorNode(1)
    panel._segmentEditorNode = first
    panel._setOverwriteNone()
    assert first.mode == 2
    panel.onSceneStartClose(None, None)
    panel.parent = types.SimpleNamespace(isEntered=True)
    panel.initializeParameterNode = lambda: None

    def select():
        panel._segmentEditorNode = second

    panel._selectSegmentEditorNode = select
    panel.onSceneEndClose(None, None)
    assert second.mode == 2
    panel.exit()
    assert second.mode == 1, "the new scene's editor node gets its own mode back, not the closed scene's"


def test_a_scene_imported_while_the_panel_is_open_gets_overwrite_none_again(scribbleseg):
    # The imported scene's editor node (a singleton) replaces the shared one's content, its overwrite mode too.
    import types

    panel, node = _panel_with_editor_node(scribbleseg)
    node.mode = 1  # what the imported scene's editor node held
    panel._selectSegmentEditorNode = lambda: None  # the singleton is the same node
    panel.parent = types.SimpleNamespace(isEntered=False)
    panel.onSceneEndImport(None, None)
    assert node.mode == 1, "a hidden panel leaves the Segment Editor alone"
    panel.parent.isEntered = True
    panel.onSceneEndImport(None, None)
    assert node.mode == 2
    assert ("updateWidgetFromMRML", ()) in panel.ui.segmentEditorWidget.calls
    assert panel._savedOverwriteMode == 0, "the mode from before the panel opened is the one given back on exit"


def test_the_editor_gets_no_source_volume_before_there_are_scribbles(scribbleseg):
    # qMRMLSegmentEditorWidget::setSourceVolumeNode refuses a volume while it has no segmentation and logs an error
    # (5.6 to main): it came with every change of a setting between picking a volume and the first stroke.
    import types

    volume = types.SimpleNamespace(GetID=lambda: "vtkMRMLVectorVolumeNode1")
    panel = _panel(scribbleseg, inputVolume=volume)
    panel._onParameterNodeModified()
    editor = panel.ui.segmentEditorWidget
    assert not [c for c in editor.calls if c[0] == "setSourceVolumeNode"]
    scribbles = object()
    panel.logic.ensureScribbleSegments = lambda *args: None
    panel._parameterNode.scribbleSegmentation = scribbles
    panel._onParameterNodeModified()
    assert ("setSegmentationNode", (scribbles,)) in editor.calls and ("setSourceVolumeNode", (volume,)) in editor.calls


def test_a_panel_made_without_a_parent_keeps_what_its_setup_made(scribbleseg, monkeypatch):
    # Without a parent, Slicer's ScriptedLoadableModuleWidget.__init__ (5.6 to main) runs setup() itself; the
    # panel's own __init__ then set the logic and the binding back to None, and the next scene close or setting
    # change failed on them.
    class SlicerLikeBase:
        def __init__(self, parent=None):
            scribbleseg.VTKObservationMixin.__init__(self)  # what its super().__init__() runs in the panel's MRO
            if not parent:
                self.setup()

    def setup(self):
        self.logic, self._shortcuts = "the logic setup() made", ["a shortcut"]

    monkeypatch.setattr(scribbleseg, "ScriptedLoadableModuleWidget", SlicerLikeBase)
    monkeypatch.setattr(scribbleseg.ScribbleSegWidget, "setup", setup)
    widget = scribbleseg.ScribbleSegWidget()
    assert (widget.logic, widget._shortcuts) == ("the logic setup() made", ["a shortcut"])


def test_a_panel_that_is_not_shown_leaves_the_segment_editors_selection_alone(scribbleseg):
    # setup() observes the parameter node: a panel made by slicer.util.getModuleWidget but never entered changed
    # the segmentation and volume of the editor node it shares with the Segment Editor module.
    import types

    scribbles, volume = object(), types.SimpleNamespace(GetID=lambda: "vtkMRMLVectorVolumeNode1")
    panel = _panel(scribbleseg, scribbleSegmentation=scribbles, inputVolume=volume)
    panel.logic.ensureScribbleSegments = lambda *args: None
    panel.parent.isEntered = False
    panel._onParameterNodeModified()
    editor = panel.ui.segmentEditorWidget
    assert not [c for c in editor.calls if c[0] in ("setSegmentationNode", "setSourceVolumeNode")]
    panel.parent.isEntered = True
    panel._onParameterNodeModified()
    assert ("setSegmentationNode", (scribbles,)) in editor.calls and ("setSourceVolumeNode", (volume,)) in editor.calls
    # A widget made on its own (no module panel: a plain qMRMLWidget parent, without isEntered) is shown.
    del editor.calls[:]
    panel.parent = types.SimpleNamespace()
    panel._onParameterNodeModified()
    assert ("setSegmentationNode", (scribbles,)) in editor.calls


def test_the_cache_cannot_be_cleared_or_pruned_while_a_job_runs(scribbleseg):
    import types

    panel = _panel(scribbleseg)
    logic = panel.logic
    folder = Path(logic.featureCacheFolder())
    # The command line's folder, out of Slicer's cache (pruned at every start from Slicer 5.12 on).
    assert folder == Path(os.environ["SCRIBBLESEG_CACHE_DIR"])
    assert Path(scribbleseg.slicer.app.cachePath) not in folder.parents
    key = "0" * 32  # the cache's own entry name
    (folder / key).mkdir(parents=True)
    (folder / key / "features.npy").write_bytes(b"x" * 100)
    logic.job = types.SimpleNamespace(finished=False, kind="segment", purpose="segment")
    with pytest.raises(Exception, match="before clearing the cache"):
        logic.clearFeatureCache()
    logic.setFeatureCacheMaxGB(1e-9)
    assert logic.pruneFeatureCache() == []
    panel._updateBusyState()
    assert not panel.ui.clearCacheButton.enabled and not panel.ui.cacheMaxSizeSpinBox.enabled
    assert panel.ui.applyButton.text == "Cancel" and panel.ui.applyButton.enabled
    panel.onClearCacheButton()
    assert (folder / key / "features.npy").exists()
    logic.job = None
    panel._updateBusyState()
    assert panel.ui.clearCacheButton.enabled
    logic.setFeatureCacheMaxGB(3.0)
    logic.clearFeatureCache()
    assert not (folder / key).exists()
    assert logic.featureCacheMaxGB() == 3.0  # clearing the entries keeps the folder's cap


def test_the_cache_size_cap_is_remembered_where_the_worker_reads_it(scribbleseg, monkeypatch):
    from ScribbleSegLib import choices, feature_cache

    monkeypatch.delenv("SCRIBBLESEG_CACHE_MAX_GB", raising=False)
    logic = scribbleseg.ScribbleSegLogic()
    assert logic.featureCacheMaxGB() == choices.DEFAULT_CACHE_MAX_GB
    logic.setFeatureCacheMaxGB(2.5)
    assert logic.featureCacheMaxGB() == 2.5
    # The worker's cache, opened on the same folder as it stores features, has the panel's cap.
    assert feature_cache.FeatureCache(logic.featureCacheFolder()).max_bytes == int(2.5 * 2**30)
    with pytest.raises(ValueError):
        logic.setFeatureCacheMaxGB(0)


def test_a_worker_that_cannot_start_leaves_no_folder_and_no_job(scribbleseg, monkeypatch):
    logic = scribbleseg.ScribbleSegLogic()
    monkeypatch.setattr(scribbleseg, "pythonExecutable", lambda: "/nonexistent/PythonSlicer")
    folder = logic._jobFolder()
    with pytest.raises(Exception, match="cannot start the ScribbleSeg worker process") as info:
        logic._startJob("devices", folder, {})
    assert scribbleseg.isUserError(info.value)
    assert not Path(folder).exists()
    assert not logic.busy and logic.job is None


def test_device_detection_runs_beside_jobs_and_locks_nothing(scribbleseg):
    panel = _panel(scribbleseg)
    logic = panel.logic
    finished = []
    job = logic.detectDevices(onFinished=finished.append)
    assert logic.detectingDevices and not logic.busy
    assert logic.detectDevices() is job, "one detection at a time"
    panel._updateBusyState()
    assert panel.ui.applyButton.enabled and panel.ui.trainButton.enabled and panel.ui.inputVolumeSelector.enabled
    folder = Path(logic._jobFolder())  # another job may start meanwhile
    assert folder.is_dir()
    job.wait()
    assert finished == [job] and job.succeeded and not logic.detectingDevices
    assert job.result["outputs"]["devices"][0]["id"] == "cpu"


def test_the_sample_phantom_needs_no_pytorch(scribbleseg, monkeypatch):
    import types

    class Node:
        def __init__(self, path):
            self.path = path

        def __getattr__(self, name):
            return lambda *args: types.SimpleNamespace(SetVisibility=lambda visible: None)

    asked = []
    scribbleseg.slicer.util.loadVolume = lambda path, properties: Node(path)
    scribbleseg.slicer.util.loadSegmentation = lambda path, properties: Node(path)
    scribbleseg.slicer.vtkMRMLVolumeNode = types.SimpleNamespace(VoxelVectorTypeColorRGB=4)
    logic = scribbleseg.ScribbleSegLogic()
    logic.ensureDependencies = lambda torch=True: asked.append(torch)
    logic.ensureScribbleSegments = lambda *args: ("1", "2")
    volume, truth, scribbles = logic.createPhantom(seed=0, shape=(6, 32, 32))
    assert asked == [False]
    assert Path(volume.path).is_file() and Path(scribbles.path).is_file()
    # Sample data a saved scene refers to: not in Slicer's cache folder, which Slicer 5.12+ prunes at start.
    data = Path(os.environ["XDG_DATA_HOME"]) / "scribbleseg" / "phantoms"
    assert data in Path(volume.path).parents
    assert Path(scribbleseg.slicer.app.cachePath) not in Path(volume.path).parents


def test_the_worker_makes_the_phantom_without_torch(tmp_path):
    code = ("import sys, io; sys.modules['torch'] = None; sys.modules['maxflow'] = None\n"
            "from ScribbleSegLib import worker\n"
            "request = worker.write_request('r.json', {'task': 'phantom', 'seed': 0, 'shape': [6, 32, 32], "
            "'outputs': {'image': 'i.nrrd', 'label': 'l.seg.nrrd', 'scribbles': 's.seg.nrrd'}})\n"
            "worker.run_request(worker.load_request(request), worker.Emitter(io.StringIO()))\n")
    env = dict(__import__("os").environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert (tmp_path / "s.seg.nrrd").is_file()


def _dependency_logic(scribbleseg, monkeypatch, torch_installed, pip_missing):
    """A logic whose dependency checks see what the test says, with stand-ins for Slicer's dialogs."""
    import types

    logic = scribbleseg.ScribbleSegLogic()
    state = {"torch": torch_installed, "pip": list(pip_missing), "dialogs": [], "restarted": False}
    monkeypatch.setattr(scribbleseg.ScribbleSegLogic, "torchInstalled", staticmethod(lambda: state["torch"]))
    logic.missingRequirements = lambda: list(state["pip"])
    logic.torchProblem = lambda: ""
    util = scribbleseg.slicer.util
    util.confirmOkCancelDisplay = lambda text, **kwargs: state["dialogs"].append(text) or state.get("agree", True)
    util.confirmYesNoDisplay = lambda text, **kwargs: state["dialogs"].append(text) or True
    util.restart = lambda: state.update(restarted=True)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace())
    return logic, state


def test_one_dialog_lists_every_missing_package_and_declining_is_a_plain_error(scribbleseg, monkeypatch):
    logic, state = _dependency_logic(scribbleseg, monkeypatch, torch_installed=False,
                                     pip_missing=["PyMaxflow>=1.3.0", "slicerio>=1.0"])
    state["agree"] = False
    with pytest.raises(Exception, match="cannot run without") as info:
        logic.ensureDependencies()
    assert scribbleseg.isUserError(info.value)
    (dialog,) = state["dialogs"]
    assert "PyTorch" in dialog and "PyMaxflow>=1.3.0" in dialog and "slicerio>=1.0" in dialog


def test_a_failed_pytorch_install_is_a_one_line_error(scribbleseg, monkeypatch):
    import types

    logic, state = _dependency_logic(scribbleseg, monkeypatch, torch_installed=False, pip_missing=[])

    def install_torch(**kwargs):
        raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "light_the_torch", "install", "torch"])

    sys.modules["PyTorchUtils"].PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=install_torch)
    with pytest.raises(Exception, match=r"installing PyTorch failed \(exit status 1\)") as info:
        logic.ensureDependencies()
    assert scribbleseg.isUserError(info.value)
    assert "\n" not in str(info.value)


def test_a_restart_is_offered_when_slicer_had_loaded_a_replaced_package(scribbleseg, monkeypatch):
    logic, state = _dependency_logic(scribbleseg, monkeypatch, torch_installed=True, pip_missing=["slicerio>=1.0"])
    installed = []

    def pip_install(requirements):
        installed.extend(requirements)
        state["pip"] = []

    logic._pipInstall = pip_install
    monkeypatch.setitem(sys.modules, "slicerio", object())  # loaded in Slicer's process, e.g. by another module
    logic.ensureDependencies()
    assert installed == ["slicerio>=1.0"] and state["restarted"]
    assert len(state["dialogs"]) == 2 and "Restart" in state["dialogs"][1]
    state.update(pip=["PyMaxflow>=1.3.0"], dialogs=[], restarted=False)
    monkeypatch.delitem(sys.modules, "maxflow", raising=False)
    logic.ensureDependencies()
    assert len(state["dialogs"]) == 1 and not state["restarted"], "nothing loaded: no restart"


def test_the_worker_runs_in_pythonslicer_never_in_a_second_slicer(scribbleseg, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    slicer_exe = tmp_path / "Slicer"
    slicer_exe.write_bytes(b"")
    monkeypatch.setattr(sys, "executable", str(slicer_exe))  # what sys.executable is inside Slicer
    with pytest.raises(Exception, match="PythonSlicer executable not found") as info:
        scribbleseg.pythonExecutable()
    assert scribbleseg.isUserError(info.value)
    beside = tmp_path / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    beside.write_bytes(b"")
    assert scribbleseg.pythonExecutable() == str(beside)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3"))  # the console, the tests
    assert scribbleseg.pythonExecutable() == str(tmp_path / "bin" / "python3")


def test_slicer_packaging_installs_without_its_own_prompts(scribbleseg, monkeypatch):
    # Slicer 5.12+: pip_ensure would ask to install and to restart again after ScribbleSeg's own questions.
    import types

    calls = []
    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_ensure = lambda requirements, **kwargs: calls.append((list(requirements), kwargs))
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(scribbleseg.slicer, "packaging", packaging, raising=False)
    scribbleseg.ScribbleSegLogic()._pipInstall(["slicerio>=1.0"])
    ((requirements, kwargs),) = calls
    assert requirements == ["slicerio>=1.0"]
    assert kwargs["prompt_install"] is False and kwargs["prompt_restart"] is False
    assert not Path(kwargs["constraints"]).exists(), "the constraints file is removed after the install"


def test_a_pip_failure_that_slicer_showed_gets_no_second_dialog(scribbleseg, monkeypatch):
    # Slicer 5.12+: slicer.packaging's progress dialog shows "Package installation failed." with pip's output, then
    # raises CalledProcessError(code, "pip install"); the panel showed its own error on top of it.  Every other
    # failure raises with the command as a list (slicer.util._executePythonModule), and Slicer showed nothing.
    import types

    logic, state = _dependency_logic(scribbleseg, monkeypatch, torch_installed=True, pip_missing=["slicerio>=1.0"])
    packaging = types.ModuleType("slicer.packaging")
    failure = {"cmd": "pip install"}

    def pip_ensure(requirements, **kwargs):
        raise subprocess.CalledProcessError(1, failure["cmd"])

    packaging.pip_ensure = pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(scribbleseg.slicer, "packaging", packaging, raising=False)
    errors = []
    scribbleseg.slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
    panel = _panel(scribbleseg)
    panel.logic = logic
    with panel._reportErrors("Cannot load the sections"):
        logic.ensureDependencies(torch=False)
    assert errors == [] and len(state["dialogs"]) == 1, "ScribbleSeg's own question only, no error on Slicer's"
    # From the console (no panel) the error still says what failed, in one line.
    with pytest.raises(Exception, match=r"installing slicerio>=1.0 failed \(exit status 1\)") as info:
        logic.ensureDependencies(torch=False)
    assert scribbleseg.isUserError(info.value) and "\n" not in str(info.value)
    # PyTorchUtils installs light-the-torch with slicer.util.pip_install, which is slicer.packaging's from 5.12 on.
    state.update(torch=False, pip=[])
    installer = types.SimpleNamespace(installTorch=lambda **kwargs: pip_ensure(["light-the-torch>=0.5"]))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=lambda: installer))
    with panel._reportErrors("Cannot segment"):
        logic.ensureDependencies()
    assert errors == []
    # A failure Slicer showed nothing of (5.6-5.10's pip, light-the-torch itself): the panel shows it.
    failure["cmd"] = ["PythonSlicer", "-m", "pip", "install", "light-the-torch>=0.5"]
    with panel._reportErrors("Cannot segment"):
        logic.ensureDependencies()
    assert len(errors) == 1 and "installing PyTorch failed" in errors[0]
    state.update(torch=True, pip=["slicerio>=1.0"])
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)
    scribbleseg.slicer.util.pip_install = lambda args: pip_ensure(args)
    with panel._reportErrors("Cannot load the sections"):
        logic.ensureDependencies(torch=False)
    assert len(errors) == 2 and "installing slicerio>=1.0 failed" in errors[1]


def test_the_self_test_skips_without_its_dependencies(scribbleseg, monkeypatch):
    import unittest

    monkeypatch.setattr(scribbleseg.ScribbleSegLogic, "missingDependencies",
                        lambda self, torch=True: ["PyTorch (torch>=2.1), through the PyTorch extension"])
    suite = unittest.TestLoader().loadTestsFromTestCase(scribbleseg.ScribbleSegTest)
    result = unittest.TextTestRunner(stream=__import__("io").StringIO()).run(suite)
    assert result.wasSuccessful() and result.testsRun >= 3
    assert len(result.skipped) == result.testsRun
    assert all("not installed" in reason for _test, reason in result.skipped)
    scribbleseg.ScribbleSegTest().runTest()  # "Reload and Test": reported, not raised
    assert any(message.startswith("Skipped") for message in scribbleseg.slicer.util.displayed)


def test_reload_and_test_reports_a_missing_model_as_a_skip(scribbleseg, monkeypatch):
    # runTest called the segmenting test directly, and its skipTest reached Slicer's "Reload and Test failed" popup.
    test = scribbleseg.ScribbleSegTest()
    monkeypatch.setattr(test, "_missingDependencies", lambda: [])
    monkeypatch.setattr(test, "setUp", lambda: None)
    ran = []
    for name in ("test_bad_inputs_leave_the_scene_unchanged", "test_scribbles_are_resampled_onto_the_volume",
                 "test_segment_phantom_and_add_it_to_the_model"):
        monkeypatch.setattr(test, name, lambda name=name: ran.append(name))
    monkeypatch.delenv("SCRIBBLESEG_TEST_MODEL", raising=False)
    monkeypatch.setattr(scribbleseg.ScribbleSegLogic, "starterModelPath", lambda self: None)
    test.runTest()
    assert ran == ["test_bad_inputs_leave_the_scene_unchanged", "test_scribbles_are_resampled_onto_the_volume"]
    assert scribbleseg.slicer.util.displayed[-1] == f"Skipped: segmenting a phantom: {scribbleseg.NO_TEST_MODEL}"


def test_the_self_test_uses_the_starter_model_and_trains_nothing(tree):
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ScribbleSegTest")
    source = ast.unparse(test_class)
    assert "starterModelPath()" in source
    assert ".train(" not in source and "startTraining" not in source


def test_the_starter_model_is_the_default_and_is_labelled_as_a_starting_point(scribbleseg):
    from ScribbleSegLib import starter

    logic = scribbleseg.ScribbleSegLogic()
    assert logic.modelPath() == ""
    assert logic.resolvedModelPath() == str(starter.starter_model_path())
    assert logic.resolvedModelPath("/models/mine.model") == "/models/mine.model"
    text = logic.describeModel("")
    assert "Starter model" in text and "starting point" in text and "Add this volume to the model" in text
    assert logic.describeModel(logic.starterModelPath()) == text
    assert logic.describeModel("/models/mine.model") == "Model: mine.model"
    suggested = logic.suggestFineTunedModelPath(logic.starterModelPath(), "Embryo 7")
    assert Path(suggested).parent == Path.home() and Path(suggested).name == "starter+Embryo_7.model"


def test_adding_a_volume_to_the_model_is_refused_without_a_result(scribbleseg):
    errors = []
    scribbleseg.slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
    panel = _panel(scribbleseg)
    panel.onAddToModelButton()
    assert errors and "Segment this volume first" in errors[0]
    assert panel.ui.progressBar.visible is False and panel.ui.statusLabel.text == ""


# ---------------------------------------------------------------------------
# Slicer 5.6/5.8 parameter node wrappers: connectGui on every entry must not reset the method
# ---------------------------------------------------------------------------


class _Combo:
    """A QComboBox: emits currentIndexChanged when the index changes; an empty box takes its first item."""

    def __init__(self):
        self.items, self.index, self.slots = [], -1, []

    def _set(self, index):
        if not 0 <= index < len(self.items):  # QComboBox: an index without an item means no current item
            index = -1
        if index != self.index:
            self.index = index
            for slot in list(self.slots):
                slot()

    def clear(self):
        self.items = []
        self._set(-1)

    def addItem(self, label):
        self.items.append(label)
        if self.index == -1:
            self._set(0)


class _EnumConnector56:
    """Slicer 5.6.2's QComboBoxToEnumConnector (guiConnectors.py): refills the box without keeping the selection."""

    def __init__(self, widget, enum_type):
        self.widget, self.values, self.callback = widget, list(enum_type), None
        widget.clear()
        for value in self.values:
            widget.addItem(value.name)

    def onChanged(self, callback):
        self.callback = callback
        if callback is None:
            self.widget.slots.remove(self.changed)
        else:
            self.widget.slots.append(self.changed)

    def changed(self):
        if self.callback:
            self.callback()

    def read(self):
        return self.values[self.widget.index]

    def write(self, value):
        self.widget._set(self.values.index(value))


class _MRMLNode:
    def __init__(self, method):
        self.values, self.observers = {"method": method}, []

    def Modified(self):
        for observer in list(self.observers):
            observer()


class _Wrapper56:
    """What @parameterNodeWrapper makes in Slicer 5.6/5.8 (wrapper.py): connectGui returns None there."""

    def __init__(self, node, enum_type, returns_tag=False):
        self.parameterNode, self.enum_type, self.returns_tag = node, enum_type, returns_tag
        self._parameterGUIs, self._nextParameterGUIsTag, self._updating = {}, 0, False

    @property
    def method(self):
        return self.parameterNode.values["method"]

    def connectGui(self, gui):
        connectors = {"method": _EnumConnector56(gui.methodComboBox, self.enum_type)}
        tag = self._nextParameterGUIsTag
        self._nextParameterGUIsTag += 1
        self._parameterGUIs[tag] = connectors
        for name, connector in connectors.items():
            connector.write(self.parameterNode.values[name])
            connector.onChanged(lambda n=name, c=connector: self._set(n, c.read()))
        self.parameterNode.observers.append(self._updateGui)
        return tag if self.returns_tag else None

    def disconnectGui(self, tag):
        if tag in self._parameterGUIs:
            for connector in self._parameterGUIs.pop(tag).values():
                connector.onChanged(None)

    def _set(self, name, value):
        if not self._updating:
            self.parameterNode.values[name] = value
            self.parameterNode.Modified()

    def _updateGui(self):
        if self._updating:
            return
        self._updating = True
        for connectors in self._parameterGUIs.values():
            for name, connector in connectors.items():
                connector.write(self.parameterNode.values[name])
        self._updating = False


def test_the_stand_in_reproduces_the_slicer_56_reset_with_the_template_pattern(scribbleseg):
    import types

    Method = scribbleseg.Method
    gui = types.SimpleNamespace(methodComboBox=_Combo())
    node = _MRMLNode(Method.FULL)
    first = _Wrapper56(node, Method)
    tag = first.connectGui(gui)  # enter
    first.disconnectGui(tag)  # exit: tag is None in 5.6/5.8, so nothing is disconnected
    second = _Wrapper56(node, Method)
    second.connectGui(gui)  # enter again, with the new wrapper logic.getParameterNode() returns
    assert node.values["method"] == Method.MUNET, "the defect: the method is reset to the first item"


@pytest.mark.parametrize("returns_tag", [False, True], ids=["5.6-5.8", "5.10+"])
def test_the_panel_binding_keeps_the_method_across_entries_and_scene_closes(scribbleseg, returns_tag):
    import types

    Method = scribbleseg.Method
    gui = types.SimpleNamespace(methodComboBox=_Combo())
    node = _MRMLNode(Method.FULL)
    binding = scribbleseg.ParameterNodeGuiBinding(gui)
    assert binding.bind(_Wrapper56(node, Method, returns_tag))
    for _entry in range(3):  # enter/exit: a new wrapper of the same node each time
        assert not binding.bind(_Wrapper56(node, Method, returns_tag))
    assert node.values["method"] == Method.FULL
    binding.unbind()  # scene close
    assert gui.methodComboBox.slots == []
    assert binding.bind(_Wrapper56(node, Method, returns_tag))  # scene end close
    assert node.values["method"] == Method.FULL
    assert len(gui.methodComboBox.slots) == 1, "exactly one live connector"
    gui.methodComboBox._set(1)  # the user picks DDML
    assert node.values["method"] == Method.DDML


def test_the_panel_connects_the_gui_only_through_the_binding(tree):
    binding = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ParameterNodeGuiBinding")
    inside = {id(n) for n in ast.walk(binding)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr in ("connectGui", "disconnectGui")]
    assert calls and all(id(call) in inside for call in calls)


def test_the_panel_fine_tunes_with_the_library_defaults(tree):
    from ScribbleSegLib.choices import FINETUNE_ITERS, FINETUNE_MINUTES

    assert module_constant(tree, "FINETUNE_STEPS") == FINETUNE_ITERS
    # The panel's time cap was its own; the command line and the worker had none.
    assert module_constant(tree, "FINETUNE_MINUTES") == FINETUNE_MINUTES


def test_the_result_line_names_the_sections_to_look_at_next(scribbleseg):
    import types

    logic = scribbleseg.ScribbleSegLogic()
    metrics = {"heart_volume_mm3": 1.25, "heart_voxels": 1000, "features_cached": True,
               "suggestions": [{"section": 12, "reason": "unsure"}, {"section": 30, "reason": "changed a lot"}]}
    line = logic.describeResult(types.SimpleNamespace(result={"metrics": metrics}, elapsed=3.0))
    assert "1.25 mm³" in line and "features reused" in line and line.endswith("look next at sections 12, 30")
    del metrics["suggestions"]
    assert "look next" not in logic.describeResult(types.SimpleNamespace(result={"metrics": metrics}, elapsed=3.0))


# ---------------------------------------------------------------------------
# The interactive loop: the warm worker, the heat map, suggestions, undo, what changed
# ---------------------------------------------------------------------------


def test_the_loop_settings_are_copies_of_the_library_choices(tree):
    from ScribbleSegLib import choices

    for name in ("LOOP_SUGGESTIONS", "UNDO_DEPTH", "HEAT_MAP_KEY", "NEXT_SECTION_KEY", "SAMPLE_PHANTOM_SHAPE",
                 "HEAT_MAP_OPACITY", "DEFAULT_DEVICE"):
        assert module_constant(tree, name) == getattr(choices, name), name
    assert parameters(tree)["heatMapOpacity"][1] == repr(choices.HEAT_MAP_OPACITY)
    assert len({module_constant(tree, "HEAT_MAP_KEY"), module_constant(tree, "NEXT_SECTION_KEY")}) == 2
    # Keys of Slicer's slice views (vtkMRMLSliceIntersectionWidget) and Segment Editor shortcuts: not ours.
    taken = set("gtfbvVrzyqwi0123456789/*,.<> ")
    assert not {choices.HEAT_MAP_KEY, choices.NEXT_SECTION_KEY} & taken


def test_the_heat_map_colour_table_is_one_slicer_ships(tree):
    # vtkMRMLColorLogic: "vtkMRMLColorTableNode" + "File" + the file name, for Base/Logic/Resources/ColorFiles.
    assert module_constant(tree, "HEAT_MAP_COLOR_NODE_ID") == "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"


class _Image:
    def __init__(self, shape_zyx):
        self.shape = shape_zyx

    def GetMTime(self):
        return 7

    def GetDimensions(self):
        return tuple(reversed(self.shape))


class _Volume:
    def __init__(self, shape_zyx, spacing, node_id="vtkMRMLVectorVolumeNode1", file_name=None):
        self.image, self.spacing, self.node_id, self.file_name = _Image(shape_zyx), spacing, node_id, file_name

    def GetStorageNode(self):
        # vtkMRMLStorableNode.GetStorageNode: None for a volume made in the scene, not loaded from a file.
        if self.file_name is None:
            return None
        return type("Storage", (), {"GetFileName": lambda storage: self.file_name})()

    def GetImageData(self):
        return self.image

    def GetID(self):
        return self.node_id

    def GetSpacing(self):
        return self.spacing


@pytest.fixture(scope="module")
def loop_case(tmp_path_factory):
    """A small phantom on disk with two sets of scribbles (the second has more strokes)."""
    from ScribbleSegLib import phantom, scribbles, volume_io

    folder = tmp_path_factory.mktemp("loop")
    made = phantom.make_phantom(seed=3, config=phantom.PhantomConfig(shape=(12, 96, 96)))
    volume_io.write_rgb_volume(folder / "image.nrrd", made.image)
    first = scribbles.simulate_scribbles(made.label, seed=0, every=4)
    second = scribbles.simulate_scribbles(made.label, seed=1, every=2)
    second[first > 0] = first[first > 0]
    return folder, made, first, second


def _loop_logic(scribbleseg, loop_case, monkeypatch):
    """A logic whose scene side is replaced by records; the worker, the files and ScribbleSegLib are real."""
    import shutil as _shutil
    import types

    from ScribbleSegLib import volume_io

    folder, made, first, second = loop_case
    logic = scribbleseg.ScribbleSegLogic()
    scene = types.SimpleNamespace(labels=[], heat=[], changes=[], scribbles=first)
    logic.ensureDependencies = lambda torch=True: None
    logic.scribbleArray = lambda volume, node: scene.scribbles
    logic._writeVolume = lambda volume, path: _shutil.copy(folder / "image.nrrd", path)
    logic._writeLabelmap = lambda array, volume, path: volume_io.write_labelmap(
        path, array, made.image.geometry) or path
    logic.importLabelsArray = lambda labels, volume, node=None, show3D=True: scene.labels.append(labels) or "result"
    logic.updateHeatMap = lambda probability, volume, model, source: scene.heat.append((source, probability)) or "heat"
    logic.updateChanges = lambda volume, changed: scene.changes.append(changed) or "changes"
    volume = _Volume(made.image.shape, made.image.geometry.spacing)
    return logic, scene, volume


FAST = {"ddml": {"steps": 20, "head_steps": 20}}


def test_the_loop_runs_on_one_warm_worker_and_restarts_it_after_a_crash(scribbleseg, loop_case, monkeypatch):
    logic, scene, volume = _loop_logic(scribbleseg, loop_case, monkeypatch)
    events = []
    try:
        # Heat map first: no scribbles needed, the network's probability and sections to look at.
        heat = logic.startHeatMap(volume, None, "", device="cpu", onEvent=events.append).wait()
        assert heat.succeeded, heat.errorMessage
        pid = logic.session.process.pid
        assert not heat.warm and heat.result["metrics"]["features_cached"] is False, "this job ran the M-Unet"
        assert heat.heatMapNode == "heat" and scene.heat[-1][0] == "network"
        assert scene.labels == [], "the heat map leaves the result alone"
        probability = scene.heat[-1][1]
        assert probability.shape == volume.image.shape and 0.0 <= probability.min() <= probability.max() <= 1.0
        assert heat.suggestions and all({"section", "reason", "text"} <= set(s) for s in heat.suggestions)

        # Run: the same worker, only the scribbles sent; the result in place, h into the heat map.
        run1 = logic.startSegmentation(volume, object(), "", device="cpu", onEvent=events.append, **FAST).wait()
        assert run1.succeeded, run1.errorMessage
        assert isinstance(run1, scribbleseg.ScribbleSegSessionJob) and run1.warm
        assert logic.session.process.pid == pid
        assert run1.result["metrics"]["features_cached"]
        assert run1.outputNode == "result" and scene.heat[-1][0] == "run"
        assert 0 < len(run1.suggestions) <= scribbleseg.LOOP_SUGGESTIONS
        assert run1.changeText.startswith("heart ") and "previous run" not in run1.changeText
        assert not scene.changes[-1].any(), "nothing changed on the first run"
        assert not logic.canUndo(volume)

        # More strokes, run again: what changed, the volume change, and undo.
        scene.scribbles = loop_case[3]
        run2 = logic.startSegmentation(volume, object(), "", device="cpu", **FAST).wait()
        assert run2.succeeded, run2.errorMessage
        assert logic.session.process.pid == pid
        assert "since the previous run" in run2.changeText
        from ScribbleSegLib import loop

        np = pytest.importorskip("numpy")
        np.testing.assert_array_equal(scene.changes[-1], loop.changed_labels(scene.labels[0], scene.labels[1]))
        assert logic.canUndo(volume)
        text = logic.undoLastRun(volume, "result")
        np.testing.assert_array_equal(scene.labels[-1], scene.labels[0])
        assert text.startswith("heart ") and not logic.canUndo(volume)
        # The next run forgets the run taken back (its DDML network and cut), then runs warm again.
        run2b = logic.startSegmentation(volume, object(), "", device="cpu", **FAST).wait()
        assert run2b.succeeded, run2b.errorMessage
        assert run2b.run.get("forget") is True and logic.session.process.pid == pid
        run2c = logic.startSegmentation(volume, object(), "", device="cpu", **FAST).wait()
        assert run2c.succeeded and "forget" not in run2c.run

        # The worker dies while idle: the next run starts a new one and says why, naming its last output.
        logic.session.process.kill()
        while not logic.session.process.finished:  # it is gone before the user runs again
            logic.session.process.poll()
            time.sleep(0.01)
        run3 = logic.startSegmentation(volume, object(), "", device="cpu", onEvent=events.append, **FAST).wait()
        assert run3.succeeded, run3.errorMessage
        assert logic.session.process.pid != pid and not run3.warm
        killed = "killed by SIGKILL" if os.name == "posix" else "exit status"
        assert "had stopped" in run3.notice and killed in run3.notice
        assert any("had stopped" in e.get("message", "") for e in events if e["event"] == "log")
    finally:
        logic.cleanup()
    assert logic.session is None


@pytest.mark.skipif(sys.platform == "win32", reason="exit status of a killed process")
def test_a_crash_during_a_run_is_reported_with_the_last_output_and_cancel_keeps_the_scene(
        scribbleseg, loop_case, monkeypatch):
    logic, scene, volume = _loop_logic(scribbleseg, loop_case, monkeypatch)
    try:
        assert logic.startHeatMap(volume, None, "", device="cpu").wait().succeeded
        job = logic.startSegmentation(volume, object(), "", device="cpu", ddml={"steps": 100000})
        assert logic.busy
        while job.runId is None:
            _process_events()
            time.sleep(0.01)
        logic.session.process.kill()  # a crash in the middle of the run
        job.wait()
        assert not job.succeeded and not job.cancelled
        assert "stopped without a result" in job.errorMessage and "next run starts a new worker" in job.errorMessage
        assert scene.labels == []

        scribbleseg.CANCEL_GRACE_MS = 200
        job = logic.startSegmentation(volume, object(), "", device="cpu", ddml={"steps": 100000})
        while job.runId is None:
            _process_events()
            time.sleep(0.01)
        logic.cancel()
        job.wait()
        assert job.cancelled and job.errorMessage == "Cancelled." and scene.labels == []
        assert not logic.busy
    finally:
        logic.cleanup()


def test_the_flips_chosen_in_the_panel_reach_the_network_and_a_change_starts_a_new_worker(
        scribbleseg, loop_case, monkeypatch):
    logic, scene, volume = _loop_logic(scribbleseg, loop_case, monkeypatch)
    try:
        with pytest.raises(Exception, match="orientations 3: expected one of 1, 2, 4"):
            logic.startSegmentation(volume, object(), "", device="cpu", orientations=3)
        assert logic.session is None and not logic.busy
        plain = logic.startHeatMap(volume, None, "", device="cpu").wait()
        assert plain.succeeded, plain.errorMessage
        pid = logic.session.process.pid
        flipped = logic.startHeatMap(volume, None, "", device="cpu", orientations=2).wait()
        assert flipped.succeeded, flipped.errorMessage
        assert logic.session.process.pid != pid, "features of other flips need another worker"
        assert not flipped.result["metrics"]["features_cached"], "the flipped network ran"
        plain_p, flipped_p = scene.heat[0][1], scene.heat[1][1]
        assert plain_p.shape == flipped_p.shape and abs(plain_p - flipped_p).max() > 1e-3
        run = logic.startSegmentation(volume, object(), "", device="cpu", orientations=2, **FAST).wait()
        assert run.succeeded and run.warm and run.result["metrics"]["features_cached"]
        assert logic.session.key[-1] == 2
    finally:
        logic.cleanup()


def test_the_one_shot_worker_is_the_fallback(scribbleseg, loop_case, monkeypatch):
    logic, scene, volume = _loop_logic(scribbleseg, loop_case, monkeypatch)
    logic.useWarmWorker = False
    job = logic.startSegmentation(volume, object(), "", device="cpu", **FAST).wait()
    assert job.succeeded, job.errorMessage
    assert type(job) is scribbleseg.ScribbleSegJob and logic.session is None
    assert job.outputNode == "result" and scene.heat[-1][0] == "run" and job.suggestions
    # As many sections to look at as the warm worker lists (the one-shot request asks for them too).
    assert len(job.suggestions) == scribbleseg.LOOP_SUGGESTIONS
    # After "Undo last run" the next one-shot run forgets the runs before it, as the warm worker's does: the
    # result kept with their strokes is not the one the user sees (DDMLConfig.keep_last).
    requests = []
    start = logic._startJob
    monkeypatch.setattr(logic, "_startJob", lambda kind, folder, request, *args, **kwargs: (
        requests.append(dict(request)), start(kind, folder, request, *args, **kwargs))[1])
    scene.scribbles = loop_case[3]
    assert logic.startSegmentation(volume, object(), "", device="cpu", **FAST).wait().succeeded
    logic.undoLastRun(volume, "result")
    for _run in range(2):
        assert logic.startSegmentation(volume, object(), "", device="cpu", **FAST).wait().succeeded
    assert [r.get("forget", False) for r in requests] == [False, True, False]


def test_a_model_file_written_over_the_one_in_use_needs_another_worker(scribbleseg, tmp_path):
    logic = scribbleseg.ScribbleSegLogic()
    volume = _Volume((4, 8, 8), (1.0, 1.0, 1.0))
    model = tmp_path / "m.model"
    model.write_bytes(b"old weights")
    key = logic.sessionKey(volume, str(model), "cpu", 1)
    assert logic.sessionKey(volume, str(model), "cpu", 1) == key
    model.write_bytes(b"new weights, a train run's")  # same path, another file
    os.utime(model, ns=(1, 10**18))
    assert logic.sessionKey(volume, str(model), "cpu", 1) != key


def _loop_panel(scribbleseg):
    volume = _Volume((12, 96, 96), (0.02, 0.02, 0.04))
    panel = _panel(scribbleseg, inputVolume=volume, heatMapOpacity=0.4, showChanges=True)
    panel._suggestions, panel._suggestionRow, panel._heatMapShown, panel._shortcuts = [], None, False, []
    jumps = []
    panel.logic.jumpToSection = lambda volume, section: jumps.append(section)
    return panel, volume, jumps


def test_clicking_a_suggested_section_and_the_next_key_jump_there(scribbleseg):
    panel, _volume, jumps = _loop_panel(scribbleseg)
    panel.onNextSection()
    assert jumps == [] and "No sections suggested yet" in panel.ui.statusLabel.text
    suggestions = [{"section": 9, "reason": "unsure", "text": "section 9 (unsure: ...)"},
                   {"section": 2, "reason": "far from any stroke", "text": "section 2 (far ...)"},
                   {"section": 5, "reason": "changed a lot", "text": "section 5 (changed ...)"}]
    panel._showSuggestions(suggestions)
    rows = [args[0] for name, args in panel.ui.suggestionsListWidget.calls if name == "addItem"]
    assert rows == ["Section 9: unsure", "Section 2: far from any stroke", "Section 5: changed a lot"]
    assert panel.ui.nextSectionButton.enabled
    panel.onSuggestionSelected(2)  # a click on the third row
    assert jumps == [5] and panel.ui.statusLabel.text == "section 5 (changed ...)"
    for _press in range(3):
        panel.onNextSection()
    assert jumps == [5, 9, 2, 5], "the key continues after the clicked row and wraps round"
    panel.onSuggestionSelected(-1)  # Qt's "no current row" after clear()
    assert len(jumps) == 4
    panel._showSuggestions([])
    assert not panel.ui.nextSectionButton.enabled


def test_a_suggestion_jumps_once_per_click_key_press_and_next(scribbleseg):
    import types

    panel, _volume, jumps = _loop_panel(scribbleseg)
    buttons = [0]
    scribbleseg.qt.QApplication = types.SimpleNamespace(mouseButtons=lambda: buttons[0])
    panel._showSuggestions([{"section": 9, "reason": "unsure"}, {"section": 2, "reason": "unsure"},
                            {"section": 5, "reason": "unsure"}])
    # A click on another row: Qt changes the current row on the press, then reports the click on the release.
    buttons[0] = 1  # Qt.LeftButton held
    panel.onSuggestionRowChanged(1)
    buttons[0] = 0
    panel.onSuggestionSelected(1)  # itemClicked
    assert jumps == [2]
    panel.onSuggestionSelected(1)  # the same row clicked again later: it jumps again
    assert jumps == [2, 2]
    panel.onSuggestionRowChanged(2)  # the arrow key: no click follows
    assert jumps == [2, 2, 5]
    calls = panel.ui.suggestionsListWidget.calls
    del calls[:]
    # QObject.blockSignals returns the state before: the list's signals are given back that state.
    panel.ui.suggestionsListWidget.blockSignals = lambda block: calls.append(("blockSignals", (block,))) or False
    panel.onNextSection()
    assert jumps == [2, 2, 5, 9]
    assert [name for name, _ in calls] == ["blockSignals", "setCurrentRow", "blockSignals"]
    assert calls[0][1] == (True,) and calls[1][1] == (0,) and calls[2][1] == (False,)


def test_the_heat_map_is_computed_once_per_volume_and_model_then_toggled(scribbleseg):
    panel, volume, _jumps = _loop_panel(scribbleseg)
    shown, started = [], []
    panel.logic.showHeatMap = lambda node, show=True, opacity=0.5: shown.append((node, show, opacity))
    panel.logic.heatMapNode = lambda volume, model=None: None
    panel.logic.startHeatMap = lambda *args, **kwargs: started.append(kwargs["onFinished"])
    panel.onHeatMapButton()
    assert len(started) == 1 and shown == []  # computing: the worker's job
    import types

    job = types.SimpleNamespace(succeeded=True, cancelled=False, elapsed=4.0, heatMapNode="heat map",
                                suggestions=[{"section": 3, "reason": "unsure", "text": "section 3"}])
    started[0](job)
    assert shown == [("heat map", True, 0.4)] and panel._heatMapShown
    assert panel.ui.heatMapButton.text == "Hide heat map"
    assert "Heat map ready in 4 s" in panel.ui.statusLabel.text
    assert [c[1][0] for c in panel.ui.suggestionsListWidget.calls if c[0] == "addItem"] == ["Section 3: unsure"]
    panel.onHeatMapButton()  # the key h again: hidden
    assert shown[-1][1] is False and not panel._heatMapShown
    panel.logic.heatMapNode = lambda volume, model=None: "heat map"  # made before for this volume and model
    panel.onHeatMapButton()
    assert shown[-1] == ("heat map", True, 0.4) and len(started) == 1, "reused, not computed again"


def test_a_finished_run_updates_the_list_the_status_line_and_undo(scribbleseg):
    import types

    panel, volume, _jumps = _loop_panel(scribbleseg)
    result = types.SimpleNamespace(GetAttribute=lambda name: volume.GetID())
    shown_changes, undone = [], []
    panel.logic.showChanges = lambda volume, show=True: shown_changes.append(show)
    panel.logic.canUndo = lambda volume: True
    panel.logic.pruneFeatureCache = lambda: []
    panel._updateCacheInfo = lambda: None
    job = types.SimpleNamespace(
        succeeded=True, cancelled=False, elapsed=2.0, outputNode=result, probabilityNode=None,
        changesNode="changes", changeText="heart 1.2 mm³ (+0.1 mm³, +9.1% since the previous run; 40 voxels changed)",
        suggestions=[{"section": 4, "reason": "unsure", "text": "section 4"}],
        result={"metrics": {"heart_volume_mm3": 1.2, "heart_voxels": 40, "features_cached": True}})
    panel._onSegmentationFinished(job)
    assert panel.ui.statusLabel.text == ("Done in 2 s: heart 1.2 mm³ (+0.1 mm³, +9.1% since the previous run; "
                                         "40 voxels changed).")
    assert panel._parameterNode.outputSegmentation is result and shown_changes == [True]
    assert panel._suggestions == job.suggestions and panel.ui.undoRunButton.enabled
    panel.logic.undoLastRun = lambda volume, output, show3D: undone.append(output) or "heart 1.1 mm³"
    panel.onUndoRunButton()
    assert undone == [result], "the result node itself, updated in place"
    assert panel.ui.statusLabel.text == "Back to the run before: heart 1.1 mm³."


def test_undo_without_an_earlier_run_is_a_one_line_error(scribbleseg):
    errors = []
    scribbleseg.slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
    panel, volume, _jumps = _loop_panel(scribbleseg)
    panel.onUndoRunButton()
    assert errors == ["There is no earlier run of this volume to go back to."]


def test_run_again_updates_the_same_result_node(scribbleseg):
    import types

    panel, volume, _jumps = _loop_panel(scribbleseg)
    result = types.SimpleNamespace(GetAttribute=lambda name: volume.GetID())
    other = types.SimpleNamespace(GetAttribute=lambda name: "vtkMRMLVectorVolumeNode9")
    sent = []
    panel.logic.startSegmentation = lambda *args, **kwargs: sent.append(kwargs["outputNode"])
    panel._parameterNode.outputSegmentation = result
    panel.onApplyButton()
    panel._parameterNode.outputSegmentation = other  # the result of another volume is kept
    panel.onApplyButton()
    assert sent == [result, None]


def test_the_list_is_cleared_when_another_volume_is_selected(scribbleseg):
    panel, volume, jumps = _loop_panel(scribbleseg)
    panel._updateEditorNodes = panel._updateResultWidgets = lambda: None
    panel._showSuggestions([{"section": 3, "reason": "unsure"}])
    panel._onParameterNodeModified()
    assert panel._suggestions, "the same volume: kept"
    panel._parameterNode.inputVolume = _Volume((5, 8, 8), (1, 1, 1), node_id="vtkMRMLVectorVolumeNode2")
    panel._onParameterNodeModified()
    assert panel._suggestions == [] and not panel.ui.nextSectionButton.enabled


def test_the_changes_go_into_their_two_segments_in_one_import_without_a_label_volume(scribbleseg, monkeypatch):
    # Not updateSegmentBinaryLabelmapFromArray: with an RGB reference it deep-copies the image per segment.
    import numpy as np
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    from ScribbleSegLib import loop

    class OrientedImage(vtk.vtkImageData):
        def SetImageToWorldMatrix(self, matrix):
            self.matrix = matrix

    imports = []

    def import_labelmap(image, node, ids):
        dims = image.GetDimensions()
        values = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).copy()
        imports.append((values, [ids.GetValue(i) for i in range(ids.GetNumberOfValues())], node))
        return True

    slicer = scribbleseg.slicer
    monkeypatch.setattr(slicer, "vtkOrientedImageData", OrientedImage, raising=False)
    monkeypatch.setattr(slicer, "vtkSlicerSegmentationsModuleLogic",
                        types.SimpleNamespace(ImportLabelmapToSegmentationNode=import_labelmap), raising=False)
    monkeypatch.setattr(slicer.util, "updateSegmentBinaryLabelmapFromArray",
                        lambda *args: pytest.fail("the slow path"), raising=False)
    segments = {}
    segmentation = types.SimpleNamespace(AddEmptySegment=lambda sid, name, color: segments.setdefault(name, name))
    node = types.SimpleNamespace(GetSegmentation=lambda: segmentation, GetName=lambda: "v changes")
    volume = types.SimpleNamespace(GetImageData=lambda: types.SimpleNamespace(GetDimensions=lambda: (4, 3, 2)),
                                   GetIJKToRASMatrix=lambda matrix: None)
    logic = scribbleseg.ScribbleSegLogic()
    monkeypatch.setattr(logic, "changesNode", lambda volume: node)
    monkeypatch.setattr(logic, "segmentId", lambda node, name: segments.get(name, ""))
    changed = np.zeros((2, 3, 4), np.uint8)
    changed[0, 1, 2] = loop.ADDED
    changed[1, 2, 3] = loop.REMOVED
    assert logic.updateChanges(volume, changed) is node
    ((values, ids, target),) = imports
    assert target is node and ids == ["added", "removed"]
    np.testing.assert_array_equal(values == 1, changed == loop.ADDED)
    np.testing.assert_array_equal(values == 2, changed == loop.REMOVED)


def test_jumping_to_a_section_turns_the_red_view_to_the_section_plane_then_centres_it(scribbleseg, monkeypatch):
    calls = []
    node = types.SimpleNamespace(
        RotateToAxes=lambda matrix, normal: calls.append(("rotate", [matrix.GetElement(r, c) for r in range(3)
                                                                     for c in range(4)], normal)),
        JumpSliceByCentering=lambda *ras: calls.append(("jump", ras)))
    widget = types.SimpleNamespace(mrmlSliceNode=lambda: node)
    manager = types.SimpleNamespace(sliceWidget=lambda name: widget if name == "Red" else None)
    monkeypatch.setattr(scribbleseg.slicer.app, "layoutManager", lambda: manager, raising=False)

    def ijk_to_ras(matrix):  # 2 mm sections along R, 0.5 mm pixels: K is not the axis nearest an axial view
        matrix.DeepCopy([0, 0, 2, 10, 0.5, 0, 0, 20, 0, 0.5, 0, 30, 0, 0, 0, 1])

    def shift_to_world(matrix):
        matrix.DeepCopy([1, 0, 0, 100, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])

    shifted = types.SimpleNamespace(IsTransformToWorldLinear=lambda: True, GetMatrixTransformToWorld=shift_to_world)
    for parent, x in ((None, 10.0), (shifted, 110.0)):
        volume = types.SimpleNamespace(GetIJKToRASMatrix=ijk_to_ras, GetParentTransformNode=lambda: parent)
        logic = scribbleseg.ScribbleSegLogic()
        monkeypatch.setattr(logic, "sectionCenter", lambda volume, section: (1.0, 2.0, 3.0 * section))
        calls.clear()
        assert logic.jumpToSection(volume, 4) == (1.0, 2.0, 12.0)
        # The normal is K, the sections' axis, in world coordinates (the volume's linear transform applied).
        assert calls == [("rotate", [0, 0, 2, x, 0.5, 0, 0, 20, 0, 0.5, 0, 30], 2), ("jump", (1.0, 2.0, 12.0))]


def test_the_self_test_paints_strokes_inside_the_heart_and_in_a_ring_around_it(scribbleseg):
    import numpy as np

    truth = np.zeros((5, 40, 40), np.uint8)
    truth[:, 10:30, 12:32] = 1
    heart, background = scribbleseg.ScribbleSegTest._paintScribbles(truth, every=2)
    assert heart[0].any() and background[0].any() and not heart[1].any()
    assert (heart <= (truth > 0)).all() and not (background & (truth > 0)).any()
    assert heart[0].sum() == (20 - 6) * (20 - 6)  # the heart shrunk by 3 pixels on every side


def test_a_labelled_volume_gives_its_heart_segment_or_its_only_segment(scribbleseg):
    def node(*names):
        segments = [types.SimpleNamespace(GetName=lambda n=n: n) for n in names]
        segmentation = types.SimpleNamespace(GetNumberOfSegments=lambda: len(segments),
                                             GetNthSegment=lambda i: segments[i],
                                             GetNthSegmentID=lambda i: f"id-{names[i]}")
        return types.SimpleNamespace(GetSegmentation=lambda: segmentation)

    logic = scribbleseg.ScribbleSegLogic
    assert logic.labelSegmentId(node("Tissue", "Heart")) == "id-Heart"
    assert logic.labelSegmentId(node("Gland")) == "id-Gland"  # painted for another target, named for it
    assert logic.labelSegmentId(node("Gland", "Lumen")) == ""  # which one is the target: not guessed
    assert logic.labelSegmentId(node()) == ""


def test_the_scan_pixel_a_loaded_tiff_states_goes_to_the_worker(scribbleseg, tmp_path):
    # Slicer loads a Fiji tile on 1 mm pixels and the worker gets it as an NRRD: without the size its file states,
    # the panel ran the network at another scale than `scribbleseg segment` on the same file.
    from test_scan_pixel import IMAGEJ, tissue, write_tiff

    tile = write_tiff(tmp_path / "tile.tif", [tissue()], IMAGEJ.format(unit="micron"), 2.0, 1)
    logic = scribbleseg.ScribbleSegLogic()
    assert logic.statedScanPixel(_Volume((1, 40, 48), (1.0, 1.0, 1.0), file_name=str(tile))) == [0.0005, 0.0005]
    # A spacing set in Slicer rules (as --spacing does), and a volume not loaded from such a file has none.
    assert logic.statedScanPixel(_Volume((1, 40, 48), (0.01, 0.01, 1.0), file_name=str(tile))) is None
    assert logic.statedScanPixel(_Volume((1, 40, 48), (1.0, 1.0, 1.0))) is None
    assert logic.statedScanPixel(_Volume((1, 40, 48), (1.0, 1.0, 1.0), file_name=str(tmp_path / "gone.tif"))) is None


def test_a_spacing_edited_in_slicer_opens_another_warm_worker(scribbleseg):
    logic = scribbleseg.ScribbleSegLogic()
    before = logic.sessionKey(_Volume((2, 8, 8), (1.0, 1.0, 1.0)), "model", "cpu", 1)
    assert logic.sessionKey(_Volume((2, 8, 8), (0.01, 0.01, 0.02)), "model", "cpu", 1) != before


def test_choosing_a_fiji_image_sequence_fills_the_voxel_size_its_sections_state(scribbleseg, tmp_path):
    from test_scan_pixel import IMAGEJ, tissue, write_tiff

    folder = tmp_path / "sections"
    folder.mkdir()
    for k in range(2):
        write_tiff(folder / f"s{k}.tif", [tissue(seed=k)], IMAGEJ.format(unit="micron"), 4.0, 1)
    panel = _panel(scribbleseg)
    scribbleseg.FOLDER_SETTLE_MS = 0
    choose = _choose_folder(panel)
    choose(folder)
    assert (panel._parameterNode.sectionPixelSize, panel._parameterNode.sectionSpacing) == (0.00025, 0.005)
    # A folder whose sections state nothing leaves what the user typed.
    panel._parameterNode.sectionPixelSize, panel._parameterNode.sectionSpacing = 0.002, 0.01
    plain = tmp_path / "plain"
    plain.mkdir()
    choose(plain)
    choose("")
    assert (panel._parameterNode.sectionPixelSize, panel._parameterNode.sectionSpacing) == (0.002, 0.01)
    # Sections that state different sizes: the fields stay, and the status line names two of them.
    write_tiff(folder / "s1.tif", [tissue(seed=1)], IMAGEJ.format(unit="micron"), 2.0, 1)
    choose(folder)
    assert (panel._parameterNode.sectionPixelSize, panel._parameterNode.sectionSpacing) == (0.002, 0.01)
    assert panel.ui.statusLabel.text.endswith("sections state different voxel sizes: 0.25 x 0.25 x 5 um in s0.tif, "
                                              "0.5 x 0.5 x 5 um in s1.tif")


def _choose_folder(panel):
    """The folder field's text set to each of ``paths`` in turn (keystrokes), then the timers run."""
    def choose(*paths):
        for path in paths:
            panel.onSectionFolderChanged(str(path))
        _process_events()
    return choose


def test_a_folder_typed_into_the_field_is_read_once_when_its_text_rests(scribbleseg, tmp_path):
    # ctkPathLineEdit sends currentPathChanged at every keystroke that leaves an acceptable path.
    folder = tmp_path / "sections"
    folder.mkdir()
    panel = _panel(scribbleseg)
    scribbleseg.FOLDER_SETTLE_MS = 0
    read = []
    panel.logic.statedSectionVoxel = lambda path: read.append(path) or (0.00025, 0.005)
    choose = _choose_folder(panel)
    choose(tmp_path, str(tmp_path) + "/sec", folder)  # typed: an existing folder on the way, a partial name
    assert read == [str(folder)], "only the text the field rests at is read"
    assert (panel._parameterNode.sectionPixelSize, panel._parameterNode.sectionSpacing) == (0.00025, 0.005)
    panel._parameterNode.sectionPixelSize = 0.0005  # the user corrects it
    choose(folder, str(folder) + os.sep)  # the same folder again (from the history): what the user typed stays
    assert read == [str(folder)] and panel._parameterNode.sectionPixelSize == 0.0005
    choose(tmp_path / "nowhere")
    assert read == [str(folder)], "a path that is no folder is not read"


def test_a_folder_that_cannot_be_read_or_states_an_odd_size_leaves_the_fields_and_says_why(scribbleseg, tmp_path):
    panel = _panel(scribbleseg, sectionPixelSize=0.002, sectionSpacing=0.01)
    scribbleseg.FOLDER_SETTLE_MS = 0
    choose = _choose_folder(panel)
    for k, answer in enumerate((PermissionError("s3.tif: permission denied"), (0.000001, 0.005))):
        folder = tmp_path / f"sections{k}"
        folder.mkdir()

        def stated(path, answer=answer):
            if isinstance(answer, Exception):
                raise answer
            return answer

        panel.logic.statedSectionVoxel = stated
        choose(folder)  # no exception leaves the timer's slot
        assert (panel._parameterNode.sectionPixelSize, panel._parameterNode.sectionSpacing) == (0.002, 0.01)
        assert str(folder) in panel.ui.statusLabel.text
    assert "enter it by hand" in panel.ui.statusLabel.text


def test_the_cache_size_box_acts_on_a_finished_number_not_on_each_keystroke(ui):
    # Typing 15 over 20 passed through 1 GB: valueChanged at each keystroke pruned the cache down to it.
    tracking = widget_property(widgets(ui)["cacheMaxSizeSpinBox"], "keyboardTracking")
    assert tracking is not None and tracking.findtext("bool") == "false"


def test_the_embedded_editor_shows_paint_and_erase_only(scribbleseg):
    import types

    panel = _panel(scribbleseg)
    node = object()
    scribbleseg.slicer.mrmlScene = types.SimpleNamespace(GetSingletonNode=lambda tag, cls: node)
    panel._setupSegmentEditor()
    editor = panel.ui.segmentEditorWidget
    assert ("setEffectNameOrder", (["Paint", "Erase"],)) in editor.calls
    assert editor.unorderedEffectsVisible is False
    assert ("setMRMLSegmentEditorNode", (node,)) in editor.calls


def test_path_filters_work_whether_or_not_ctk_gives_their_names(scribbleseg, monkeypatch):
    # A Qt6 build of Slicer main may not wrap ctkPathLineEdit's Filter names: "ctkPathLineEdit has no attribute
    # named 'Dirs'" stopped the panel's setup.
    import types

    monkeypatch.setattr(scribbleseg.ctk, "ctkPathLineEdit", types.SimpleNamespace(), raising=False)
    assert scribbleseg.pathFilters("Dirs", "Readable") == 0x011
    assert scribbleseg.pathFilters("Files", "Writable") == 0x022
    wrapped = types.SimpleNamespace(Dirs=0x100, Files=0x200, Readable=0x1000, Writable=0x2000)
    monkeypatch.setattr(scribbleseg.ctk, "ctkPathLineEdit", wrapped)
    assert scribbleseg.pathFilters("Files", "Readable") == 0x1200, "the wrapped values, where there are some"


def test_the_panel_reads_path_filters_through_the_fallback(tree):
    direct = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Attribute) and node.value.attr == "ctkPathLineEdit"]
    assert direct == [], f"ctkPathLineEdit.{direct[0]} without pathFilters' fallback"
