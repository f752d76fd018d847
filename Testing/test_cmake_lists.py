"""The extension's CMake files: what Slicer's build installs, and what the Extensions Index checks.

A Python file missing from a ``SCRIPTS`` list is silently left out of the
installed extension, so every file of ScribbleSegLib must be listed.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def without_comments(path):
    """The text of a CMake file without its comments (a ``#`` inside quotes is kept)."""
    return "\n".join(re.sub(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*', "", line) for line in path.read_text().splitlines())


def commands(path):
    """``[(name, [arguments])]`` of a CMake file (quotes taken off, variables unexpanded)."""
    text = without_comments(path)
    found = []
    for match in re.finditer(r"(\w+)\s*\(((?:[^()\"]|\"[^\"]*\")*)\)", text):
        arguments = [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|[^\s"]+', match.group(2))]
        found.append((match.group(1).lower(), arguments))
    return found


def variables(path):
    return {args[0]: args[1:] for name, args in commands(path) if name == "set"}


def calls(path, name):
    return [args for command, args in commands(path) if command == name]


def expand(values, variables_):
    out = []
    for value in values:
        match = re.fullmatch(r"\$\{(\w+)\}", value)
        out.extend(variables_.get(match.group(1), []) if match else [value])
    return [re.sub(r"\$\{(\w+)\}", lambda m: variables_[m.group(1)][0], v) for v in out]


def keyword_values(arguments, keyword, keywords=("NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS",
                                                 "WITH_SUBDIR", "VERBOSE")):
    if keyword not in arguments:
        return []
    start = arguments.index(keyword) + 1
    end = next((i for i in range(start, len(arguments)) if arguments[i] in keywords), len(arguments))
    return arguments[start:end]


# ---------------------------------------------------------------------------
# ScribbleSegLib
# ---------------------------------------------------------------------------

LIB = ROOT / "ScribbleSegLib"


def test_every_library_file_is_listed_and_every_listed_file_exists():
    cmake = LIB / "CMakeLists.txt"
    listed = expand(keyword_values(calls(cmake, "slicermacrobuildscriptedmodule")[0], "SCRIPTS"), variables(cmake))
    listed = [name if name.endswith(".py") else f"{name}.py" for name in listed]
    present = sorted(p.relative_to(LIB).as_posix() for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)
    assert len(listed) == len(set(listed)), "a file is listed twice"
    missing = sorted(set(present) - set(listed))
    assert not missing, f"add to ScribbleSegLib/CMakeLists.txt: {missing}"
    assert not set(listed) - set(present), f"listed but missing: {sorted(set(listed) - set(present))}"
    assert "commands/__init__.py" in listed and "worker.py" in listed


def test_the_starter_model_is_installed_with_the_library():
    from ScribbleSegLib import starter

    cmake = LIB / "CMakeLists.txt"
    (arguments,) = calls(cmake, "slicermacrobuildscriptedmodule")
    resources = expand(keyword_values(arguments, "RESOURCES"), variables(cmake))
    expected = (starter.MODELS_FOLDER / starter.STARTER_MODEL_NAME).relative_to(LIB).as_posix()
    assert resources == [expected]
    assert (LIB / expected).is_file(), "make it with: python benchmarks/make_starter_model.py"
    # pip installs it too (pyproject package data).
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(Path(expected).match(pattern) for pattern in data["ScribbleSegLib"])


def test_the_library_installs_as_a_package_folder_like_dicomlib():
    (arguments,) = calls(LIB / "CMakeLists.txt", "slicermacrobuildscriptedmodule")
    assert expand(keyword_values(arguments, "NAME"), variables(LIB / "CMakeLists.txt")) == ["ScribbleSegLib"]
    assert "WITH_SUBDIR" in arguments, "installs into qt-scripted-modules/ScribbleSegLib/"
    assert "WITH_GENERIC_TESTS" not in arguments, "a package is not a module: no generic module tests"


# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------

MODULE_DIR = ROOT / "ScribbleSeg"


def test_module_lists_its_script_and_resources_which_exist():
    cmake = MODULE_DIR / "CMakeLists.txt"
    values = variables(cmake)
    (arguments,) = calls(cmake, "slicermacrobuildscriptedmodule")
    scripts = expand(keyword_values(arguments, "SCRIPTS"), values)
    resources = expand(keyword_values(arguments, "RESOURCES"), values)
    assert scripts == ["ScribbleSeg.py"]
    assert set(resources) == {"Resources/Icons/ScribbleSeg.png", "Resources/UI/ScribbleSeg.ui",
                              "Resources/requirements.txt"}
    for name in scripts + resources:
        assert (MODULE_DIR / name).is_file(), name
    # Every file under Resources/ is installed (an unlisted one would be missing at run time).
    present = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert present == set(resources)
    assert "WITH_GENERIC_TESTS" in arguments


def test_module_registers_its_self_test_and_testing_folder():
    cmake = MODULE_DIR / "CMakeLists.txt"
    assert ["SCRIPT", "${MODULE_NAME}.py"] in calls(cmake, "slicer_add_python_unittest")
    assert ["Testing"] in calls(cmake, "add_subdirectory")
    assert ["Python"] in calls(MODULE_DIR / "Testing" / "CMakeLists.txt", "add_subdirectory")
    python = MODULE_DIR / "Testing" / "Python"
    scripts = [args[args.index("SCRIPT") + 1]
               for args in calls(python / "CMakeLists.txt", "slicer_add_python_unittest")]
    assert scripts
    for script in scripts:
        assert (python / script).is_file(), script


# ---------------------------------------------------------------------------
# The extension
# ---------------------------------------------------------------------------

REQUIRED = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
            "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")


def test_extension_metadata_is_complete():
    values = variables(ROOT / "CMakeLists.txt")
    for key in REQUIRED:
        assert values.get(key) and values[key][0].strip(), f"{key} is not set"
    assert values["EXTENSION_CATEGORY"] == ["Segmentation"]
    assert values["EXTENSION_DEPENDS"] == ["PyTorch"]
    assert len(values["EXTENSION_DESCRIPTION"][0]) > 80


def test_root_builds_the_module_and_the_library_as_the_template_does():
    cmake = ROOT / "CMakeLists.txt"
    names = [name for name, _args in commands(cmake)]
    assert names[:2] == ["cmake_minimum_required", "project"]
    assert calls(cmake, "project") == [["ScribbleSeg"]]
    assert ["Slicer", "REQUIRED"] in calls(cmake, "find_package")
    assert calls(cmake, "add_subdirectory") == [["ScribbleSeg"], ["ScribbleSegLib"]]
    assert calls(cmake, "include")[-2:] == [["${Slicer_EXTENSION_GENERATE_CONFIG}"], ["${Slicer_EXTENSION_CPACK}"]]


def test_extensions_index_checks_find_the_name_icon_and_screenshots():
    # The same regular expressions as Slicer/ExtensionsIndex scripts/check_description_files.py.
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", text, re.IGNORECASE)[0] == "ScribbleSeg"
    (icon,) = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.IGNORECASE)
    (screenshots,) = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.IGNORECASE)
    for url in [icon, *screenshots.split()]:
        match = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(Resources/[\w.]+\.png)", url)
        assert match, f"{url} is not a raw GitHub URL of a PNG under Resources/"
        assert (ROOT / match.group(1)).is_file(), f"{match.group(1)} does not exist"
    assert icon.endswith("/Resources/ScribbleSeg.png")


@pytest.mark.parametrize("path", ["CMakeLists.txt", "ScribbleSeg/CMakeLists.txt", "ScribbleSegLib/CMakeLists.txt",
                                  "ScribbleSeg/Testing/CMakeLists.txt", "ScribbleSeg/Testing/Python/CMakeLists.txt"])
def test_parentheses_and_quotes_balance(path):
    text = without_comments(ROOT / path)
    assert text.count("(") == text.count(")")
    assert text.count('"') % 2 == 0
