"""ScribbleSeg: segment the heart in a stack of serial histological sections from a few scribbles.

The module is a thin Slicer front end.  Everything that computes lives in the
pure-Python package ``ScribbleSegLib`` and runs in a separate ``PythonSlicer``
process (``python -m ScribbleSegLib.worker``): PyMaxflow holds the GIL for a
whole graph cut and torch keeps every core busy, so running them in Slicer's
process would freeze the application.  This file only moves data between the
scene and that process, always on the main thread.
"""

import contextlib
import enum
import importlib
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Annotated, Callable, Dict, List, Optional, Sequence, Tuple

import ctk
import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

HEART = "heart"
BACKGROUND = "background"
# The same colours as ScribbleSegLib.volume_io, so files and scene look alike.
HEART_COLOR = (0.85, 0.2, 0.2)
BACKGROUND_COLOR = (0.2, 0.4, 0.85)

# Literal copies of ScribbleSegLib.choices (this file must not import the library at file scope;
# Testing/test_slicer_module.py checks that they agree).
DEVICES = ("auto", "cpu", "cuda")  # the order of the items of deviceComboBox
DEFAULT_DEVICE = "auto"  # ScribbleSegLib.choices.DEFAULT_DEVICE (checked by the tests)
TORCH_REQUIREMENT = ">=2.1"
OUTPUT_VOLUME_ATTRIBUTE = "ScribbleSeg.InputVolumeID"  # on result nodes: the volume they were computed from
SETTINGS_MODEL_PATH = "ScribbleSeg/ModelPath"  # empty: the starter model
SETTINGS_DEVICE = "ScribbleSeg/Device"
# The panel's training time budget when none is set: 0 sends none, and the worker gives each network size its
# own (ScribbleSegLib.choices.PRESETS: 30 minutes for Small, none for Paper), defined there only.
OWN_BUDGET = 0.0
FINETUNE_STEPS = 300  # ScribbleSegLib.choices.FINETUNE_ITERS: 3.5 minutes on a shared 2-core CPU
FINETUNE_MINUTES = 15.0  # ScribbleSegLib.choices.FINETUNE_MINUTES: a cap for slow machines
SELF_TEST_SHAPE = (24, 96, 96)
# Why the self-test cannot segment its phantom.
NO_TEST_MODEL = "no starter model in this installation and SCRIBBLESEG_TEST_MODEL is not set"
# Import names of the pip packages of requirements.txt: if Slicer's own process has one loaded when pip
# replaces it, only a restart makes Slicer use the new one (the worker process always starts fresh).
IMPORT_NAMES = {"pymaxflow": "maxflow", "slicerio": "slicerio", "torch": "torch"}
POLL_INTERVAL_MS = 100
# A section folder typed into the panel is looked at once its text has rested this long (ctkPathLineEdit sends
# currentPathChanged at every keystroke).
FOLDER_SETTLE_MS = 500
# What the panel's pixel size and section spacing fields take, in mm (their parameters' WithinRange).
SECTION_SIZE_RANGE = (0.00001, 100.0)
CANCEL_GRACE_MS = 3000  # a graph cut cannot stop at a check; after this the process tree is killed
SAMPLE_PHANTOM_SHAPE = (64, 192, 192)  # a literal copy of ScribbleSegLib.choices (checked by the tests)
# The interactive loop: literal copies of ScribbleSegLib.choices (checked by Testing/test_slicer_module.py).
LOOP_SUGGESTIONS = 5
UNDO_DEPTH = 5
HEAT_MAP_KEY = "h"
NEXT_SECTION_KEY = "n"
# Slicer's "ColdToHotRainbow" table (Base/Logic/Resources/ColorFiles/ColdToHotRainbow.txt, loaded at startup;
# vtkMRMLColorLogic names file tables "vtkMRMLColorTableNode" + "File" + file name in 5.6 to main).
HEAT_MAP_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
HEAT_MAP_LOWER = 0.05  # probabilities below are transparent over the section images
HEAT_MAP_OPACITY = 0.5  # ScribbleSegLib.choices.HEAT_MAP_OPACITY (checked by the tests)
HEAT_MAP_ATTRIBUTE = "ScribbleSeg.HeatMapID"  # on input volumes: their heat map volume node
HEAT_MAP_MODEL_ATTRIBUTE = "ScribbleSeg.HeatMapModel"  # on heat maps: the model that made them
HEAT_MAP_SOURCE_ATTRIBUTE = "ScribbleSeg.HeatMapSource"  # "network" (M-Unet) or "run" (h of the last run)
CHANGES_ATTRIBUTE = "ScribbleSeg.ChangesID"  # on input volumes: the segmentation showing what the last run changed
ADDED_COLOR = (0.1, 0.85, 0.2)
REMOVED_COLOR = (0.9, 0.2, 0.9)
# ctkPathLineEdit's Filter values (CTK Libs/Widgets/ctkPathLineEdit.h, the same in the CTK of Slicer 5.6 to main).
# A Qt6 build of Slicer main may not give Python the names: the header declares Q_FLAGS(Filters) without
# Q_ENUM(Filter) (CTK's fix for that error, #1334, was undone by its commit 9ce17b4a).
PATH_FILTERS = {"Dirs": 0x001, "Files": 0x002, "Readable": 0x010, "Writable": 0x020}


def pathFilters(*names: str) -> int:
    """The ``filters`` value of a ``ctkPathLineEdit`` that combines the Filter values ``names``.

    The names as CTK's Python wrapping gives them, or their values (``PATH_FILTERS``) where it gives none.

    Examples
    --------
    >>> pathFilters("Dirs", "Readable")
    17
    """
    value = 0
    for name in names:
        value |= int(getattr(ctk.ctkPathLineEdit, name, PATH_FILTERS[name]))
    return value


#
# Access to ScribbleSegLib
#


def libraryFolder() -> str:
    """Return the folder that holds the ``ScribbleSegLib`` package and make it importable.

    An installed extension has ``ScribbleSegLib/`` beside this file (see
    ``ScribbleSegLib/CMakeLists.txt``).  In the source tree it is one level up,
    at the repository root, when Slicer is started with
    ``--additional-module-paths <repository>/ScribbleSeg``.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "ScribbleSegLib", "__init__.py")):
            if folder not in sys.path:
                sys.path.append(folder)
            return folder
    raise RuntimeError(f"ScribbleSegLib was not found beside {here}; reinstall the ScribbleSeg extension")


def lib(name: str):
    """Import and return ``ScribbleSegLib.<name>``."""
    libraryFolder()
    return importlib.import_module(f"ScribbleSegLib.{name}")


def libraryVersion() -> str:
    """``ScribbleSegLib.__version__``."""
    libraryFolder()
    return importlib.import_module("ScribbleSegLib").__version__


def userError(message: str) -> Exception:
    """The library's ``ScribbleSegError``: a problem the user can fix, shown without a traceback."""
    return lib("errors").ScribbleSegError(message)


