"""The README opens with the two commands, and CI runs the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


def test_readme_opens_with_demo_and_test_commands():
    demo, tests = _readme_commands()[:2]
    assert demo.endswith("scribbleseg demo")
    assert "pytest" in tests and ".[test]" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci
