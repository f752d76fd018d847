"""Checks of the Slicer module that run without Slicer.

Slicer cannot be installed here, so these tests read ``ScribbleSeg.py`` and its
``.ui`` file as text: the names the module uses exist in the ``.ui``, the
parameter node matches the widgets bound to it, nothing heavy is imported at
file scope, the syntax is Python 3.9 (Slicer 5.6 and 5.8) and 3.12 (5.10+),
and the icons, colours and dependency lists agree with the library.
"""

import ast
import time
import dataclasses
import struct
import subprocess
import sys
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
                      "time", "typing", "ctk", "qt", "vtk", "slicer"}
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
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ScribbleSegParameterNode")


def parameters(tree):
    """``{name: (type text, default text or None)}`` of the parameter node's fields."""
    out = {}
    for node in parameter_class(tree).body:
        if isinstance(node, ast.AnnAssign):
            out[node.target.id] = (ast.unparse(node.annotation), None if node.value is None else ast.unparse(node.value))
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
    enums = {"Method", "Architecture", "NetworkSize"}
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
    assert module_constant(tree, "DEVICES") == choices.DEVICES == worker.DEVICES


def test_panel_defaults_are_the_library_defaults(tree):
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ScribbleSegParameterNode")
    defaults = {n.target.id: ast.unparse(n.value) for n in node.body if isinstance(n, ast.AnnAssign) and n.value}
    from ScribbleSegLib import choices

    members = {"Method": "method", "Architecture": "trainArchitecture", "NetworkSize": "trainSize"}
    values = {}
    for enum_name, field in members.items():
        member = defaults[field].split(".")[1]
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == enum_name)
        values[field] = next(ast.literal_eval(a.value) for a in cls.body
                             if isinstance(a, ast.Assign) and a.targets[0].id == member)
    assert values == {"method": choices.DEFAULT_METHOD, "trainArchitecture": choices.DEFAULT_ARCHITECTURE,
                      "trainSize": choices.DEFAULT_PRESET}


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
    assert not _runtime_union_annotations(tree), f"X | Y annotations need 'from __future__ import annotations'"


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


@pytest.fixture
def scribbleseg(monkeypatch, tmp_path):
    """ScribbleSeg.py imported with stand-ins for qt, ctk and slicer."""
    import importlib.util
    import types

    settings = {}
    qt = types.SimpleNamespace(
        QTimer=_FakeTimer,
        QSettings=lambda: types.SimpleNamespace(value=lambda key, default="": settings.get(key, default),
                                                setValue=settings.__setitem__))
    app = types.SimpleNamespace(processEvents=_process_events, testingEnabled=lambda: False,
                                temporaryPath=str(tmp_path), cachePath=str(tmp_path / "cache"))
    counter = iter(range(1000))

    def temp_directory(key):
        path = tmp_path / f"{key}{next(counter)}"
        path.mkdir()
        return str(path)

    util = types.SimpleNamespace(VTKObservationMixin=type("VTKObservationMixin", (), {}), tempDirectory=temp_directory)
    slicer = types.ModuleType("slicer")
    slicer.app = app
    slicer.util = util
    slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
    slicer.vtkMRMLSegmentationNode = type("vtkMRMLSegmentationNode", (), {})
    slicer.i18n = types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text)
    slicer.parameterNodeWrapper = types.SimpleNamespace(parameterNodeWrapper=lambda cls: cls,
                                                        WithinRange=lambda low, high: (low, high))
    base = type("Base", (), {"__init__": lambda self, *args: None})
    slicer.ScriptedLoadableModule = types.SimpleNamespace(
        ScriptedLoadableModule=base, ScriptedLoadableModuleLogic=base, ScriptedLoadableModuleWidget=base,
        ScriptedLoadableModuleTest=base)
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
