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


def test_the_defaults_the_readme_states_are_the_librarys():
    # The README states defaults in words; each is one constant of the library, which may change alone.
    from ScribbleSegLib import choices
    from ScribbleSegLib.training import TrainOptions

    text = " ".join((ROOT / "README.md").read_text().split())  # its line breaks fall anywhere
    small = choices.PRESETS["small"]
    options = TrainOptions()
    stated = [
        f"runs up to {small.max_iters} steps of {choices.TRAIN_BATCH} patches within `--max-minutes` "
        f"(default {small.max_minutes:g})",
        f"has not improved for {options.eval_every * options.patience} steps",
        f"up to `--suggest N` sections (default {choices.DEFAULT_SUGGESTIONS})",
        f"most {choices.DEFAULT_CACHE_MAX_GB:g} GB",
        f"a gentler learning rate ({choices.FINETUNE_LR:.0e}) and a {choices.FINETUNE_ITERS}-step budget".replace(
            "e-0", "e-"),  # 3e-4, as people write it
        f"the last {choices.UNDO_DEPTH} runs are kept",
    ]
    for phrase in stated:
        assert phrase in text, phrase