def isUserError(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``ScribbleSegError`` (cancellation included)."""
    return isinstance(exc, lib("errors").ScribbleSegError)


def newTemporaryFolder(key: str) -> str:
    """A new, empty folder of its own under Slicer's temporary folder, for one job's or session's files.

    Not ``slicer.util.tempDirectory``: it names its folder by the key and the time to the millisecond and takes
    an existing one as it is, so device detection, which runs beside the other jobs, could share a job's folder,
    overwrite its request and delete the folder under it when done (Base/Python/slicer/util.py, 5.6 to main).
    """
    return tempfile.mkdtemp(prefix=f"{key}-", dir=slicer.app.temporaryPath)


#
# ScribbleSeg
#


class ScribbleSeg(ScriptedLoadableModule):
    """Module description for Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ScribbleSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["ScribbleSeg developers"]
        self.parent.helpText = _("""
Segment the heart (or another organ) in a stack of serial histological sections: paint a few strokes inside
and outside the organ on some sections, and a network adapted to your strokes plus a 3D graph cut give the
organ in 3D. See the <a href="https://github.com/scribbleseg/SlicerScribbleSeg#readme">documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Implements Harada et al., "Scribbles for Metric Learning in Histological Image Segmentation", EMBC 2019
(M-Unet features, DDML metric learning on the scribbles, 3D graph cut). Graph cuts use PyMaxflow.
""")


#
# Parameter node
#


class Method(enum.Enum):
    """How far a run goes (``--method`` of ``scribbleseg segment``)."""

    MUNET = "munet"
    DDML = "ddml"
    FULL = "full"

    def label(self) -> str:
        """Text shown in the method combo box."""
        return {
            "munet": _("M-Unet only"),
            "ddml": _("M-Unet + DDML (adapted to the scribbles)"),
            "full": _("M-Unet + DDML + 3D graph cut (full)"),
        }[self.value]


class Orientations(enum.Enum):
    """Test-time flips of the M-Unet (``--orientations`` of ``scribbleseg segment``)."""

    ONE = 1
    TWO = 2
    FOUR = 4

    def label(self) -> str:
        """Text shown in the flips combo box."""
        return {
            1: _("None"),
            2: _("Left-right (2 network runs)"),
            4: _("Left-right and top-bottom (4 network runs)"),
        }[self.value]


class Architecture(enum.Enum):
    """Network trained by the Train section."""

    MUNET = "munet"
    UNET = "unet"

    def label(self) -> str:
        return {"munet": "M-Unet", "unet": "U-Net"}[self.value]


class NetworkSize(enum.Enum):
    """Size preset of a trained network (``ModelConfig.preset``)."""

    SMALL = "small"
    PAPER = "paper"

    def label(self) -> str:
        return {"small": _("Small (CPU, minutes)"), "paper": _("Paper (GPU)")}[self.value]


@parameterNodeWrapper
class ScribbleSegParameterNode:
    """Everything the module's panel sets, saved with the scene.

    The model file and the device are per-user settings (QSettings), not scene data.
    The defaults of gamma..scribbleShare are those of ``GraphCutParams`` and ``DDMLConfig``.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    sectionPixelSize: Annotated[float, WithinRange(*SECTION_SIZE_RANGE)] = 0.001
    sectionSpacing: Annotated[float, WithinRange(*SECTION_SIZE_RANGE)] = 0.005
    sectionDownsample: Annotated[int, WithinRange(1, 64)] = 4
    trainArchitecture: Architecture = Architecture.MUNET
    trainSize: NetworkSize = NetworkSize.SMALL
    trainMinutes: Annotated[float, WithinRange(OWN_BUDGET, 10000.0)] = OWN_BUDGET
    scribbleSegmentation: vtkMRMLSegmentationNode
    method: Method = Method.FULL
    gamma: Annotated[float, WithinRange(0.0, 1000.0)] = 8.0
    sigma: Annotated[float, WithinRange(0.001, 10.0)] = 0.1
    delta: Annotated[float, WithinRange(0.0, 10.0)] = 0.05
    ddmlSteps: Annotated[int, WithinRange(0, 100000)] = 400
    headSteps: Annotated[int, WithinRange(0, 100000)] = 200
    scribbleShare: Annotated[float, WithinRange(0.0, 1.0)] = 0.3
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    orientations: Orientations = Orientations.ONE
    outputSegmentation: vtkMRMLSegmentationNode
    createProbability: bool = False
    outputProbability: vtkMRMLScalarVolumeNode
    show3D: bool = True
    heatMapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    showChanges: bool = True


#
# Binding the panel to the parameter node
#


class ParameterNodeGuiBinding:
    """Connects the panel's widgets to the parameter node, each node once.

    Why not ``connectGui`` on every module entry, as the module template does:
    ``logic.getParameterNode()`` returns a new wrapper each time, and in Slicer
    5.6 and 5.8 ``connectGui`` returns None instead of its tag (fixed in 5.10),
    so ``disconnectGui(tag)`` removes nothing and the old wrapper's connectors
    stay live.  5.6's ``QComboBoxToEnumConnector`` also empties and refills its
    combo box when it is created; the still-connected old connector then
    writes the first item ("M-Unet only") into the node.  So this class keeps
    the wrapper it connected and connects again only when the underlying MRML
    node really changes, and it disconnects with the tag the wrapper actually
    used (``_nextParameterGUIsTag - 1`` in 5.6/5.8, where it is not returned;
    both attributes exist in every supported version's ``wrapper.py``).
    """

    def __init__(self, gui) -> None:
        self.gui = gui
        self.wrapper = None
        self.tag = None

    @property
    def node(self):
        """The MRML node the GUI is connected to, or None."""
        return self.wrapper.parameterNode if self.wrapper is not None else None

    def bind(self, wrapper) -> bool:
        """Connect the GUI to ``wrapper``'s node (None: disconnect); return whether anything changed."""
        newNode = wrapper.parameterNode if wrapper is not None else None
        if newNode is self.node:
            return False  # the same node: the connected wrapper keeps serving it
        self.unbind()
        if wrapper is not None:
            tag = wrapper.connectGui(self.gui)
            if tag is None:  # Slicer 5.6 and 5.8: the tag just used is not returned
                tag = wrapper._nextParameterGUIsTag - 1
            self.wrapper, self.tag = wrapper, tag
        return True

    def unbind(self) -> None:
        """Disconnect the GUI from its node, if connected."""
        if self.wrapper is not None:
            self.wrapper.disconnectGui(self.tag)
        self.wrapper, self.tag = None, None


#
# ScribbleSegWidget
#


class ScribbleSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: binds the GUI to the parameter node and forwards actions to the logic."""

    def __init__(self, parent=None) -> None:
        # The panel's own state first, the base last: without a parent (ScribbleSegWidget() in the console) the
        # base runs setup() itself (ScriptedLoadableModule.py, 5.6 to main), and set after it, these reset what
        # setup() made (the logic, the binding, the tracked observers).  The base's super().__init__() runs
        # VTKObservationMixin.__init__ again, before setup() adds any observer: harmless.
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._segmentEditorNode = None
        self._savedOverwriteMode = None
        self._devicesDetected = False
        self._binding: Optional[ParameterNodeGuiBinding] = None
        self._suggestions: List[Dict] = []  # the sections listed to look at next
        self._suggestionRow: Optional[int] = None
        self._suggestionsVolume = None
        self._heatMapShown = False
        self._shortcuts: List = []
        self._sectionFolderTyped: Optional[str] = None  # the folder field's latest text (onSectionFolderChanged)
        self._sectionFolderRead: Optional[str] = None  # the last folder whose stated voxel size was looked at
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ScribbleSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ScribbleSegLogic()
        self._binding = ParameterNodeGuiBinding(self.ui)

        self.ui.progressBar.hide()
        self.ui.sectionFolderPathLineEdit.filters = pathFilters("Dirs", "Readable")
        self.ui.sectionFolderPathLineEdit.settingKey = "ScribbleSeg/SectionFolders"
        self.ui.modelPathLineEdit.filters = pathFilters("Files", "Readable")
        self.ui.modelPathLineEdit.nameFilters = [_("ScribbleSeg models (*.model)"), _("All files (*)")]
        self.ui.modelPathLineEdit.settingKey = "ScribbleSeg/Models"
        self.ui.modelPathLineEdit.currentPath = self.logic.modelPath()
        self.ui.trainOutputPathLineEdit.filters = pathFilters("Files", "Writable")
        self.ui.trainOutputPathLineEdit.nameFilters = [_("ScribbleSeg models (*.model)")]
        self.ui.deviceComboBox.currentIndex = DEVICES.index(self.logic.device())
        self.ui.cacheMaxSizeSpinBox.value = self.logic.featureCacheMaxGB()
        self._setupSegmentEditor()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.phantomButton.connect("clicked(bool)", self.onPhantomButton)
        self.ui.loadSectionsButton.connect("clicked(bool)", self.onLoadSectionsButton)
        self.ui.sectionFolderPathLineEdit.connect("currentPathChanged(QString)", self.onSectionFolderChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.useStarterModelButton.connect("clicked(bool)", self.onUseStarterModelButton)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", lambda i: self.logic.setDevice(DEVICES[i]))
        self.ui.detectDevicesButton.connect("clicked(bool)", self.onDetectDevicesButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.paintHeartButton.connect("clicked(bool)", lambda: self.onPaintButton(HEART))
        self.ui.paintBackgroundButton.connect("clicked(bool)", lambda: self.onPaintButton(BACKGROUND))
        self.ui.clearCacheButton.connect("clicked(bool)", self.onClearCacheButton)
        self.ui.cacheMaxSizeSpinBox.connect("valueChanged(double)", self.onCacheMaxSizeChanged)
        self.ui.addToModelButton.connect("clicked(bool)", self.onAddToModelButton)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3DToggled)
        self.ui.exportSurfaceButton.connect("clicked(bool)", self.onExportSurfaceButton)
        self.ui.heatMapButton.connect("clicked(bool)", self.onHeatMapButton)
        self.ui.heatMapOpacitySlider.connect("valueChanged(double)", self.onHeatMapOpacityChanged)
        self.ui.suggestionsListWidget.connect("currentRowChanged(int)", self.onSuggestionRowChanged)
        self.ui.suggestionsListWidget.connect(
            "itemClicked(QListWidgetItem*)",
            lambda item: self.onSuggestionSelected(self.ui.suggestionsListWidget.row(item)))
        self.ui.nextSectionButton.connect("clicked(bool)", self.onNextSection)
        self.ui.undoRunButton.connect("clicked(bool)", self.onUndoRunButton)
        self.ui.showChangesCheckBox.connect("toggled(bool)", self.onShowChangesToggled)
        self._setupShortcuts()

        self.initializeParameterNode()
        self._updateModelInfo()
        self._updateCacheInfo()
        self._updateBusyState()

    def _setupSegmentEditor(self) -> None:
        editor = self.ui.segmentEditorWidget
        editor.setMaximumNumberOfUndoStates(10)
        self._selectSegmentEditorNode()
        # As core Segment Editor: the editor node first, so the selections made when the scene is set are kept.
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setEffectNameOrder(["Paint", "Erase"])
        editor.unorderedEffectsVisible = False  # the order alone leaves the other effects shown
        editor.segmentationNodeSelectorVisible = False
        editor.sourceVolumeNodeSelectorVisible = False
        editor.switchToSegmentationsButtonVisible = False

    def _selectSegmentEditorNode(self) -> None:
        """Share the "SegmentEditor" singleton with the Segment Editor module, as that module does."""
        node = slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag("SegmentEditor")
            node = slicer.mrmlScene.AddNode(node)
        if node is not self._segmentEditorNode:
            self._segmentEditorNode = node
            self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(node)

    def _setupShortcuts(self) -> None:
        """Keys of the loop (see HEAT_MAP_KEY, NEXT_SECTION_KEY), active while the module is entered.

        As in Slicer's script repository ("Register keyboard shortcut"): a
        QShortcut on the main window.  Neither key is used by the slice views
        (vtkMRMLSliceIntersectionWidget) or the Segment Editor's shortcuts.
        """
        mainWindow = slicer.util.mainWindow()
        if mainWindow is None:
            return
        for key, callback in ((HEAT_MAP_KEY, self.onHeatMapButton), (NEXT_SECTION_KEY, self.onNextSection)):
            shortcut = qt.QShortcut(mainWindow)
            shortcut.setKey(qt.QKeySequence(key))
            shortcut.connect("activated()", callback)
            shortcut.setEnabled(False)
            self._shortcuts.append(shortcut)

    def _enableShortcuts(self, enabled: bool) -> None:
        for shortcut in self._shortcuts:
            shortcut.setEnabled(enabled)

    def cleanup(self) -> None:
        """Called when the application closes or the module is reloaded."""
        # A reload calls cleanup() without exit(): the old panel's editor would keep its effect, shortcuts and
        # view observations, and the shared editor node ScribbleSeg's overwrite mode.
        self._releaseSegmentEditor()
        # Slicer's reload only hides the old panel: its editor would still follow the shared editor node (and
        # turn its effects on with the new panel's) unless it lets go of it.
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(None)
        self._segmentEditorNode = None
        self.logic.cleanup()
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)
            shortcut.setParent(None)
        self._shortcuts = []
        self.removeObservers()
        if self._binding is not None:
            self._binding.unbind()

    def _releaseSegmentEditor(self) -> None:
        """Stop the embedded Segment Editor (as the Segment Editor module does on exit) and give the shared
        editor node back the overwrite mode it had."""
        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)
        editor.uninstallKeyboardShortcuts()
        editor.removeViewObservations()
        self._enableShortcuts(False)
        if self._segmentEditorNode is not None and self._savedOverwriteMode is not None:
            self._segmentEditorNode.SetOverwriteMode(self._savedOverwriteMode)
            self._savedOverwriteMode = None

    def enter(self) -> None:
        self.initializeParameterNode()
        self._selectSegmentEditorNode()
        self._setOverwriteNone()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()
        self.ui.segmentEditorWidget.updateWidgetFromMRML()
        self._updateEditorNodes()
        self._enableShortcuts(True)
        if not self._devicesDetected and self.logic.torchInstalled():
            self.onDetectDevicesButton()  # in the background: nothing is locked meanwhile

    def _setOverwriteNone(self) -> None:
        """Scribbles of one class must not erase those of the other; the mode is restored on exit."""
        if self._savedOverwriteMode is None:
            self._savedOverwriteMode = self._segmentEditorNode.GetOverwriteMode()
        self._segmentEditorNode.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)

    def exit(self) -> None:
        self._releaseSegmentEditor()
        # The GUI stays connected (see ParameterNodeGuiBinding); only the panel's reactions stop, so that a
        # hidden panel never changes the Segment Editor the user is working in.
        self._stopObservingParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.logic.closeSession()  # the next scene's volumes reuse the node IDs
        self.logic.forgetRuns()
        self._showSuggestions([])
        self._heatMapShown = False
        self.setParameterNode(None)
        self._segmentEditorNode = None
        # The mode was saved from the closing scene's editor node: never restore it onto the next scene's.
        self._savedOverwriteMode = None
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()

    @property
    def _shown(self) -> bool:
        """Whether the module's panel is entered.  A widget made on its own (ScribbleSegWidget() in the console) has a
        plain qMRMLWidget as its parent, without ``isEntered``: it is shown where its maker put it."""
        return bool(getattr(self.parent, "isEntered", True))

    def onSceneEndClose(self, caller, event) -> None:
        if self._shown:
            self.initializeParameterNode()
            self._selectSegmentEditorNode()
            self._setOverwriteNone()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def onSceneEndImport(self, caller, event) -> None:
        """As the Segment Editor module does: a scene added to this one replaces the shared editor node's content
        (a singleton), overwrite mode included, so the panel's mode and editor are set again."""
        if self._shown:
            self._selectSegmentEditorNode()
            self._setOverwriteNone()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def onReload(self) -> None:
        """Reload ScribbleSegLib too (the base class reloads only this file)."""
        for name in [n for n in sys.modules if n == "ScribbleSegLib" or n.startswith("ScribbleSegLib.")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        lib("errors")
        super().onReload()

    # Parameter node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLVectorVolumeNode")
            if volume:
                self._parameterNode.inputVolume = volume

    def setParameterNode(self, inputParameterNode: Optional[ScribbleSegParameterNode]) -> None:
        """Show ``inputParameterNode`` in the panel (None: none).

        The GUI is connected once per MRML node (see :class:`ParameterNodeGuiBinding`);
        a new wrapper of the same node keeps the connected one.
        """
        self._stopObservingParameterNode()
        self._binding.bind(inputParameterNode)
        self._parameterNode = self._binding.wrapper
        self._parameterNodeGuiTag = self._binding.tag
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _stopObservingParameterNode(self) -> None:
        # exit() stops observing already: removing the observer again made VTKObservationMixin warn "does not
        # have observer" on every return to the module (Base/Python/slicer/util.py, 5.6 to main).
        if self._parameterNode and self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                                    self._onParameterNodeModified):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateEditorNodes()
        self._updateResultWidgets()
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        volumeId = volume.GetID() if volume is not None else None
        if self._suggestions and volumeId != self._suggestionsVolume:  # they were sections of another volume
            self._showSuggestions([])

    def _updateEditorNodes(self) -> None:
        # The editor writes its selection into the node it shares with the Segment Editor module: a panel that
        # was made but is not shown (slicer.util.getModuleWidget) must not change what the user edits there.
        if not self._parameterNode or not self._shown:
            return
        editor = self.ui.segmentEditorWidget
        volume = self._parameterNode.inputVolume
        scribbles = self._parameterNode.scribbleSegmentation
        if scribbles is not None:
            self.logic.ensureScribbleSegments(scribbles, volume)
        if editor.segmentationNode() is not scribbles:
            editor.setSegmentationNode(scribbles)
        # Not without a segmentation: the editor refuses a source volume then and logs an error (5.6 to main), which
        # came with every change of a setting before the first stroke.  It is set once the scribbles are there.
        if editor.sourceVolumeNode() is not volume and (scribbles is not None or volume is None):
            editor.setSourceVolumeNode(volume)

    def _updateResultWidgets(self) -> None:
        output = self._parameterNode.outputSegmentation if self._parameterNode else None
        self.ui.exportSurfaceButton.enabled = output is not None and not self.logic.busy
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        self.ui.addToModelButton.enabled = (not self.logic.busy and volume is not None
                                            and ScribbleSegLogic.resultOf(output, volume) is not None)
        if output is None:
            self.ui.resultLabel.text = _("no result yet")
        self.ui.undoRunButton.enabled = not self.logic.busy and self.logic.canUndo(volume)

    # Actions

    @contextlib.contextmanager
    def _reportErrors(self, title: str):
        """Show a ScribbleSegError as its one-line message, anything else with its traceback; a cancel
        (the user's own choice), or a failed install that Slicer's own dialog has shown, with nothing.

        An action that fails before its job starts leaves no progress bar or
        "Segmenting..." status behind.
        """
        try:
            yield
        except Exception as exc:
            if not self.logic.busy:
                self._endJob()
            if isinstance(exc, lib("errors").CancelledError):
                logging.info("ScribbleSeg: %s: cancelled", title)
            elif getattr(exc, "shownBySlicer", False):  # Slicer's own dialog has told the user: none again
                logging.error("ScribbleSeg: %s: %s", title, exc)
            elif isUserError(exc):
                slicer.util.errorDisplay(str(exc), windowTitle=title)
            else:
                import traceback

                logging.exception(title)
                slicer.util.errorDisplay(f"{title}: {exc}", windowTitle=title, detailedText=traceback.format_exc())

    def onPhantomButton(self) -> None:
        # Each click makes another embryo (Phantom0, Phantom1, ...): train on one, segment another.
        seed = 0
        while slicer.mrmlScene.GetFirstNodeByName(f"Phantom{seed}") is not None:
            seed += 1
        with self._reportErrors(_("Cannot create the phantom")):
            self._showJobStarted(_("Creating a phantom"))
            volume, _truth, scribbles = self.logic.createPhantom(seed=seed, onEvent=self._onJobEvent)
            self._parameterNode.inputVolume = volume
            self._parameterNode.scribbleSegmentation = scribbles
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
        self._endJob()

    def onLoadSectionsButton(self) -> None:
        folder = self.ui.sectionFolderPathLineEdit.currentPath
        with self._reportErrors(_("Cannot load the sections")):
            if not folder:
                raise userError(_("Choose the folder of section images first."))
            self.logic.ensureDependencies(torch=False)
            dialog = slicer.util.createProgressDialog(windowTitle=_("Loading sections"), labelText=folder,
                                                      maximum=1000, autoClose=False)
            token = lib("progress").CancelToken()
            dialog.connect("canceled()", token.cancel)

            def progress(stage, fraction, message):
                dialog.value = int(1000 * fraction)
                dialog.labelText = message
                slicer.app.processEvents()

            try:
                pixel = self._parameterNode.sectionPixelSize
                volume = self.logic.loadSectionFolder(folder, (pixel, pixel, self._parameterNode.sectionSpacing),
                                                      self._parameterNode.sectionDownsample,
                                                      progress=progress, cancel=token)
            finally:
                dialog.close()
            self._parameterNode.inputVolume = volume
            self.ui.sectionFolderPathLineEdit.addCurrentPathToHistory()
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def onSectionFolderChanged(self, folder: str) -> None:
        """Fill the pixel size and the section spacing with what the folder's sections state alike (the TIFFs of a
        Fiji image sequence), where they state them; the fields stay editable.  Sections that state different
        sizes leave the fields as they are, and the status line says which.

        ctkPathLineEdit sends ``currentPathChanged`` at every keystroke, so the folder is looked at once its text
        has rested for :data:`FOLDER_SETTLE_MS`, only if it is a folder, and only once: sizes the user typed
        are not written over again by the same folder."""
        self._sectionFolderTyped = folder
        qt.QTimer.singleShot(FOLDER_SETTLE_MS, lambda: self._readSectionFolderVoxel(folder))

    def _readSectionFolderVoxel(self, folder: str) -> None:
        if folder != self._sectionFolderTyped or not folder or self._parameterNode is None or not os.path.isdir(folder):
            return
        if os.path.normpath(folder) == self._sectionFolderRead:  # "sections/" is "sections"
            return
        self._sectionFolderRead = os.path.normpath(folder)
        try:
            stated = self.logic.statedSectionVoxel(folder)
        except Exception as error:  # a slot run by a timer: nothing above it would show the error
            self.ui.statusLabel.text = str(error) if isUserError(error) else _(
                "Cannot read the pixel size the sections of {folder} state: {error}").format(folder=folder, error=error)
            return
        if stated is None:
            return
        low, high = SECTION_SIZE_RANGE
        sizes = [size for size in stated if size is not None]
        if not all(low <= size <= high for size in sizes):
            self.ui.statusLabel.text = _(
                "The sections of {folder} state a voxel size outside {low:g}-{high:g} mm; enter it by hand").format(
                folder=folder, low=low, high=high)
            return
        pixel, spacing = stated
        self._parameterNode.sectionPixelSize = pixel
        if spacing is not None:
            self._parameterNode.sectionSpacing = spacing

    def onDetectDevicesButton(self) -> None:
        if self.logic.detectingDevices:
            return
        self._devicesDetected = True
        if not self.logic.torchInstalled():
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet (it is installed on the first run)")
            return
        self.ui.deviceInfoLabel.text = _("detecting...")

        def finished(job):
            message = (job.errorMessage or _("detection failed")).splitlines()[0]
            self.ui.deviceInfoLabel.text = (ScribbleSegLogic.describeDevices(job.result["outputs"])
                                            if job.succeeded else message)

        with self._reportErrors(_("Cannot detect devices")):
            self.logic.detectDevices(onFinished=finished)

    def _cancelIfBusy(self, attribute: str, value: str) -> bool:
        """Whether a job runs; if its ``attribute`` (``kind`` or ``purpose``) is ``value`` -- the job this
        button started -- it is cancelled (a button that starts a job also stops it)."""
        if not self.logic.busy:
            return False
        if getattr(self.logic.job, attribute) == value:
            self.logic.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
        return True

    def onTrainButton(self) -> None:
        if self._cancelIfBusy("kind", "train"):
            return
        with self._reportErrors(_("Cannot train")):
            nodes = list(self.ui.trainingSegmentationsSelector.checkedNodes())
            output = self.ui.trainOutputPathLineEdit.currentPath
            self._showJobStarted(_("Training"))
            p = self._parameterNode
            self.logic.startTraining(nodes, output, architecture=p.trainArchitecture.value, size=p.trainSize.value,
                                     maxMinutes=p.trainMinutes, device=self.logic.device(), seed=p.seed,
                                     onEvent=self._onJobEvent, onFinished=self._onTrainingFinished)
        self._updateBusyState()

    def _onTrainingFinished(self, job) -> None:
        self._endJob(job)
        if job.succeeded:
            self.ui.modelPathLineEdit.currentPath = job.result["outputs"]["model"]
            self.ui.modelPathLineEdit.addCurrentPathToHistory()
            if job.purpose == "train":
                self.ui.trainOutputPathLineEdit.addCurrentPathToHistory()
            message = (_("The model now in use learnt from this volume; the next volume starts from it:\n{path}")
                       if job.purpose == "finetune" else _("The new model is now in use:\n{path}"))
            slicer.util.infoDisplay(message.format(path=job.result["outputs"]["model"]),
                                    windowTitle=_("Training finished"))
        elif not job.cancelled:
            slicer.util.errorDisplay(job.errorMessage, windowTitle=_("Training failed"))

    def onModelPathChanged(self, path: str) -> None:
        self.logic.setModelPath(path)
        self._updateModelInfo()

    def onUseStarterModelButton(self) -> None:
        self.ui.modelPathLineEdit.currentPath = ""
        self.onModelPathChanged("")

    def _updateModelInfo(self) -> None:
        self.ui.modelInfoLabel.text = self.logic.describeModel(self.logic.modelPath())

    def onAddToModelButton(self) -> None:
        if self._cancelIfBusy("purpose", "finetune"):
            return
        p = self._parameterNode
        with self._reportErrors(_("Cannot add the volume to the model")):
            volume = p.inputVolume
            result = ScribbleSegLogic.resultOf(p.outputSegmentation, volume)
            if volume is None or result is None:
                raise userError(_("Segment this volume first; correct the result if needed, then add it."))
            parent = self.logic.resolvedModelPath()
            path = qt.QFileDialog.getSaveFileName(
                slicer.util.mainWindow(), _("Save the fine-tuned model as"),
                self.logic.suggestFineTunedModelPath(parent, volume.GetName()), _("ScribbleSeg models (*.model)"))
            if not path:
                return
            self._showJobStarted(_("Adding {volume} to the model").format(volume=volume.GetName()))
            self.logic.startFineTuning(volume, result, parent, path, device=self.logic.device(), seed=p.seed,
                                       onEvent=self._onJobEvent, onFinished=self._onTrainingFinished)
        self._updateBusyState()

    def onPaintButton(self, segmentName: str) -> None:
        with self._reportErrors(_("Cannot start painting")):
            volume = self._parameterNode.inputVolume
            if volume is None:
                raise userError(_("Select the input volume first."))
            scribbles = self._parameterNode.scribbleSegmentation
            if scribbles is None:
                scribbles = self.logic.createScribbleSegmentation(volume)
                self._parameterNode.scribbleSegmentation = scribbles
            self._updateEditorNodes()
            editor = self.ui.segmentEditorWidget
            editor.setCurrentSegmentID(self.logic.segmentId(scribbles, segmentName))
            editor.setActiveEffectByName("Paint")

    def onClearCacheButton(self) -> None:
        if self.logic.busy:  # the worker may be writing into the cache
            return
        size = self.logic.featureCacheSize()
        if size and slicer.util.confirmOkCancelDisplay(
                _("Delete {size:.1f} GB of cached M-Unet features? The next run on each volume computes them again.")
                .format(size=size / 2**30), windowTitle=_("Clear feature cache")):
            self.logic.clearFeatureCache()
        self._updateCacheInfo()

    def onCacheMaxSizeChanged(self, gigabytes: float) -> None:
        self.logic.setFeatureCacheMaxGB(gigabytes)
        if not self.logic.busy:
            self.logic.pruneFeatureCache()
        self._updateCacheInfo()

    def _updateCacheInfo(self) -> None:
        size = self.logic.featureCacheSize()
        self.ui.cacheInfoLabel.text = _("{size:.2f} GB in {folder}").format(size=size / 2**30,
                                                                              folder=self.logic.featureCacheFolder())

    def onApplyButton(self) -> None:
        if self._cancelIfBusy("purpose", "segment"):
            return
        p = self._parameterNode
        with self._reportErrors(_("Cannot segment")):
            self._showJobStarted(_("Segmenting"))
            # Results of another volume are kept; this volume gets its own nodes.
            outputNode = ScribbleSegLogic.resultOf(p.outputSegmentation, p.inputVolume)
            probabilityNode = ScribbleSegLogic.resultOf(p.outputProbability, p.inputVolume)
            self.logic.startSegmentation(
                p.inputVolume, p.scribbleSegmentation, self.logic.resolvedModelPath(), method=p.method.value,
                cut={"gamma": p.gamma, "sigma": p.sigma, "delta": p.delta},
                ddml={"steps": p.ddmlSteps, "head_steps": p.headSteps, "scribble_share": p.scribbleShare},
                seed=p.seed, orientations=p.orientations.value, device=self.logic.device(), outputNode=outputNode,
                createProbability=p.createProbability, probabilityNode=probabilityNode, show3D=p.show3D,
                onEvent=self._onJobEvent, onFinished=self._onSegmentationFinished)
            if self.ui.modelPathLineEdit.currentPath:
                self.ui.modelPathLineEdit.addCurrentPathToHistory()
        self._updateBusyState()

    def _onSegmentationFinished(self, job) -> None:
        self._endJob(job)
        self.logic.pruneFeatureCache()
        self._updateCacheInfo()
        if job.succeeded:
            p = self._parameterNode
            p.outputSegmentation = job.outputNode
            if job.probabilityNode is not None:
                p.outputProbability = job.probabilityNode
            self.ui.resultLabel.text = self.logic.describeResult(job)
            if job.changeText:
                self.ui.statusLabel.text = _("Done in {seconds:.0f} s: {change}.").format(seconds=job.elapsed,
                                                                                       change=job.changeText)
            if job.changesNode is not None:
                self.logic.showChanges(p.inputVolume, p.showChanges)
            self._showSuggestions(job.suggestions)
        elif not job.cancelled:
            slicer.util.errorDisplay(job.errorMessage, windowTitle=_("Segmentation failed"))
        self._updateBusyState()

    # The loop: heat map, where to look next, undo, what changed

    def onHeatMapButton(self) -> None:
        """Show the heat map (computed on first use for this volume and model), or hide it; key h."""
        if self._cancelIfBusy("purpose", "heatmap"):
            return
        if self._heatMapShown:
            self.logic.showHeatMap(None, False)
            self._heatMapShown = False
            self._updateBusyState()
            return
        p = self._parameterNode
        with self._reportErrors(_("Cannot show the heat map")):
            volume = p.inputVolume if p else None
            if volume is None:
                raise userError(_("Select the input volume first."))
            node = self.logic.heatMapNode(volume, self.logic.modelPath())
            if node is not None:  # computed before for this volume and model: reused
                self._showHeatMap(node)
                if not self._suggestions:
                    self._showSuggestions(self.logic.heatMapSuggestions(volume, p.scribbleSegmentation))
                return
            self._showJobStarted(_("Computing the heat map"))
            self.logic.startHeatMap(volume, p.scribbleSegmentation, self.logic.modelPath(),
                                    device=self.logic.device(), orientations=p.orientations.value,
                                    onEvent=self._onJobEvent,
                                    onFinished=self._onHeatMapFinished)
        self._updateBusyState()

    def _onHeatMapFinished(self, job) -> None:
        self._endJob(job)
        if job.succeeded:
            self._showHeatMap(job.heatMapNode)
            self._showSuggestions(job.suggestions)
            self.ui.statusLabel.text = _("Heat map ready in {seconds:.0f} s: look at the listed sections, scribble "
                                         "there, then Apply.").format(seconds=job.elapsed)
        elif not job.cancelled:
            slicer.util.errorDisplay(job.errorMessage, windowTitle=_("The heat map failed"))
        self._updateBusyState()

    def _showHeatMap(self, node) -> None:
        self.logic.showHeatMap(node, True, self._parameterNode.heatMapOpacity)
        self._heatMapShown = True
        self._updateBusyState()

    def onHeatMapOpacityChanged(self, opacity: float) -> None:
        if self._heatMapShown:
            self.logic.setHeatMapOpacity(opacity)

    def _showSuggestions(self, suggestions: Sequence[Dict]) -> None:
        """List the sections to look at next (dicts with ``section``, ``reason`` and ``text``)."""
        self._suggestions = list(suggestions)
        self._suggestionRow = None
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        self._suggestionsVolume = volume.GetID() if volume is not None else None
        listWidget = self.ui.suggestionsListWidget
        listWidget.clear()
        if self._suggestions:
            loop = lib("loop")
            for row, suggestion in enumerate(self._suggestions):
                listWidget.addItem(loop.suggestion_row(suggestion))
                item = listWidget.item(row)
                if item is not None and suggestion.get("text"):
                    item.setToolTip(suggestion["text"])
        self.ui.nextSectionButton.enabled = bool(self._suggestions)

    def onSuggestionRowChanged(self, row: int) -> None:
        """Jump to the row the arrow keys moved to; a mouse press's row jumps on its click instead."""
        # A press on another row changes the current row, then its release clicks the item (itemClicked, which
        # also serves a click on the row already current): jumping on both showed the section twice.
        if int(qt.QApplication.mouseButtons()):
            return
        self.onSuggestionSelected(row)

    def onSuggestionSelected(self, row: int) -> None:
        """Show the suggested section of list row ``row`` in the Red slice view."""
        if not 0 <= row < len(self._suggestions) or not self._parameterNode:
            return
        self._suggestionRow = row
        suggestion = self._suggestions[row]
        with self._reportErrors(_("Cannot show the section")):
            volume = self._parameterNode.inputVolume
            if volume is None:
                raise userError(_("Select the input volume first."))
            self.logic.jumpToSection(volume, int(suggestion["section"]))
            self.ui.statusLabel.text = suggestion.get("text") or lib("loop").suggestion_row(suggestion)

    def onNextSection(self) -> None:
        """Go to the next suggested section (wrapping round); key n."""
        row = lib("loop").next_suggestion(self._suggestionRow, len(self._suggestions))
        if row is None:
            self.ui.statusLabel.text = _("No sections suggested yet: show the heat map or run first.")
            return
        listWidget = self.ui.suggestionsListWidget
        wasBlocked = listWidget.blockSignals(True)  # the jump is the next line's, once: not from currentRowChanged
        listWidget.setCurrentRow(row)
        listWidget.blockSignals(wasBlocked)
        self.onSuggestionSelected(row)

    def onUndoRunButton(self) -> None:
        p = self._parameterNode
        with self._reportErrors(_("Cannot undo the last run")):
            if self.logic.busy:
                raise userError(_("Wait for the running job to finish."))
            volume = p.inputVolume
            text = self.logic.undoLastRun(volume, ScribbleSegLogic.resultOf(p.outputSegmentation, volume), p.show3D)
            self.logic.showChanges(volume, p.showChanges)
            self.ui.statusLabel.text = _("Back to the run before: {change}.").format(change=text)
        self._updateBusyState()

    def onShowChangesToggled(self, show: bool) -> None:
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if volume is not None:
            self.logic.showChanges(volume, show)

    def onShow3DToggled(self, show: bool) -> None:
        output = self._parameterNode.outputSegmentation if self._parameterNode else None
        if output is not None:
            self.logic.showSurface(output, show)

    def onExportSurfaceButton(self) -> None:
        output = self._parameterNode.outputSegmentation
        with self._reportErrors(_("Cannot export the surface")):
            if output is None:
                raise userError(_("There is no result to export yet."))
            path = qt.QFileDialog.getSaveFileName(
                slicer.util.mainWindow(), _("Export heart surface"), f"{output.GetName()}.stl",
                "STL (*.stl);;OBJ (*.obj);;VTK PolyData (*.vtp)")
            if path:
                self.logic.exportSurface(output, path)
                self.ui.statusLabel.text = _("Surface written to {path}").format(path=path)

    # Progress display

    def _showJobStarted(self, title: str) -> None:
        self.ui.logTextEdit.appendPlainText(f"--- {title} ({time.strftime('%H:%M:%S')})")
        self.ui.progressBar.value = 0
        self.ui.progressBar.setFormat(f"{title}: %p%")
        self.ui.progressBar.show()
        self.ui.statusLabel.text = title

    def _onJobEvent(self, event: Dict) -> None:
        kind = event["event"]
        if kind == "progress":
            self.ui.progressBar.setFormat(f"{event['stage']}: %p%")
            self.ui.progressBar.value = int(1000 * event["fraction"])
            if event.get("message"):
                self.ui.statusLabel.text = event["message"]
        elif kind == "log":
            self.ui.logTextEdit.appendPlainText(event.get("message", ""))
        elif kind == "started":
            self.ui.logTextEdit.appendPlainText(f"worker process {event.get('pid')} started")
            self._updateBusyState()
        elif kind == "error":
            self.ui.logTextEdit.appendPlainText(f"error: {event.get('message')}")
        elif kind == "exit":
            self.ui.logTextEdit.appendPlainText(f"worker process exited with status {event.get('returncode')}")

    def _endJob(self, job=None) -> None:
        self.ui.progressBar.hide()
        if job is None:
            self.ui.statusLabel.text = ""
        elif job.succeeded:
            self.ui.statusLabel.text = _("Done in {seconds:.0f} s.").format(seconds=job.elapsed)
        elif job.cancelled:
            self.ui.statusLabel.text = _("Cancelled; the scene is unchanged.")
        else:
            self.ui.statusLabel.text = _("Failed; see the log below.")
        self._updateBusyState()

    def _updateBusyState(self) -> None:
        """While a job runs: its button turns into Cancel and the inputs are locked.

        Device detection is not a job: it runs beside everything and locks nothing.
        """
        busy = self.logic.busy
        purpose = self.logic.job.purpose if busy else None
        for widget in (self.ui.inputVolumeSelector, self.ui.phantomButton, self.ui.loadSectionsButton,
                       self.ui.modelPathLineEdit, self.ui.useStarterModelButton, self.ui.deviceComboBox,
                       self.ui.scribbleSelector, self.ui.methodComboBox, self.ui.advancedGroupBox,
                       self.ui.outputSegmentationSelector, self.ui.createProbabilityCheckBox,
                       self.ui.trainingSegmentationsSelector, self.ui.exportSurfaceButton,
                       self.ui.clearCacheButton, self.ui.cacheMaxSizeSpinBox):
            widget.enabled = not busy
        self.ui.applyButton.text = _("Cancel") if purpose == "segment" else _("Apply")
        self.ui.heatMapButton.text = (_("Cancel") if purpose == "heatmap" else
                                      _("Hide heat map") if self._heatMapShown else _("Show heat map"))
        self.ui.heatMapButton.enabled = not busy or purpose == "heatmap"
        self.ui.applyButton.enabled = not busy or purpose == "segment"
        self.ui.trainButton.text = _("Cancel training") if purpose == "train" else _("Train")
        self.ui.trainButton.enabled = not busy or purpose == "train"
        self.ui.addToModelButton.text = (_("Cancel adding the volume") if purpose == "finetune"
                                         else _("Add this volume to the model"))
        if busy:
            self.ui.addToModelButton.enabled = purpose == "finetune"
            self.ui.undoRunButton.enabled = False
        else:
            self._updateResultWidgets()


#
# ScribbleSegJob
#


class ScribbleSegJob:
    """One run of the worker process, driven from Qt's event loop.

    A QTimer on the main thread polls the process every 100 ms, so the
    callbacks may touch MRML nodes and widgets.  The job's temporary folder
    is deleted when it finishes, whatever the outcome.

    Attributes
    ----------
    kind : str
        The request's task: ``segment``, ``train``, ``phantom`` or ``devices``.
    purpose : str
        What the user asked for: the task, or ``finetune`` for a ``train`` task that
        fine-tunes a model ("Add this volume to the model").
    result : dict or None
        The worker's ``done`` event.
    succeeded, cancelled : bool
    errorMessage : str
        What went wrong, for the user (empty on success).
    """

    def __init__(self, kind: str, tempDir: str, request: Dict, onEvent: Optional[Callable[[Dict], None]] = None,
                 onFinished: Optional[Callable[["ScribbleSegJob"], None]] = None,
                 purpose: Optional[str] = None) -> None:
        worker = lib("worker")
        self._initState(kind, purpose or kind, tempDir, onEvent, onFinished)
        requestPath = worker.write_request(os.path.join(tempDir, "request.json"), request)
        self.process = worker.WorkerProcess(requestPath, python=pythonExecutable(), pythonpath=[libraryFolder()])

    def _initState(self, kind: str, purpose: str, tempDir: str, onEvent, onFinished) -> None:
        """The state every job starts with (shared with the warm worker's runs) and its polling timer."""
        self.kind = kind
        self.purpose = purpose
        self.tempDir = tempDir
        self.onEvent = onEvent
        self.onFinished = onFinished
        self.result: Optional[Dict] = None
        self.succeeded = False
        self.cancelled = False
        self.errorMessage = ""
        self.outputNode = None
        self.probabilityNode = None
        self.heatMapNode = None
        self.changesNode = None
        self.suggestions: List[Dict] = []
        self.changeText = ""
        self.elapsed = 0.0
        self._finishers: List[Callable[["ScribbleSegJob"], None]] = []
        self._started = 0.0
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    @property
    def finished(self) -> bool:
        return self.process.finished and not self._timer.isActive()

    def start(self) -> "ScribbleSegJob":
        self._started = time.monotonic()
        self.process.start()
        self._timer.start()
        return self

    def addFinisher(self, finisher: Callable[["ScribbleSegJob"], None]) -> None:
        """Run ``finisher(job)`` on the main thread before ``onFinished`` (e.g. to import results)."""
        self._finishers.append(finisher)

    def cancel(self) -> None:
        """Ask the worker to stop; kill its process tree if it has not stopped after a grace period."""
        if self.process.finished:
            return
        self.cancelled = True
        self.process.cancel()
        qt.QTimer.singleShot(CANCEL_GRACE_MS, self.process.kill)

    def kill(self) -> None:
        """Stop at once (application exit, scene close)."""
        self.cancelled = True
        self.process.kill()

    def wait(self) -> "ScribbleSegJob":
        """Block until the job has finished, keeping the application responsive."""
        while not self.finished:
            slicer.app.processEvents()
            time.sleep(0.02)
        return self

    def _poll(self) -> None:
        for event in self.process.poll():
            if self.onEvent is not None:
                self.onEvent(event)
        if self.process.finished:
            self._timer.stop()
            self._finish()

    def _finish(self) -> None:
        self.elapsed = time.monotonic() - self._started
        self.result = self.process.result
        error = self.process.error
        if error is not None and error.get("kind") == "cancelled":
            self.cancelled = True

        def conclude():
            if self.result is not None and not self.cancelled:
                for finisher in self._finishers:
                    finisher(self)
                self.succeeded = True
            elif self.cancelled:
                self.errorMessage = _("Cancelled.")
            else:
                self.errorMessage = self.process.failure_message()

        self._conclude(conclude)

    def _conclude(self, conclude: Callable[[], None]) -> None:
        """Run ``conclude`` (import the result or say what went wrong), delete the job's folder, call back."""
        try:
            conclude()
        except Exception as exc:
            logging.exception("ScribbleSeg: importing the result failed")
            self.errorMessage = str(exc)
        finally:
            shutil.rmtree(self.tempDir, ignore_errors=True)
        if self.onFinished is not None:
            self.onFinished(self)


class ScribbleSegSession:
    """The warm worker of one (volume, model, device, cache): a ``SessionProcess`` and its folder.

    Attributes
    ----------
    key : tuple
        What the worker was opened on (see :meth:`ScribbleSegLogic.sessionKey`).
    folder : str
        The session's files (the volume, and one sub-folder per run); deleted by :meth:`close`.
    process : ScribbleSegLib.worker.SessionProcess
    """

    def __init__(self, key: Tuple, folder: str, process) -> None:
        self.key = key
        self.folder = folder
        self.process = process

    def alive(self) -> bool:
        """Not started yet, or running; a worker that died while idle is noticed here."""
        if self.process.pid is None:
            return True
        self.process.poll()  # nothing listens while idle: only the exit matters
        return not self.process.finished

    def close(self) -> None:
        """End the worker (at once: it holds no result anyone waits for) and delete its files."""
        self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class ScribbleSegSessionJob(ScribbleSegJob):
    """One run on the warm worker: it opens the session first if needed, then sends only the scribbles.

    Behaves as :class:`ScribbleSegJob` for the panel and the logic.  Cancel asks
    the run to stop and kills the worker if it has not stopped after a grace
    period (a graph cut cannot be interrupted); a killed or crashed worker is
    replaced by a new one on the next run.
    """

    def __init__(self, session: ScribbleSegSession, run: Dict, runDir: str,
                 onEvent: Optional[Callable[[Dict], None]] = None,
                 onFinished: Optional[Callable[["ScribbleSegJob"], None]] = None, purpose: str = "segment",
                 notice: str = "") -> None:
        self._initState("segment", purpose, runDir, onEvent, onFinished)
        self.session = session
        self.process = session.process
        self.run = run
        self.runId = None
        self.warm = session.process.pid is not None  # the worker was already running
        self.notice = notice
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done and not self._timer.isActive()

    def start(self) -> "ScribbleSegSessionJob":
        self._started = time.monotonic()
        if self.process.pid is None:
            self.process.start()
        if self.notice and self.onEvent is not None:
            self.onEvent({"event": "log", "level": "warning", "message": self.notice})
        self._timer.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop; kill the worker if it is still running it after a grace period."""
        if self._done:
            return
        self.cancelled = True
        self.process.cancel()
        qt.QTimer.singleShot(CANCEL_GRACE_MS, self._killIfRunning)

    def _killIfRunning(self) -> None:
        if not self._done:
            self.process.kill()

    def kill(self) -> None:
        self.cancelled = True
        self.process.kill()

    def _poll(self) -> None:
        for event in self.process.poll():
            if self.onEvent is not None:
                self.onEvent(event)
        if self.runId is None and self.process.ready is not None and not self.process.finished:
            if self.cancelled:  # cancelled while the worker was opening: nothing to run
                self._finish(None)
                return
            try:
                self.runId = self.process.send(self.run)
            except RuntimeError:
                pass  # the worker just ended: reported below
        if self.runId is not None and self.runId in self.process.runs:
            self._finish(self.process.runs[self.runId])
        elif self.process.finished:
            self._finish(None)

    def _finish(self, event: Optional[Dict]) -> None:
        self._timer.stop()
        self._done = True
        self.elapsed = time.monotonic() - self._started

        def conclude():
            if event is not None and event["event"] == "done" and not self.cancelled:
                self.result = event
                if not self.warm and self.process.ready is not None:  # this job opened the worker
                    cached = self.process.ready.get("metrics", {}).get("features_cached", False)
                    event.setdefault("metrics", {})["features_cached"] = bool(cached)
                for finisher in self._finishers:
                    finisher(self)
                self.succeeded = True
            elif self.cancelled or (event is not None and event.get("kind") == "cancelled"):
                self.cancelled = True
                self.errorMessage = _("Cancelled.")
            elif (event or self.process.error or {}).get("kind") == "input":  # bad input: the run's or the opening's
                self.errorMessage = str((event or self.process.error).get("message", ""))
            else:  # the worker crashed, ran out of memory or was killed: the next run starts a new one
                self.errorMessage = (self.process.failure_message()
                                     + "\n" + _("The next run starts a new worker process."))

        self._conclude(conclude)


def _requirementName(line: str) -> str:
    """The lower-case package name of a requirement line (``PyMaxflow>=1.3.0`` -> ``pymaxflow``)."""
    name = line.strip()
    for separator in "<>=!~;[ ":
        name = name.split(separator)[0]
    return name.lower()


def shownBySlicer(exc: subprocess.CalledProcessError) -> bool:
    """Whether Slicer has shown this pip failure in a dialog of its own, with pip's output.

    From 5.12 on, ``slicer.packaging``'s progress dialog (``pip_ensure``, and ``slicer.util.pip_install``, which
    PyTorchUtils calls to install light-the-torch) shows "Package installation failed." and then raises
    ``CalledProcessError(code, "pip install")``; every other failure raises with the command line as a list
    (``_executePythonModule``, 5.6 to main).  Base/Python/slicer/packaging.py, ``_pip_install_with_dialog``.
    """
    return exc.cmd == "pip install"


def pythonExecutable() -> str:
    """Slicer's ``PythonSlicer`` (which sets up the environment for Slicer's Python), else this interpreter
    when it is a plain Python (the console, the tests).

    Inside Slicer ``sys.executable`` is what ``QStandardPaths::findExecutable("PythonSlicer")`` found
    (qSlicerCoreApplication, 5.6 to main): PythonSlicer on PATH, else empty, so a missing PythonSlicer is an error,
    as in ``slicer.util._executePythonModule`` (5.6 to 5.10; ``executePythonModule`` from 5.12 on, the old name
    deprecated there).  The look beside ``sys.executable`` serves a plain Python that has Slicer's beside it.
    """
    # The same lookup as that function; it cannot start a process group, which a
    # hard cancel needs, so the worker is started with subprocess directly.
    found = shutil.which("PythonSlicer")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
    if os.path.isfile(beside):
        return beside
    if "python" in os.path.basename(sys.executable).lower():
        return sys.executable
    raise userError(f"PythonSlicer executable not found (on PATH or beside {sys.executable}); ScribbleSeg runs "
                    "its work in Slicer's Python. Reinstall Slicer")


#
# ScribbleSegLogic
#


class ScribbleSegLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable from the Python console without the panel.

    Example::

        import ScribbleSeg
        logic = ScribbleSeg.ScribbleSegLogic()
        result = logic.segment(volumeNode, scribbleSegmentationNode, "/models/heart.model")

    One job (segmentation, training, fine-tuning, phantom) runs at a time;
    device detection runs beside it.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.job: Optional[ScribbleSegJob] = None
        self.deviceJob: Optional[ScribbleSegJob] = None
        # The warm worker (one per volume, model, device): each run sends only the scribbles.
        # False: every run starts the one-shot worker, which reads the volume and the features again.
        self.useWarmWorker = True
        self.session: Optional[ScribbleSegSession] = None
        self.histories: Dict[str, object] = {}  # input volume ID -> ScribbleSegLib.loop.RunHistory
        # Volumes whose last run was undone: their next warm run forgets the runs before it ("forget").
        self.undoneVolumes: set = set()

    def getParameterNode(self):
        return ScribbleSegParameterNode(super().getParameterNode())

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self.job is not None and not self.job.finished

    def cancel(self) -> None:
        """Cancel the running job, if any."""
        if self.busy:
            self.job.cancel()

    @property
    def detectingDevices(self) -> bool:
        """Whether device detection is running."""
        return self.deviceJob is not None and not self.deviceJob.finished

    def cleanup(self) -> None:
        """Kill running jobs and the warm worker (the application is closing or the module reloading).

        The jobs' callbacks are dropped.
        """
        for job, running in ((self.job, self.busy), (self.deviceJob, self.detectingDevices)):
            if running:
                job.onEvent = job.onFinished = None
                job.kill()
        self.closeSession()

    def closeSession(self) -> None:
        """End the warm worker, if any (scene closed, module reloaded); the next run starts a new one."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def forgetRuns(self) -> None:
        """Forget the run histories (the scene is closing: its node IDs will be reused)."""
        self.histories.clear()

    # Per-user settings

    @staticmethod
    def modelPath() -> str:
        """The model file last chosen (remembered between sessions); empty for the starter model."""
        return str(qt.QSettings().value(SETTINGS_MODEL_PATH, ""))

    @staticmethod
    def starterModelPath() -> str:
        """The starter model shipped with ScribbleSeg, or ``""`` if this installation has none."""
        path = lib("starter").starter_model_path()
        return str(path) if path is not None else ""

    def resolvedModelPath(self, path: Optional[str] = None) -> str:
        """The model file a run uses: ``path`` (default: the chosen one), or the starter model if empty.

        Raises
        ------
        ScribbleSegError
            If the starter model is needed and missing.
        """
        return str(lib("starter").resolve_model(self.modelPath() if path is None else path))

    def describeModel(self, path: str) -> str:
        """What the panel says about the model in use."""
        starter = lib("starter")
        if not path or starter.is_starter_model(path):
            if starter.starter_model_path() is None:
                return _("No model chosen, and this installation has no starter model: choose or train a model.")
            return _("Starter model (trained on synthetic phantoms): a starting point. Paint scribbles to adapt it "
                     "to your volume; when a result is right, use 'Add this volume to the model' (Result section) "
                     "so that the next volume starts from a model that knows your data.")
        return _("Model: {name}").format(name=os.path.basename(path))

    @staticmethod
    def suggestFineTunedModelPath(parentPath: str, volumeName: str) -> str:
        """A file name for a model fine-tuned on ``volumeName``: beside the parent, unless that is the starter."""
        folder = os.path.dirname(parentPath)
        if not folder or lib("starter").is_starter_model(parentPath) or not os.access(folder, os.W_OK):
            folder = os.path.expanduser("~")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in volumeName) or "volume"
        stem = os.path.splitext(os.path.basename(parentPath))[0] or "model"
        return os.path.join(folder, f"{stem}+{safe}.model")

    @staticmethod
    def setModelPath(path: str) -> None:
        qt.QSettings().setValue(SETTINGS_MODEL_PATH, str(path))

    @staticmethod
    def device() -> str:
        """``auto``, ``cpu`` or ``cuda`` (remembered between sessions)."""
        device = str(qt.QSettings().value(SETTINGS_DEVICE, DEFAULT_DEVICE))
        return device if device in DEVICES else DEFAULT_DEVICE

    @staticmethod
    def setDevice(device: str) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        qt.QSettings().setValue(SETTINGS_DEVICE, device)

    # Dependencies

    @staticmethod
    def torchInstalled() -> bool:
        """Whether torch can be imported, checked without importing it."""
        import importlib.util

        return importlib.util.find_spec("torch") is not None

    def requirements(self) -> List[str]:
        """Lines of ``Resources/requirements.txt`` (lower bounds of the pip packages besides torch)."""
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]

    def missingRequirements(self) -> List[str]:
        """The requirements that are not installed at a suitable version."""
        import importlib.metadata

        from packaging.requirements import Requirement

        missing = []
        for line in self.requirements():
            requirement = Requirement(line)
            try:
                version = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(line)
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                missing.append(line)
        return missing

    def torchProblem(self) -> str:
        """Why the installed torch cannot be used (a wrong version), or ``""``."""
        import importlib.metadata

        from packaging.specifiers import SpecifierSet

        if not self.torchInstalled():
            return ""
        version = importlib.metadata.version("torch")
        if SpecifierSet(TORCH_REQUIREMENT).contains(version, prereleases=True):
            return ""
        return (f"PyTorch {version} is installed but ScribbleSeg needs torch{TORCH_REQUIREMENT}: open the "
                "'PyTorch Util' module, uninstall PyTorch, restart Slicer and install it again")

    def missingDependencies(self, torch: bool = True) -> List[str]:
        """Everything to install before a run, one line per package (torch first), for the user."""
        missing = []
        if torch and not self.torchInstalled():
            missing.append(f"PyTorch (torch{TORCH_REQUIREMENT}), through the PyTorch extension")
        return missing + [f"{line}, from PyPI" for line in self.missingRequirements()]

    def ensureDependencies(self, torch: bool = True) -> None:
        """Install what is missing after one confirmation that lists every package; call on the main thread.

        torch comes from the PyTorch extension's PyTorchUtils (the build that
        matches the GPU driver; its installTorch imports torch into Slicer's
        process once, and nothing here runs it there); the other packages from pip, with numpy,
        SimpleITK and torch pinned to their installed versions so that pip
        never replaces Slicer's own.  A restart is offered when pip replaced a
        package that Slicer's own process has already imported (the worker
        process always starts fresh, so it needs none).

        Raises
        ------
        ScribbleSegError
            If something is missing and cannot be installed, or the user declines;
            never a raw pip or PyTorchUtils exception.
        """
        problem = self.torchProblem() if torch else ""
        if problem:
            raise userError(problem)
        missing = self.missingDependencies(torch)
        if not missing:
            return
        if slicer.app.testingEnabled():
            raise userError(f"Python packages missing: {'; '.join(missing)}; install them before testing")
        needTorch = torch and not self.torchInstalled()
        pipMissing = self.missingRequirements()
        pyTorchUtils = None
        if needTorch:
            try:
                import PyTorchUtils as pyTorchUtils
            except ModuleNotFoundError:
                raise userError("ScribbleSeg needs the PyTorch extension: install 'PyTorch' from the Extensions "
                                "Manager, restart Slicer, and try again") from None
        if not slicer.util.confirmOkCancelDisplay(
                _("ScribbleSeg needs these Python packages, which will be downloaded and installed into Slicer's "
                  "Python (this can take several minutes):\n\n{packages}").format(
                    packages="\n".join(f"- {line}" for line in missing)),
                windowTitle=_("Install Python packages")):
            raise userError(_("ScribbleSeg cannot run without: {packages}.").format(packages="; ".join(missing)))
        loaded = [IMPORT_NAMES.get(_requirementName(line), "") for line in pipMissing]
        loaded = [name for name in loaded if name and name in sys.modules]
        try:
            if needTorch:
                torchModule = pyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
                if torchModule is None:
                    raise userError("PyTorch was not installed; ScribbleSeg cannot run without it")
            if pipMissing:
                self._pipInstall(pipMissing)
        except subprocess.CalledProcessError as exc:
            what = "PyTorch" if needTorch and not self.torchInstalled() else ", ".join(pipMissing)
            error = userError(f"installing {what} failed (exit status {exc.returncode}); its output is in the Python "
                              "console. See Troubleshooting in the ScribbleSeg documentation")
            error.shownBySlicer = shownBySlicer(exc)
            raise error from None
        except Exception as exc:
            if isUserError(exc):
                raise
            logging.exception("ScribbleSeg: installing dependencies failed")
            raise userError(f"installing the Python packages failed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); see the Python console") from None
        stillMissing = self.missingDependencies(torch)
        if stillMissing:
            raise userError(f"Installing {'; '.join(stillMissing)} failed; see the Python console for pip's output")
        if loaded and slicer.util.confirmYesNoDisplay(
                _("Slicer had already loaded {packages}, which were just updated. Restart Slicer now so that it "
                  "uses the new versions?").format(packages=", ".join(loaded)), windowTitle=_("Restart Slicer")):
            slicer.util.restart()

    def _pipInstall(self, requirements: List[str]) -> None:
        """pip-install ``requirements`` (already confirmed) with Slicer's packages pinned."""
        constraints = self._writeConstraints()
        try:
            try:
                import slicer.packaging as slicerPackaging  # Slicer 5.12+
            except ImportError:
                slicerPackaging = None
            if slicerPackaging is not None:
                # The user has agreed in our dialog, and ensureDependencies offers the restart itself
                # (on every version): one question each, not two.
                slicerPackaging.pip_ensure(requirements, constraints=constraints, prompt_install=False,
                                           prompt_restart=False, requester="ScribbleSeg")
            else:
                slicer.util.pip_install(["-c", constraints, *requirements])
        finally:
            os.remove(constraints)

    @staticmethod
    def _writeConstraints() -> str:
        """A pip constraints file pinning the packages Slicer (or PyTorchUtils) installed."""
        import importlib.metadata
        import tempfile

        lines = []
        for name in ("numpy", "SimpleITK", "torch"):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                lines.append(f"{name}=={importlib.metadata.version(name)}")
        fd, path = tempfile.mkstemp(prefix="ScribbleSeg-constraints-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    # Jobs

    def _refuseIfBusy(self) -> None:
        if self.busy:
            raise userError(_("ScribbleSeg is already running a {kind} job; wait for it or cancel it.")
                            .format(kind=self.job.kind))

    def _jobFolder(self) -> str:
        """A new temporary folder for a job's files; refused while another job runs."""
        self._refuseIfBusy()
        return newTemporaryFolder("ScribbleSeg")

    def _startJob(self, kind: str, folder: str, request: Dict, onEvent=None, onFinished=None,
                  finisher: Optional[Callable[[ScribbleSegJob], None]] = None, purpose: Optional[str] = None,
                  exclusive: bool = True) -> ScribbleSegJob:
        """Start the worker on ``request``; ``finisher`` imports its results on the main thread.

        ``folder`` is deleted if the worker cannot be started.  A non-exclusive
        job (device detection) does not count as the running job.
        """
        try:
            job = ScribbleSegJob(kind, folder, {"task": kind, **request}, onEvent, onFinished, purpose)
            if finisher is not None:
                job.addFinisher(finisher)
            job.start()
        except OSError as exc:  # e.g. no Python executable to run the worker with
            shutil.rmtree(folder, ignore_errors=True)
            raise userError(f"cannot start the ScribbleSeg worker process ({exc.strerror or exc}): "
                            f"{pythonExecutable()}") from None
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if exclusive:
            self.job = job
        else:
            self.deviceJob = job
        return job

    @staticmethod
    def _raiseIfFailed(job: ScribbleSegJob) -> None:
        if job.cancelled:
            raise lib("errors").CancelledError()
        if not job.succeeded:
            raise userError(job.errorMessage)

    def detectDevices(self, onFinished=None) -> ScribbleSegJob:
        """Ask the worker which devices torch sees; ``job.result["outputs"]`` lists them.

        It runs beside any other job and does not make the logic busy: importing
        torch takes seconds, and nothing in the panel should wait for it.
        """
        if self.detectingDevices:
            return self.deviceJob
        return self._startJob("devices", newTemporaryFolder("ScribbleSeg"), {}, onFinished=onFinished,
                              exclusive=False)

    @staticmethod
    def describeDevices(outputs: Dict) -> str:
        """One line about the GPUs in a ``devices`` result."""
        gpus = [d for d in outputs.get("devices", []) if d["id"] != "cpu"]
        if not gpus:
            return _("no CUDA GPU (torch {version}); runs on the CPU").format(version=outputs.get("torch"))
        return "; ".join(f"{d['name']}, {d['memory_gb']:.1f} GB" for d in gpus)

    # Input

    @staticmethod
    def statedSectionVoxel(folder: str) -> Optional[Tuple[float, Optional[float]]]:
        """``(pixel size, section spacing or None)`` in mm that every section of ``folder`` states alike (a Fiji
        image sequence), or None (``ScribbleSegLib.volume_io.stated_section_voxel``, whose ``ScribbleSegError``
        for sections that state different sizes passes through)."""
        stated = lib("volume_io").stated_section_voxel(folder)
        return None if stated is None else (min(stated.x, stated.y), stated.z)

    def loadSectionFolder(self, folder: str, spacing: Sequence[float], downsample: int = 1, name: Optional[str] = None,
                          progress=None, cancel=None):
        """Read a folder of section images into a new RGB volume node.

        Parameters
        ----------
        folder : str
            Section images (PNG/TIFF/JPEG) in natural sort order.
        spacing : (x, y, z)
            Voxel size at full resolution in mm.
        downsample : int
            In-plane reduction factor (block average).
        progress, cancel
            As in ScribbleSegLib (a callable ``(stage, fraction, message)`` and a ``CancelToken``).
        """
        volume = lib("volume_io").read_image(folder, spacing=spacing, downsample=downsample,
                                             progress=progress, cancel=cancel)
        return self.addRGBVolume(volume.array, volume.geometry.ijk_to_ras(),
                                 name or os.path.basename(os.path.normpath(folder)))

    @staticmethod
    def addRGBVolume(array, ijkToRAS, name: str):
        """Add a ``(Z, Y, X, 3)`` uint8 array as an RGB vector volume node."""
        node = slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRAS, name=slicer.mrmlScene.GenerateUniqueName(name),
                                              nodeClassName="vtkMRMLVectorVolumeNode")
        node.SetVoxelVectorType(slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGB)
        return node

    def createPhantom(self, seed: int = 0, shape: Sequence[int] = SAMPLE_PHANTOM_SHAPE, onEvent=None):
        """Make a synthetic H&E stack with its heart and example scribbles, and load it.

        The files are kept as sample data (``ScribbleSegLib.choices.sample_data_dir``), so that a scene saved later
        refers to files that still exist: not in Slicer's cache folder, which Slicer prunes at every start from
        5.12 on (``vtkCacheManager::PruneCache`` on main).

        Returns
        -------
        (volume node, true heart segmentation, scribble segmentation)
        """
        folder = os.path.join(str(lib("choices").sample_data_dir()), "phantom-{}-seed{}-{}".format(
            libraryVersion(),
            seed, "x".join(str(int(s)) for s in shape)))
        files = {key: os.path.join(folder, f"{key}{suffix}") for key, suffix in
                 (("image", ".nrrd"), ("label", ".seg.nrrd"), ("scribbles", ".seg.nrrd"))}
        if not all(os.path.isfile(p) for p in files.values()):
            self.ensureDependencies(torch=False)  # the phantom task never imports torch
            os.makedirs(folder, exist_ok=True)
            request = {"seed": int(seed), "shape": [int(s) for s in shape], "outputs": files}
            self._raiseIfFailed(self._startJob("phantom", self._jobFolder(), request, onEvent).wait())
        name = f"Phantom{seed}"
        volume = slicer.util.loadVolume(files["image"], {"name": name, "singleFile": True})
        volume.SetVoxelVectorType(slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGB)
        truth = slicer.util.loadSegmentation(files["label"], {"name": f"{name} true heart"})
        scribbles = slicer.util.loadSegmentation(files["scribbles"], {"name": f"{name} scribbles"})
        for segmentation in (truth, scribbles):
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        truth.GetDisplayNode().SetVisibility(False)
        self.ensureScribbleSegments(scribbles, volume)
        return volume, truth, scribbles

    # Scribbles

    @staticmethod
    def segmentId(segmentationNode, name: str) -> str:
        """ID of the segment called ``name`` (any case), or ``""``."""
        segmentation = segmentationNode.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            if segmentation.GetNthSegment(index).GetName().lower() == name.lower():
                return segmentation.GetNthSegmentID(index)
        return ""

    @classmethod
    def labelSegmentId(cls, segmentationNode) -> str:
        """ID of a labelled volume's target: its ``heart`` segment, or its only segment whatever its name (as the
        library reads a label ``.seg.nrrd``); ``""`` otherwise."""
        segmentId = cls.segmentId(segmentationNode, HEART)
        segmentation = segmentationNode.GetSegmentation()
        if not segmentId and segmentation.GetNumberOfSegments() == 1:
            segmentId = segmentation.GetNthSegmentID(0)
        return segmentId

    def ensureScribbleSegments(self, segmentationNode, volumeNode=None) -> Tuple[str, str]:
        """Add the ``heart`` and ``background`` segments if missing; return their IDs."""
        if volumeNode is not None and not segmentationNode.GetNodeReference(
                slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()):
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        ids = []
        for name, color in ((HEART, HEART_COLOR), (BACKGROUND, BACKGROUND_COLOR)):
            segmentId = self.segmentId(segmentationNode, name)
            if not segmentId:
                segmentId = segmentationNode.GetSegmentation().AddEmptySegment(name, name, color)
            ids.append(segmentId)
        return ids[0], ids[1]

    def createScribbleSegmentation(self, volumeNode):
        """A new segmentation for scribbles on ``volumeNode``, with empty ``heart`` and ``background`` segments."""
        name = slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} scribbles")
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        self.ensureScribbleSegments(node, volumeNode)
        return node

    def scribbleArray(self, volumeNode, scribbleNode):
        """Scribbles on the volume's voxel grid: uint8 ``(Z, Y, X)``, 0 none, 1 heart, 2 background.

        A segmentation drawn on another geometry (another volume, a different
        resolution) is resampled onto the volume; voxels painted in both
        segments count as not scribbled.

        Raises
        ------
        ScribbleSegError
            If there is no heart or no background stroke.
        """
        import numpy as np

        masks = []
        for name in (HEART, BACKGROUND):
            segmentId = self.segmentId(scribbleNode, name)
            mask = None
            if segmentId:
                try:
                    mask = slicer.util.arrayFromSegmentBinaryLabelmap(scribbleNode, segmentId, volumeNode) > 0
                except RuntimeError:
                    mask = None
            if mask is None or not mask.any():
                raise userError(_("No {name} scribble in '{node}': paint at least one stroke in its '{name}' "
                                  "segment (on the volume '{volume}').").format(
                    name=name, node=scribbleNode.GetName(), volume=volumeNode.GetName()))
            masks.append(mask)
        heart, background = masks
        scribbles = heart.astype(np.uint8) + 2 * background.astype(np.uint8)
        conflicts = heart & background
        if conflicts.any():
            logging.warning(f"ScribbleSeg: {int(conflicts.sum())} voxels are in both scribble segments; ignored")
            scribbles[conflicts] = 0
        return scribbles

    # Segmentation

    def startSegmentation(self, volumeNode, scribbleNode, modelPath: str, *, method: str = "full",
                          cut: Optional[Dict] = None, ddml: Optional[Dict] = None, seed: int = 0,
                          orientations: Optional[int] = None, device: Optional[str] = None, outputNode=None,
                          createProbability: bool = False, probabilityNode=None, show3D: bool = True, onEvent=None,
                          onFinished=None, purpose: str = "segment") -> ScribbleSegJob:
        """Start segmenting ``volumeNode`` in the background and return the job at once.

        The inputs are written on the calling (main) thread, so later edits of
        the scribbles do not affect this run.  When the worker is done, the
        result is imported into ``outputNode`` (a new segmentation named after
        the volume if None; the same node again on the next run, updated in
        place) on the main thread; the scribbles are never changed.

        The run goes to the warm worker of this volume, model and device
        (:attr:`useWarmWorker`; started on the first run, it keeps the volume and
        its M-Unet features, so each further run sends only the scribbles), or to
        a one-shot worker if the warm one cannot be started.  After the run:

        - ``job.outputNode``: the result; ``job.heatMapNode``: the volume's heat map,
          updated with the run's probability (``h``, or the network's for ``munet``);
        - ``job.suggestions``: the sections to look at next (dicts with ``section``,
          ``reason``, ``text``); ``job.changeText``: the heart volume and its change
          since the previous run; ``job.changesNode``: what the run changed.

        Parameters
        ----------
        method : {"munet", "ddml", "full"}
        cut : dict, optional
            ``gamma``, ``sigma``, ``delta`` of the graph cut (library defaults if None).
        ddml : dict, optional
            ``DDMLConfig`` fields, e.g. ``steps``, ``head_steps``, ``scribble_share``.
        orientations : {1, 2, 4}, optional
            Test-time flips of the M-Unet (:class:`Orientations`); None: the library's
            default (``choices.DEFAULT_ORIENTATIONS``).  The warm worker keeps the
            features of one choice, so a change starts a new one.
        device : {"auto", "cpu", "cuda"}, optional
            Default: the per-user setting.
        purpose : {"segment", "heatmap"}
            ``heatmap``: only the network's probability, into the heat map (see
            :meth:`startHeatMap`); the result segmentation is not touched.
        """
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise userError(_("Select an input volume (Input section)."))
        choices = lib("choices")
        if method not in choices.METHODS:
            raise userError(f"method {method!r}: expected one of {', '.join(choices.METHODS)}")
        if orientations is None:
            orientations = choices.DEFAULT_ORIENTATIONS
        if orientations not in choices.ORIENTATIONS:
            raise userError(f"orientations {orientations!r}: expected one of "
                            f"{', '.join(map(str, choices.ORIENTATIONS))}")
        modelPath = self.resolvedModelPath(modelPath)  # empty: the starter model
        if not os.path.isfile(modelPath):
            raise userError(_("{path}: no such model file").format(path=modelPath))
        if method != "munet" and scribbleNode is None:
            raise userError(_("Select or create the scribbles (Scribbles section)."))
        scribbles = self.scribbleArray(volumeNode, scribbleNode) if method != "munet" else None
        if scribbles is None and scribbleNode is not None:  # for ranking the sections only
            with contextlib.suppress(Exception):
                scribbles = self.scribbleArray(volumeNode, scribbleNode)
        self.ensureDependencies()
        self._refuseIfBusy()
        device = device or self.device()
        modelPath = os.path.abspath(modelPath)

        def importResult(job: ScribbleSegJob) -> None:
            import numpy as np

            loop = lib("loop")
            outputs = job.result["outputs"]
            probability = (self._readArray(outputs["probability"], volumeNode).astype(np.float32)
                           if outputs.get("probability") else None)
            job.suggestions = list(job.result.get("metrics", {}).get("suggestions", []))
            if probability is not None:
                job.heatMapNode = self.updateHeatMap(probability, volumeNode, modelPath,
                                                     "network" if method == "munet" else "run")
                if method == "munet" and scribbles is not None:
                    # The worker ranked them without the strokes (a munet run is sent none): the same rule
                    # (suggest.network_suggestions), with them.
                    job.suggestions = loop.heat_map_suggestions(probability, scribbles, LOOP_SUGGESTIONS)
            if purpose == "heatmap":
                return
            labels = (self._readArray(outputs["labels"], volumeNode) > 0).astype(np.uint8)
            job.outputNode = self.importLabelsArray(labels, volumeNode, outputNode, show3D)
            if createProbability and probability is not None:
                job.probabilityNode = self.importProbabilityArray(probability, volumeNode, probabilityNode)
            job.changeText, changed = self.recordRun(volumeNode, labels)
            job.changesNode = self.updateChanges(volumeNode, changed)

        if self.useWarmWorker:
            job = self._startSessionRun(volumeNode, modelPath, device, orientations,
                                        scribbles if method != "munet" else None, {
                "method": method, "cut": dict(cut or {}), "ddml": dict(ddml or {}), "seed": int(seed),
                "suggest": LOOP_SUGGESTIONS}, importResult, onEvent, onFinished, purpose)
            if job is not None:
                return job

        folder = self._jobFolder()
        try:
            request = {
                "image": self._writeVolume(volumeNode, os.path.join(folder, "image.nrrd")),
                "model": modelPath, "method": method,
                "cut": dict(cut or {}), "ddml": dict(ddml or {}), "device": device,
                "seed": int(seed), "cache_dir": self.featureCacheFolder(), "orientations": int(orientations),
                "suggest": LOOP_SUGGESTIONS, "outputs": {"labels": "labels.nrrd", "probability": "probability.nrrd"},
                "scan_pixel": self.statedScanPixel(volumeNode),
            }
            if scribbles is not None and method != "munet":
                request["scribbles"] = self._writeLabelmap(scribbles, volumeNode,
                                                           os.path.join(folder, "scribbles.nrrd"))
            if volumeNode.GetID() in self.undoneVolumes:  # as the warm worker's run would (_startSessionRun)
                request["forget"] = True
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = self._startJob("segment", folder, request, onEvent, onFinished, importResult, purpose=purpose)
        self.undoneVolumes.discard(volumeNode.GetID())
        return job

    def startHeatMap(self, volumeNode, scribbleNode, modelPath: str, *, device: Optional[str] = None,
                     orientations: Optional[int] = None, onEvent=None, onFinished=None) -> ScribbleSegJob:
        """Compute the network's heart probability of ``volumeNode`` into its heat map; no scribbles needed.

        The warm worker computes the M-Unet once per volume and model (or reads
        it from the feature cache) and keeps it for the runs that follow.  The
        job's ``heatMapNode`` and ``suggestions`` (ranked from the probability,
        and the scribbles if ``scribbleNode`` has some) are set when it is done.
        """
        return self.startSegmentation(volumeNode, scribbleNode, modelPath, method="munet", device=device,
                                      orientations=orientations, onEvent=onEvent, onFinished=onFinished,
                                      purpose="heatmap")

    # The warm worker

    @staticmethod
    def statedScanPixel(volumeNode) -> Optional[List[float]]:
        """The scan's pixel size ``[x, y]`` in mm that the file ``volumeNode`` was loaded from states where Slicer
        reads none (on 1 mm pixels): an ImageJ, OME or Aperio TIFF (``ScribbleSegLib.scan_pixel``); else None.

        The worker gets the volume as an NRRD without it; with it, the network runs at the scale that
        ``scribbleseg segment`` finds in the same file.
        """
        storage = volumeNode.GetStorageNode()
        fileName = storage.GetFileName() if storage is not None else None
        if not fileName or tuple(volumeNode.GetSpacing())[:2] != (1.0, 1.0) or not os.path.isfile(fileName):
            return None
        stated = lib("scan_pixel").stated_pixel(pathlib.Path(fileName))
        return None if stated is None else [stated.x, stated.y]

    def sessionKey(self, volumeNode, modelPath: str, device: str, orientations: int) -> Tuple:
        """What a warm worker is opened on: a change of any of these needs another worker.

        The image data's modification time and the volume's spacing are in it, so a volume whose voxels
        were replaced or whose spacing was edited gets a new worker; so are the test-time flips, which the
        worker's features were computed with, and the model file's size and
        modification time: a model written over the one in use (Train with the
        same output file, or a copy) must not leave the worker on the old weights.
        """
        path = os.path.abspath(modelPath)
        try:
            stat = os.stat(path)
            written = (stat.st_size, stat.st_mtime_ns)
        except OSError:  # gone: the worker that would open it reports that
            written = None
        return (volumeNode.GetID(), volumeNode.GetImageData().GetMTime(), tuple(volumeNode.GetSpacing()), path,
                written, device, self.featureCacheFolder(), orientations)

    def _openSession(self, volumeNode, modelPath: str, device: str,
                     orientations: int) -> Tuple[ScribbleSegSession, str]:
        """The warm worker for this volume, model and device (a new one if needed), and a notice for the log.

        The notice is not empty when the previous worker of the same key had
        stopped (crashed, killed): it names that worker's last output lines.
        """
        key = self.sessionKey(volumeNode, modelPath, device, orientations)
        notice = ""
        if self.session is not None and not self.session.alive():
            if self.session.key == key and self.session.process.ready is not None:
                notice = _("The warm worker process had stopped; starting a new one. {message}").format(
                    message=self.session.process.failure_message())
            self.closeSession()
        if self.session is not None and self.session.key != key:
            self.closeSession()
        if self.session is None:
            worker = lib("worker")
            folder = newTemporaryFolder("ScribbleSegSession")
            try:
                image = self._writeVolume(volumeNode, os.path.join(folder, "image.nrrd"))
                request = worker.write_request(os.path.join(folder, "session.json"), {
                    "task": "session", "image": image, "model": modelPath, "device": device,
                    "cache_dir": self.featureCacheFolder(), "orientations": int(orientations),
                    "scan_pixel": self.statedScanPixel(volumeNode)})
                process = worker.SessionProcess(request, python=pythonExecutable(), pythonpath=[libraryFolder()])
            except Exception:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self.session = ScribbleSegSession(key, folder, process)
        return self.session, notice

    def _startSessionRun(self, volumeNode, modelPath: str, device: str, orientations: int, scribbles,
                         settings: Dict, finisher, onEvent, onFinished,
                         purpose: str) -> Optional[ScribbleSegSessionJob]:
        """Send one run to the warm worker; None if the worker cannot be started (then the one-shot one runs)."""
        import tempfile

        session, notice = self._openSession(volumeNode, modelPath, device, orientations)
        runDir = tempfile.mkdtemp(prefix="run", dir=session.folder)
        try:
            run = {**settings, "outputs": {"labels": os.path.join(runDir, "labels.nrrd"),
                                           "probability": os.path.join(runDir, "probability.nrrd")}}
            if scribbles is not None:
                run["scribbles"] = self._writeLabelmap(scribbles, volumeNode, os.path.join(runDir, "scribbles.nrrd"))
            if volumeNode.GetID() in self.undoneVolumes:
                run["forget"] = True
            job = ScribbleSegSessionJob(session, run, runDir, onEvent, onFinished, purpose, notice)
            job.addFinisher(finisher)
            job.start()
        except OSError as exc:  # e.g. no Python executable: the one-shot worker reports it
            logging.warning(f"ScribbleSeg: the warm worker could not start ({exc}); running a one-shot worker")
            shutil.rmtree(runDir, ignore_errors=True)
            self.closeSession()
            return None
        except Exception:
            shutil.rmtree(runDir, ignore_errors=True)
            raise
        self.undoneVolumes.discard(volumeNode.GetID())
        self.job = job
        return job

    def segment(self, volumeNode, scribbleNode, modelPath: str, **options):
        """Segment and wait; return the result segmentation node.

        Takes the options of :meth:`startSegmentation`.  The application stays
        responsive while the worker runs.

        Raises
        ------
        ScribbleSegError
            On bad input or a failed run (``CancelledError`` if cancelled).
        """
        job = self.startSegmentation(volumeNode, scribbleNode, modelPath, **options).wait()
        self._raiseIfFailed(job)
        return job.outputNode

    @staticmethod
    def featureCacheFolder() -> str:
        """Where M-Unet features are cached: the per-user folder the command line uses too
        (``ScribbleSegLib.choices.default_cache_dir``, ``~/.cache/scribbleseg/features``).

        Not in Slicer's cache folder: from Slicer 5.12 on, Slicer prunes that folder at every start to its
        own limit (1 GB by default) and would delete the features, with their size cap, whole. One folder
        also means one cap, and features the command line computed are reused here.
        """
        return str(lib("choices").default_cache_dir())

    def featureCacheMaxGB(self) -> float:
        """Largest size of the feature cache in GB.

        The cap is the cache folder's own (``settings.json``, as ``scribbleseg cache --max-gb`` stores it), which
        the worker reads when it stores features: one cap for the panel, the worker and the command line.
        """
        return lib("feature_cache").FeatureCache(self.featureCacheFolder()).max_bytes / 2**30

    def setFeatureCacheMaxGB(self, gigabytes: float) -> None:
        """Store the cache's size cap in its folder, for the worker and every later session."""
        if not gigabytes > 0:
            raise ValueError(f"the cache size must be positive, got {gigabytes!r}")
        lib("feature_cache").FeatureCache(self.featureCacheFolder()).set_cap_gb(float(gigabytes))

    def pruneFeatureCache(self) -> List[str]:
        """Delete the least recently used cache entries beyond the size cap; return the deleted keys."""
        if self.busy:  # the worker may be writing an entry
            return []
        return lib("feature_cache").FeatureCache(self.featureCacheFolder()).evict()

    def featureCacheSize(self) -> int:
        """Bytes used by the feature cache."""
        total = 0
        for root, _dirs, files in os.walk(self.featureCacheFolder()):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, name))
        return total

    def clearFeatureCache(self) -> None:
        """Delete every cached feature volume; refused while a job runs (it may be writing there)."""
        if self.busy:
            raise userError(_("Wait for the {kind} job to finish before clearing the cache.").format(
                kind=self.job.kind))
        self.closeSession()  # its features may be mapped from the cache
        # The entries only: the folder's stored size cap and any file that is not the cache's stay.
        lib("feature_cache").FeatureCache(self.featureCacheFolder()).clear()

    @staticmethod
    def _writeVolume(volumeNode, path: str) -> str:
        """Write a volume node's voxels and geometry (without its parent transform) as NRRD."""
        # A storage node of our own: saving through the node's storage node would repoint it at a temporary file.
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(path)
        storage.UseCompressionOff()
        if not storage.WriteData(volumeNode):
            raise userError(f"{path}: could not write the volume '{volumeNode.GetName()}' for the worker")
        return path

    def _writeLabelmap(self, array, volumeNode, path: str) -> str:
        """Write a ``(Z, Y, X)`` array on the volume's grid as a labelmap NRRD."""
        labelmap = slicer.vtkMRMLLabelMapVolumeNode()  # outside the scene: nothing to clean up
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        labelmap.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(labelmap, array)
        return self._writeVolume(labelmap, path)

    @staticmethod
    def _readArray(path: str, volumeNode):
        """Voxels of a NRRD the worker wrote on the volume's grid."""
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(sitk.ReadImage(path))
        expected = tuple(reversed(volumeNode.GetImageData().GetDimensions()))
        if array.shape != expected:
            raise userError(f"{path}: size {array.shape} does not match the volume's {expected}")
        return array

    def importLabels(self, path: str, volumeNode, outputNode=None, show3D: bool = True):
        """Put the worker's labelmap into the ``heart`` segment of ``outputNode`` (created if None)."""
        import numpy as np

        return self.importLabelsArray((self._readArray(path, volumeNode) > 0).astype(np.uint8), volumeNode,
                                      outputNode, show3D)

    def importLabelsArray(self, labels, volumeNode, outputNode=None, show3D: bool = True):
        """Put ``(Z, Y, X)`` 0/1 labels on the volume's grid into the ``heart`` segment of ``outputNode``.

        A new segmentation named after the volume if ``outputNode`` is None;
        otherwise the segment is replaced in place (its closed surface follows).
        """
        if outputNode is None:
            outputNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} heart"))
            outputNode.CreateDefaultDisplayNodes()
            self._placeBeside(outputNode, volumeNode)
        outputNode.SetAttribute(OUTPUT_VOLUME_ATTRIBUTE, volumeNode.GetID())
        outputNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        outputNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = self.segmentId(outputNode, HEART)
        if not segmentId:
            segmentId = outputNode.GetSegmentation().AddEmptySegment(HEART, HEART, HEART_COLOR)
        self._importLabelValues(labels, volumeNode, outputNode, [segmentId])
        self.showSurface(outputNode, show3D)
        return outputNode

    @staticmethod
    def _importLabelValues(values, volumeNode, node, segmentIds: Sequence[str]) -> None:
        """Replace segments ``segmentIds`` of ``node`` with ``(Z, Y, X)`` label values on the volume's grid
        (value i + 1 -> ``segmentIds[i]``), in one call.

        Not ``slicer.util.updateSegmentBinaryLabelmapFromArray``: with an RGB volume as reference it makes a
        label volume from a deep copy of the RGB image (and a 3-component short image of it), once per segment.
        """
        from vtk.util.numpy_support import vtk_to_numpy

        image = slicer.vtkOrientedImageData()
        image.SetDimensions(*volumeNode.GetImageData().GetDimensions())
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        vtk_to_numpy(image.GetPointData().GetScalars())[:] = values.ravel()
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        image.SetImageToWorldMatrix(matrix)
        ids = vtk.vtkStringArray()
        for segmentId in segmentIds:
            ids.InsertNextValue(segmentId)
        # The image is in the segmentation's coordinates (both under the volume's transform): no transform.
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(image, node, ids):
            raise userError(f"importing the result into '{node.GetName()}' failed")

    def importProbability(self, path: str, volumeNode, probabilityNode=None):
        """Put the worker's probability map into a scalar volume (created if None)."""
        import numpy as np

        return self.importProbabilityArray(self._readArray(path, volumeNode).astype(np.float32), volumeNode,
                                           probabilityNode)

    def importProbabilityArray(self, probability, volumeNode, probabilityNode=None,
                               name: Optional[str] = None):
        """Put a ``(Z, Y, X)`` probability on the volume's grid into a scalar volume (created if None)."""
        if probabilityNode is None:
            probabilityNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode",
                slicer.mrmlScene.GenerateUniqueName(name or f"{volumeNode.GetName()} heart probability"))
            self._placeBeside(probabilityNode, volumeNode)
        probabilityNode.SetAttribute(OUTPUT_VOLUME_ATTRIBUTE, volumeNode.GetID())
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        probabilityNode.SetIJKToRASMatrix(matrix)
        probabilityNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(probabilityNode, probability)
        probabilityNode.CreateDefaultDisplayNodes()
        display = probabilityNode.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
        return probabilityNode

    # The interactive loop: heat map, where to look, undo, what changed

    @staticmethod
    def _referencedNode(volumeNode, attribute: str):
        """The node whose ID ``volumeNode`` keeps in ``attribute``, if it is still in the scene."""
        nodeId = volumeNode.GetAttribute(attribute) if volumeNode is not None else None
        return slicer.mrmlScene.GetNodeByID(nodeId) if nodeId else None

    def heatMapNode(self, volumeNode, modelPath: Optional[str] = None):
        """The heat map of ``volumeNode`` (of the model ``modelPath``, if given), or None."""
        node = self._referencedNode(volumeNode, HEAT_MAP_ATTRIBUTE)
        if node is not None and modelPath is not None:
            if node.GetAttribute(HEAT_MAP_MODEL_ATTRIBUTE) != os.path.abspath(self.resolvedModelPath(modelPath)):
                return None
        return node

    def updateHeatMap(self, probability, volumeNode, modelPath: str, source: str):
        """Put a probability (the network's, or ``h`` of a run) into the volume's heat map, in a heat colour map.

        One heat map node per volume, updated in place, so the slice views that
        show it follow.  Probabilities below ``HEAT_MAP_LOWER`` are transparent.
        """
        node = self.importProbabilityArray(probability, volumeNode, self.heatMapNode(volumeNode),
                                           name=f"{volumeNode.GetName()} heat map")
        volumeNode.SetAttribute(HEAT_MAP_ATTRIBUTE, node.GetID())
        node.SetAttribute(HEAT_MAP_MODEL_ATTRIBUTE, os.path.abspath(modelPath))
        node.SetAttribute(HEAT_MAP_SOURCE_ATTRIBUTE, source)
        display = node.GetDisplayNode()
        if slicer.mrmlScene.GetNodeByID(HEAT_MAP_COLOR_NODE_ID) is not None:
            display.SetAndObserveColorNodeID(HEAT_MAP_COLOR_NODE_ID)
        display.SetAutoThreshold(0)
        display.SetLowerThreshold(HEAT_MAP_LOWER)
        display.SetUpperThreshold(1.0)
        display.SetApplyThreshold(1)
        return node

    @staticmethod
    def showHeatMap(heatMapNode, show: bool = True, opacity: float = HEAT_MAP_OPACITY) -> None:
        """Show ``heatMapNode`` over the slice views as their foreground layer, or hide it."""
        if show:
            slicer.util.setSliceViewerLayers(foreground=heatMapNode, foregroundOpacity=opacity)
        else:
            slicer.util.setSliceViewerLayers(foreground=None)

    @staticmethod
    def setHeatMapOpacity(opacity: float) -> None:
        slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)

    def heatMapSuggestions(self, volumeNode, scribbleNode=None) -> List[Dict]:
        """The sections to look at, ranked from the volume's heat map (and the scribbles, if any)."""
        node = self.heatMapNode(volumeNode)
        if node is None:
            return []
        scribbles = None
        if scribbleNode is not None:
            with contextlib.suppress(Exception):
                scribbles = self.scribbleArray(volumeNode, scribbleNode)
        return lib("loop").heat_map_suggestions(slicer.util.arrayFromVolume(node), scribbles, LOOP_SUGGESTIONS)

    def _history(self, volumeNode):
        history = self.histories.get(volumeNode.GetID())
        if history is None:
            history = self.histories[volumeNode.GetID()] = lib("loop").RunHistory(UNDO_DEPTH)
        return history

    def recordRun(self, volumeNode, labels) -> Tuple[str, object]:
        """Remember a run's labels for undo; return the status text and what changed (``loop.changed_labels``).

        Nothing counts as changed on the first run of a volume.
        """
        history = self._history(volumeNode)
        if history.current is not None and history.current.shape != labels.shape:
            history.clear()
        history.push(labels)
        return self._describeHistory(volumeNode, history)

    def _describeHistory(self, volumeNode, history) -> Tuple[str, object]:
        import numpy as np

        loop = lib("loop")
        spacing = volumeNode.GetSpacing()
        now = loop.heart_volume_mm3(history.current, spacing)
        if history.previous is None:
            return loop.describe_change(now), np.zeros(history.current.shape, np.uint8)
        changed = loop.changed_labels(history.previous, history.current)
        return (loop.describe_change(now, loop.heart_volume_mm3(history.previous, spacing),
                                     int(np.count_nonzero(changed))), changed)

    def canUndo(self, volumeNode) -> bool:
        """Whether "Undo last run" has an earlier run of ``volumeNode`` to go back to."""
        history = self.histories.get(volumeNode.GetID()) if volumeNode is not None else None
        return history is not None and history.can_undo

    def undoLastRun(self, volumeNode, outputNode, show3D: bool = True) -> str:
        """Put the labels of the run before the last back into ``outputNode``; return the status text.

        Raises
        ------
        ScribbleSegError
            If there is no earlier run of this volume.
        """
        if volumeNode is None or outputNode is None or not self.canUndo(volumeNode):
            raise userError(_("There is no earlier run of this volume to go back to."))
        history = self._history(volumeNode)
        self.importLabelsArray(history.undo(), volumeNode, outputNode, show3D)
        # The warm worker's next run would start from the undone run's DDML network and cut.
        self.undoneVolumes.add(volumeNode.GetID())
        text, changed = self._describeHistory(volumeNode, history)
        self.updateChanges(volumeNode, changed)
        return text

    def changesNode(self, volumeNode):
        """The segmentation that shows what the last run on ``volumeNode`` changed, or None."""
        return self._referencedNode(volumeNode, CHANGES_ATTRIBUTE)

    def updateChanges(self, volumeNode, changed):
        """Show what a run changed: segments ``added`` and ``removed`` of the volume's changes segmentation.

        ``changed`` is :func:`ScribbleSegLib.loop.changed_labels`.  The node is
        made once per volume and updated in place; it is not shown in 3D.
        """
        import numpy as np

        loop = lib("loop")
        node = self.changesNode(volumeNode)
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} changes"))
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetVisibility3D(False)
            node.SetAttribute(OUTPUT_VOLUME_ATTRIBUTE, volumeNode.GetID())
            node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
            node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            self._placeBeside(node, volumeNode)
            volumeNode.SetAttribute(CHANGES_ATTRIBUTE, node.GetID())
        segmentIds = []
        for name, color in (("added", ADDED_COLOR), ("removed", REMOVED_COLOR)):
            segmentId = self.segmentId(node, name)
            if not segmentId:
                segmentId = node.GetSegmentation().AddEmptySegment(name, name, color)
            segmentIds.append(segmentId)
        values = np.zeros(changed.shape, np.uint8)  # label i + 1 goes to segmentIds[i]
        values[changed == loop.ADDED] = 1
        values[changed == loop.REMOVED] = 2
        self._importLabelValues(values, volumeNode, node, segmentIds)
        return node

    def showChanges(self, volumeNode, show: bool = True) -> None:
        """Show or hide the changes segmentation of ``volumeNode`` (if it has one)."""
        node = self.changesNode(volumeNode)
        if node is not None and node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetVisibility(bool(show))

    @staticmethod
    def sectionCenter(volumeNode, section: int) -> Tuple[float, float, float]:
        """World RAS of the centre of section ``section`` (K index) of ``volumeNode``, its transform applied."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        ijkToRAS = [[matrix.GetElement(row, column) for column in range(4)] for row in range(4)]
        shape = tuple(reversed(volumeNode.GetImageData().GetDimensions()))
        ras = lib("loop").section_center_ras(ijkToRAS, shape, section)
        parent = volumeNode.GetParentTransformNode()
        if parent is not None:
            toWorld = vtk.vtkGeneralTransform()
            slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(parent, None, toWorld)
            ras = tuple(toWorld.TransformPoint(ras))
        return ras

    def jumpToSection(self, volumeNode, section: int, viewName: str = "Red") -> Tuple[float, float, float]:
        """Centre the ``viewName`` slice view on section ``section`` of ``volumeNode``; return the point."""
        ras = self.sectionCenter(volumeNode, section)
        layoutManager = slicer.app.layoutManager()
        sliceWidget = layoutManager.sliceWidget(viewName) if layoutManager is not None else None
        if sliceWidget is not None:
            # Turn the view to the sections' plane first: on an oblique stack an axial view would cut across
            # several sections. RotateToVolumePlane would pick the volume axis nearest the view's normal, which
            # need not be K; RotateToAxes (as it does, with the normal fixed to K) always shows one section.
            ijkToWorld = vtk.vtkMatrix4x4()
            volumeNode.GetIJKToRASMatrix(ijkToWorld)
            parent = volumeNode.GetParentTransformNode()
            if parent is not None and parent.IsTransformToWorldLinear():
                toWorld = vtk.vtkMatrix4x4()
                parent.GetMatrixTransformToWorld(toWorld)
                vtk.vtkMatrix4x4.Multiply4x4(toWorld, ijkToWorld, ijkToWorld)
            sliceNode = sliceWidget.mrmlSliceNode()
            sliceNode.RotateToAxes(ijkToWorld, 2)
            sliceNode.JumpSliceByCentering(*ras)
        return ras

    @staticmethod
    def resultOf(node, volumeNode):
        """``node`` if it may receive results for ``volumeNode`` (it has none of another volume), else None."""
        if node is None or volumeNode is None:
            return None
        owner = node.GetAttribute(OUTPUT_VOLUME_ATTRIBUTE)
        return node if owner in (None, volumeNode.GetID()) else None

    @staticmethod
    def _placeBeside(node, volumeNode) -> None:
        """Put ``node`` in the same subject hierarchy folder (study) as the volume."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        parent = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode))
        shNode.SetItemParent(shNode.GetItemByDataNode(node), parent)

    @staticmethod
    def showSurface(segmentationNode, show: bool = True) -> None:
        """Show or hide the closed surface of a result in the 3D views."""
        if show:
            segmentationNode.CreateClosedSurfaceRepresentation()
        else:
            segmentationNode.RemoveClosedSurfaceRepresentation()

    def describeResult(self, job: ScribbleSegJob) -> str:
        """One line about a finished segmentation: heart volume, time, cache use, sections to look at next."""
        metrics = job.result.get("metrics", {})
        cached = _("features reused") if metrics.get("features_cached") else _("features computed")
        text = _("heart {volume:.4g} mm³ ({voxels} voxels); {seconds:.0f} s, {cached}").format(
            volume=metrics.get("heart_volume_mm3", 0.0), voxels=metrics.get("heart_voxels", 0),
            seconds=job.elapsed, cached=cached)
        # The worker ranks the sections where another stroke would most likely help (ScribbleSegLib.suggest).
        sections = [str(s["section"]) for s in metrics.get("suggestions", []) if "section" in s]
        if sections:
            text += _("; look next at sections {sections}").format(sections=", ".join(sections))
        return text

    def exportSurface(self, segmentationNode, path: str) -> str:
        """Write the ``heart`` segment's closed surface to ``path`` (.stl, .obj or .vtp) in LPS mm.

        LPS is what Slicer's own model export writes; the node's parent transform is applied.  The file is
        written as ``scribbleseg segment --surface`` writes it (``ScribbleSegLib.surface.write_surface``: its
        formats, binary STL, the ``SPACE=LPS`` tag Slicer reads back, all or nothing).
        """
        surfaces = lib("surface")
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in surfaces.SURFACE_FORMATS:
            raise userError(f"{path}: choose a {', '.join(surfaces.SURFACE_FORMATS)} file name")
        segmentId = self.segmentId(segmentationNode, HEART)
        if not segmentId:
            raise userError(f"'{segmentationNode.GetName()}' has no '{HEART}' segment")
        segmentationNode.CreateClosedSurfaceRepresentation()
        surface = vtk.vtkPolyData()
        segmentationNode.GetClosedSurfaceRepresentation(segmentId, surface)
        if surface.GetNumberOfPoints() == 0:
            raise userError(f"the '{HEART}' segment of '{segmentationNode.GetName()}' is empty")
        toWorld = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(segmentationNode.GetParentTransformNode(), None, toWorld)
        toWorld.PostMultiply()
        toWorld.Scale(-1.0, -1.0, 1.0)  # RAS -> LPS
        transformed = vtk.vtkTransformPolyDataFilter()
        transformed.SetTransform(toWorld)
        transformed.SetInputData(surface)
        transformed.Update()
        surfaces.write_surface(path, transformed.GetOutput())
        return path

    # Training

    def startTraining(self, segmentationNodes: Sequence, outputPath: str, *, architecture: Optional[str] = None,
                      size: Optional[str] = None, maxMinutes: Optional[float] = None, device: Optional[str] = None,
                      seed: int = 0, onEvent=None, onFinished=None) -> ScribbleSegJob:
        """Start training a model on labelled volumes; return the job at once.

        Each segmentation node must have a segment named ``heart`` and a
        reference geometry volume (the image it was drawn on).  ``architecture`` and
        ``size`` (a preset) default to the library's (``choices.DEFAULT_ARCHITECTURE``,
        ``choices.DEFAULT_PRESET``), which the worker fills in.  ``maxMinutes``
        caps the training time; ``None`` or 0 leaves the size's own budget
        (``choices.PRESETS``), which the worker fills in too.
        """
        if not segmentationNodes:
            raise userError(_("Check at least one labelled volume (a segmentation with a 'heart' segment, or one "
                                "segment)."))
        if not outputPath:
            raise userError(_("Choose where to save the new model."))
        pairs = []
        for node in segmentationNodes:
            volume = node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
            if volume is None or not volume.IsA("vtkMRMLScalarVolumeNode"):
                raise userError(f"'{node.GetName()}' has no reference volume: create it from its image in the "
                                "Segment Editor (or set its geometry from the image)")
            segmentId = self.labelSegmentId(node)
            if not segmentId:
                raise userError(f"'{node.GetName()}' has no segment named '{HEART}': name the target's segment so, "
                                "or keep it as the segmentation's only segment")
            pairs.append((volume, node, segmentId))
        self.ensureDependencies()

        folder = self._jobFolder()
        try:
            images, labels = [], []
            for index, (volume, node, segmentId) in enumerate(pairs):
                images.append(self._writeVolume(volume, os.path.join(folder, f"image{index}.nrrd")))
                mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentId, volume)
                labels.append(self._writeLabelmap(mask, volume, os.path.join(folder, f"label{index}.nrrd")))
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        request = {"images": images, "labels": labels, "output": os.path.abspath(outputPath),
                   "arch": architecture, "preset": size,
                   "max_minutes": float(maxMinutes) if maxMinutes else None,
                   "device": device or self.device(), "seed": int(seed)}
        return self._startJob("train", folder, request, onEvent, onFinished,
                              lambda job: self.setModelPath(job.result["outputs"]["model"]))

    def train(self, segmentationNodes: Sequence, outputPath: str, **options) -> str:
        """Train and wait; return the model path (which becomes the model in use)."""
        job = self.startTraining(segmentationNodes, outputPath, **options).wait()
        self._raiseIfFailed(job)
        return job.result["outputs"]["model"]

    # Learning from corrections

    def startFineTuning(self, volumeNode, segmentationNode, parentModelPath: str, outputPath: str, *,
                        maxIters: int = FINETUNE_STEPS, maxMinutes: float = FINETUNE_MINUTES,
                        device: Optional[str] = None, seed: int = 0, onEvent=None,
                        onFinished=None) -> ScribbleSegJob:
        """Fine-tune a model on one volume and its accepted segmentation, in the background.

        The segmentation's ``heart`` segment, as it is now (the result, with any
        corrections made in the Segment Editor), is the truth.  The worker runs
        ``train`` with ``init`` = the parent model (``scribbleseg train --init``);
        the new file records its parent and this volume in its provenance and
        becomes the model in use when the job succeeds.

        Parameters
        ----------
        parentModelPath : str
            The model to start from; empty for the starter model.
        outputPath : str
            The new model file (never the parent: a failed run must not lose it).
        maxIters, maxMinutes
            Step and time budgets of the fine-tuning.
        """
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise userError(_("Select an input volume (Input section)."))
        if segmentationNode is None:
            raise userError(_("There is no result for this volume yet: segment it first."))
        parent = self.resolvedModelPath(parentModelPath)
        if not os.path.isfile(parent):
            raise userError(_("{path}: no such model file").format(path=parent))
        if not outputPath:
            raise userError(_("Choose where to save the new model."))
        if os.path.abspath(outputPath) == os.path.abspath(parent):
            raise userError(f"{outputPath}: save the fine-tuned model under a new name; the model it starts from "
                            "is kept")
        segmentId = self.segmentId(segmentationNode, HEART)
        if not segmentId:
            raise userError(f"'{segmentationNode.GetName()}' has no segment named '{HEART}'")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        if not mask.any() or mask.all():
            raise userError(f"'{segmentationNode.GetName()}': the '{HEART}' segment must mark some voxels of "
                            f"'{volumeNode.GetName()}' as heart and some as background")
        self.ensureDependencies()

        folder = self._jobFolder()
        try:
            request = {"images": [self._writeVolume(volumeNode, os.path.join(folder, "image0.nrrd"))],
                       "labels": [self._writeLabelmap(mask, volumeNode, os.path.join(folder, "label0.nrrd"))],
                       "output": os.path.abspath(outputPath), "init": parent, "max_iters": int(maxIters),
                       "max_minutes": float(maxMinutes), "names": [volumeNode.GetName()],
                       "device": device or self.device(), "seed": int(seed)}
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self._startJob("train", folder, request, onEvent, onFinished,
                              lambda job: self.setModelPath(job.result["outputs"]["model"]), purpose="finetune")

    def fineTune(self, volumeNode, segmentationNode, parentModelPath: str, outputPath: str, **options) -> str:
        """Fine-tune and wait (see :meth:`startFineTuning`); return the new model's path, now the model in use."""
        job = self.startFineTuning(volumeNode, segmentationNode, parentModelPath, outputPath, **options).wait()
        self._raiseIfFailed(job)
        return job.result["outputs"]["model"]


#
# ScribbleSegTest
#


class ScribbleSegTest(ScriptedLoadableModuleTest):
    """Self-test: a phantom, scribbles painted from its truth, the starter model, and the IoU of the result.

    Needs torch and the packages of requirements.txt; without them every test
    is skipped (extension build machines have none of them), not failed.  It
    segments with the starter model, or with the model file named by
    ``SCRIBBLESEG_TEST_MODEL``, and fine-tunes for a few steps; on a 2-core
    CPU it takes well under a minute (BENCHMARKS.md).
    """

    def _missingDependencies(self) -> List[str]:
        logic = ScribbleSegLogic()
        missing = logic.missingDependencies(torch=True)
        problem = logic.torchProblem()
        return missing + ([problem] if problem else [])

    def setUp(self):
        # unittest (ctest, runUnitTest) calls setUp before each test_* method: skip, do not fail, without deps.
        missing = self._missingDependencies()
        if missing:
            self.skipTest(f"ScribbleSeg's Python packages are not installed: {'; '.join(missing)}")
        slicer.mrmlScene.Clear()

    def runTest(self):
        # "Reload and Test" calls this directly, outside unittest: report the skip instead of raising it.
        missing = self._missingDependencies()
        if missing:
            self.delayDisplay(f"Skipped: ScribbleSeg's Python packages are not installed: {'; '.join(missing)}")
            return
        self.setUp()
        self.test_bad_inputs_leave_the_scene_unchanged()
        self.setUp()
        self.test_scribbles_are_resampled_onto_the_volume()
        if not self._testModel():  # skipTest here would reach Slicer's error popup ("Reload and Test failed")
            self.delayDisplay(f"Skipped: segmenting a phantom: {NO_TEST_MODEL}")
            return
        self.setUp()
        self.test_segment_phantom_and_add_it_to_the_model()

    @staticmethod
    def _testModel() -> Optional[str]:
        """The model the self-test segments with: ``SCRIBBLESEG_TEST_MODEL``, else the starter model, else None."""
        return os.environ.get("SCRIBBLESEG_TEST_MODEL") or ScribbleSegLogic().starterModelPath()

    @staticmethod
    def _paintScribbles(truth, every: int = 4):
        """Heart strokes well inside the true heart, background strokes in a ring around it, every few sections."""
        import numpy as np

        grow = lib("metrics").grow_mask  # numpy only: fine in Slicer's process
        heart = np.zeros(truth.shape, bool)
        background = np.zeros(truth.shape, bool)
        for k in range(0, truth.shape[0], every):
            section = truth[k] > 0
            if section.sum() < 20:
                continue
            heart[k] = ~grow(~section, 3) & section
            background[k] = grow(section, 8) & ~grow(section, 4)
        return heart, background

    def test_segment_phantom_and_add_it_to_the_model(self):
        import numpy as np

        logic = ScribbleSegLogic()
        model = self._testModel()
        if not model:
            self.skipTest(NO_TEST_MODEL)
        self.delayDisplay("Building a phantom in the scene")
        volume, truth, _unused = logic.createPhantom(seed=1, shape=SELF_TEST_SHAPE)
        truthArray = slicer.util.arrayFromSegmentBinaryLabelmap(truth, logic.segmentId(truth, HEART), volume) > 0
        scribbleNode = logic.createScribbleSegmentation(volume)
        heartId, backgroundId = logic.ensureScribbleSegments(scribbleNode)
        heart, background = self._paintScribbles(truthArray)
        slicer.util.updateSegmentBinaryLabelmapFromArray(heart.astype(np.uint8), scribbleNode, heartId, volume)
        slicer.util.updateSegmentBinaryLabelmapFromArray(background.astype(np.uint8), scribbleNode, backgroundId,
                                                         volume)
        scribblesBefore = logic.scribbleArray(volume, scribbleNode)

        self.delayDisplay("A model file that does not load: a clear message, the scene unchanged")
        corrupt = os.path.join(slicer.app.temporaryPath, "ScribbleSegTest-corrupt.model")
        with open(corrupt, "w") as f:
            f.write("not a model")
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaisesRegex(lib("errors").ScribbleSegError, "ScribbleSegTest-corrupt.model"):
            logic.segment(volume, scribbleNode, corrupt, device="cpu")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)

        self.delayDisplay(f"Segmenting with {os.path.basename(model)}")
        result = logic.segment(volume, scribbleNode, model, method="full", device="cpu")
        self.assertEqual(result.GetName(), f"{volume.GetName()} heart")
        predicted = slicer.util.arrayFromSegmentBinaryLabelmap(result, logic.segmentId(result, HEART), volume) > 0
        iou = (predicted & truthArray).sum() / max(1, (predicted | truthArray).sum())
        self.delayDisplay(f"IoU {iou:.3f}")
        self.assertGreater(iou, 0.5)
        np.testing.assert_array_equal(logic.scribbleArray(volume, scribbleNode), scribblesBefore)

        self.delayDisplay("Second run reuses the cached features")
        job = logic.startSegmentation(volume, scribbleNode, model, device="cpu", outputNode=result).wait()
        self.assertTrue(job.succeeded, job.errorMessage)
        self.assertTrue(job.result["metrics"]["features_cached"])

        self.delayDisplay("Add this volume to the model (a few fine-tuning steps)")
        tuned = os.path.join(slicer.app.temporaryPath, "ScribbleSegTest-tuned.model")
        previous = logic.modelPath()
        try:
            path = logic.fineTune(volume, result, model, tuned, maxIters=3, device="cpu")
            self.assertEqual(logic.modelPath(), path)
        finally:
            logic.setModelPath(previous)
        self.assertTrue(os.path.isfile(tuned))
        self.delayDisplay("Test passed")

    def test_bad_inputs_leave_the_scene_unchanged(self):
        import numpy as np

        logic = ScribbleSegLogic()
        volume = ScribbleSegLogic.addRGBVolume(np.full((4, 32, 32, 3), 200, np.uint8), np.diag([0.1, 0.1, 0.5, 1]),
                                               "bad input")
        scribbles = logic.createScribbleSegmentation(volume)
        heartId, _backgroundId = logic.ensureScribbleSegments(scribbles)
        heart = np.zeros((4, 32, 32), np.uint8)
        heart[1, 10:20, 10:20] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(heart, scribbles, heartId, volume)
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        errors = lib("errors")
        with self.assertRaisesRegex(errors.ScribbleSegError, "no such model"):
            logic.startSegmentation(volume, scribbles, "/nonexistent/heart.model")
        with self.assertRaisesRegex(errors.ScribbleSegError, "background"):
            logic.scribbleArray(volume, scribbles)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.assertFalse(logic.busy)

    def test_scribbles_are_resampled_onto_the_volume(self):
        import numpy as np

        logic = ScribbleSegLogic()
        # Fine voxel centres fall between coarse ones (no rounding ties): two fine voxels per coarse one.
        fineIJKToRAS = np.array([[0.1, 0, 0, 0.05], [0, 0.1, 0, 0.05], [0, 0, 0.5, 0], [0, 0, 0, 1]])
        volume = ScribbleSegLogic.addRGBVolume(np.zeros((4, 38, 38, 3), np.uint8), fineIJKToRAS, "fine")
        coarse = slicer.util.addVolumeFromArray(np.zeros((4, 20, 20), np.uint8), np.diag([0.2, 0.2, 0.5, 1]),
                                                "coarse")
        scribbles = logic.createScribbleSegmentation(coarse)
        heartId, backgroundId = logic.ensureScribbleSegments(scribbles)
        mask = np.zeros((4, 20, 20), np.uint8)
        mask[2, 5:10, 5:10] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, scribbles, heartId, coarse)
        slicer.util.updateSegmentBinaryLabelmapFromArray(1 - mask, scribbles, backgroundId, coarse)
        array = logic.scribbleArray(volume, scribbles)
        self.assertEqual(array.shape, (4, 38, 38))
        self.assertEqual(int((array[2] == 1).sum()), 10 * 10)
        self.assertEqual(int((array == 1).sum()), 10 * 10)
        self.assertTrue((array == 2).any())
