"""The command-line shell: help, errors as one line, no heavy imports for --help."""

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from ScribbleSegLib import choices, cli


def test_every_design_command_is_registered():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"demo", "phantom", "train", "segment", "evaluate", "bench", "cache"}


def test_every_command_takes_quiet_as_the_readme_says():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert any("--quiet" in a.option_strings for a in command._actions), name


def test_help_does_not_import_heavy_packages():
    code = (
        "import sys; from ScribbleSegLib import cli; cli.build_parser();"
        "heavy = [m for m in ('torch', 'maxflow', 'vtk', 'SimpleITK') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_user_error_is_one_line_and_exit_2(capsys):
    status = cli.main(["evaluate", "--prediction", "/nonexistent/p.nrrd", "--label", "/nonexistent/l.nrrd"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("scribbleseg evaluate: error:")
    assert "/nonexistent/" in err


def test_an_unknown_argument_is_named_by_the_subcommand(capsys):
    # One value too many for --spacing: argparse alone would name the top-level command and its usage.
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["segment", "--image", "i", "--scribbles", "s", "--model", "m", "--out", "o.seg.nrrd",
                  "--spacing", "0.03", "0.03", "0.06", "1"])
    err = capsys.readouterr().err.strip()
    assert excinfo.value.code == 2 and len(err.splitlines()) == 1
    assert err == "scribbleseg segment: error: unrecognized arguments: 1 (see 'scribbleseg segment --help')"


def test_atomic_output_has_ordinary_permissions(tmp_path):
    import os

    from ScribbleSegLib.fileio import atomic_output

    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_segment_h_evaluation_reaches_the_ddml_settings():
    from ScribbleSegLib.commands.segment import job_from_args
    from ScribbleSegLib.jobs import settings

    parser = cli.build_parser()
    base = ["segment", "--image", "i.nrrd", "--scribbles", "s.nrrd", "--model", "m.model", "--out", "o.nrrd"]
    assert job_from_args(parser.parse_args(base)).ddml == {}
    job = job_from_args(parser.parse_args(base + ["--h-evaluation", "exact"]))
    assert settings(job)[1].evaluation == "exact"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--h-evaluation", "sparse"])


def test_segment_names_the_options_its_method_leaves_unused():
    # --method munet --scribbles S, or --method ddml --gamma G, ignored them without a word.
    from ScribbleSegLib.commands.segment import unused_option_notes

    parser = cli.build_parser()
    base = ["segment", "--image", "i.nrrd", "--model", "m.model", "--out", "o.nrrd"]
    notes = unused_option_notes(parser.parse_args(base + ["--method", "munet", "--scribbles", "s.nrrd", "--gamma", "4",
                                                          "--seed-reach", "2"]))
    assert notes == ["--method munet stops before the graph cut: --gamma, --seed-reach are not used",
                     "--method munet is the network alone: --scribbles is not used"]
    assert unused_option_notes(parser.parse_args(base + ["--method", "ddml", "--scribbles", "s.nrrd", "--gamma",
                                                         "4"])) == [
        "--method ddml stops before the graph cut: --gamma is not used"]
    assert unused_option_notes(parser.parse_args(base + ["--scribbles", "s.nrrd", "--gamma", "4"])) == []
    # --no-cache beside --cache-dir: one of the two was not meant.
    assert unused_option_notes(parser.parse_args(base + ["--scribbles", "s.nrrd", "--no-cache", "--cache-dir",
                                                         "c"])) == ["--no-cache reads and writes no cache: "
                                                                    "--cache-dir is not used"]


def test_segment_seed_pull_options_reach_the_cut_settings():
    from ScribbleSegLib.commands.segment import job_from_args
    from ScribbleSegLib.jobs import settings

    parser = cli.build_parser()
    base = ["segment", "--image", "i.nrrd", "--scribbles", "s.nrrd", "--model", "m.model", "--out", "o.nrrd"]
    assert settings(job_from_args(parser.parse_args(base)))[0] is None  # no cut option: the library's defaults
    job = job_from_args(parser.parse_args(base + ["--seed-reach", "2.5"]))
    assert settings(job)[0].seed_reach == 2.5
    job = job_from_args(parser.parse_args(base + ["--seed-across", "0.25"]))
    assert 0.25 != choices.DEFAULT_SEED_ACROSS, "a value the default would give anyway would prove nothing"
    assert (settings(job)[0].seed_across, settings(job)[0].seed_reach) == (0.25, choices.DEFAULT_SEED_REACH)
    job = job_from_args(parser.parse_args(base + ["--seed-weight", "5", "--seed-edges", "0"]))
    assert (5.0, 0.0) != (choices.DEFAULT_SEED_WEIGHT, choices.DEFAULT_SEED_EDGES)
    assert (settings(job)[0].seed_weight, settings(job)[0].seed_edges) == (5.0, 0.0)
    for flag in ("--seed-reach", "--seed-across", "--seed-weight", "--seed-edges"):
        with pytest.raises(SystemExit):
            parser.parse_args(base + [flag, "-1"])
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--seed-weight", "0"])


@pytest.mark.parametrize("flag, value, words", [("--seed-across", "1e9", "must be at most"),
                                                 ("--sigma", "1e-9", "must be at least"),
                                                 ("--gamma", "1e9", "must be at most")])
def test_a_cut_setting_the_library_refuses_is_named_by_its_flag(tmp_path, capsys, flag, value, words):
    image = tmp_path / "tile.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 8, 3), 200, np.uint8), isVector=True), str(image))
    assert cli.main(["segment", "--image", str(image), "--model", "starter", "--method", "munet", "--out",
                     str(tmp_path / "out.png"), "--no-cache", "--quiet", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scribbleseg segment: error: {flag} {words}"), err
    assert "graph cut" not in err and "_" not in err.split(":", 2)[2] and "\n" not in err
    assert not (tmp_path / "out.png").exists()


def test_strokes_of_one_class_are_refused_naming_the_method_that_needs_none(tmp_path, capsys):
    image, strokes = tmp_path / "tile.png", tmp_path / "strokes.png"
    pixels = np.random.default_rng(0).integers(60, 230, (8, 8, 3), dtype=np.uint8)  # not a blank scan
    sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=True), str(image))
    heart_only = np.zeros((8, 8), np.uint8)
    heart_only[2:5, 3] = 1
    sitk.WriteImage(sitk.GetImageFromArray(heart_only), str(strokes))
    assert cli.main(["segment", "--image", str(image), "--scribbles", str(strokes), "--model", "starter", "--out",
                     str(tmp_path / "out.png"), "--no-cache", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no background voxel" in err and "(the network alone, --method munet, needs no strokes)" in err


def test_segment_orientations_reach_the_job_and_a_bad_value_in_a_job_names_its_field(tmp_path):
    from ScribbleSegLib.commands.segment import job_from_args
    from ScribbleSegLib.errors import ScribbleSegError
    from ScribbleSegLib.jobs import SegmentFiles, check_job

    parser = cli.build_parser()
    base = ["segment", "--image", "i.nrrd", "--scribbles", "s.nrrd", "--model", "m.model", "--out", "o.nrrd"]
    assert job_from_args(parser.parse_args(base)).orientations == 1
    assert job_from_args(parser.parse_args(base + ["--orientations", "4"])).orientations == 4
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--orientations", "3"])
    job = SegmentFiles(image=str(tmp_path / "i.nrrd"), model="m", labels=str(tmp_path / "o.nrrd"), method="munet",
                       orientations=8, names={"orientations": "--orientations"})
    with pytest.raises(ScribbleSegError, match=r"^--orientations 8: expected one of 1, 2, 4$"):
        check_job(job)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """``scribbleseg cache | head``: the closed pipe ends the run as SIGPIPE would (141), not with a traceback."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "ScribbleSegLib", "cache", "--cache-dir", str(tmp_path)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_a_command_that_repeats_itself_shows_each_warning_once(capsys):
    import logging

    with cli._library_log_to_stderr("bench", {}, once=True):
        for section in (3, 3, 4, 3):
            logging.getLogger("ScribbleSegLib").warning("all strokes lie on section %d", section)
    assert capsys.readouterr().err.splitlines() == [
        "scribbleseg bench: warning: all strokes lie on section 3",
        "scribbleseg bench: warning: all strokes lie on section 4",
        "scribbleseg bench: note: 2 repeats of the lines above were left out"]
    with cli._library_log_to_stderr("segment", {}):  # every other command says each one
        for _ in range(2):
            logging.getLogger("ScribbleSegLib").warning("twice")
    assert capsys.readouterr().err.splitlines() == ["scribbleseg segment: warning: twice"] * 2
    from ScribbleSegLib.commands import bench, segment

    assert bench.WARNINGS_ONCE and not getattr(segment, "WARNINGS_ONCE", False)


def test_bench_without_the_peer_tools_installed_names_no_peers(tmp_path, capsys, monkeypatch):
    # The error said to install the bench extra, not that the bench runs without the peers.
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("skimage") else real(name, *a))
    status = cli.main(["bench", "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "pip install 'scribbleseg[bench]'" in err and "--no-peers" in err
    assert not (tmp_path / "b").exists()
    # A bad option is named first: it was hidden behind the missing extra.
    status = cli.main(["bench", "--out", str(tmp_path / "b"), "--shape", "2", "8", "8", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "--shape 2 8 8: phantom shape 2 8 8 is too small" in err and "bench]" not in err


def test_a_warning_starts_its_own_line_while_a_progress_bar_is_drawn_into_a_log_file(monkeypatch):
    # A batch job's log (stderr a file, no --quiet): each warning followed a bar's text on its line.
    import io
    import logging

    from ScribbleSegLib import cli
    from ScribbleSegLib.progress import TqdmProgress

    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    with cli._library_log_to_stderr("segment", {}):
        bar = TqdmProgress()
        bar("read", 0.2, "reading the image")
        logging.getLogger("ScribbleSegLib").warning("%s: a TIFF states no distance", "stack.tif")
        bar("read", 1.0)
        bar.close()
        logging.getLogger("ScribbleSegLib").warning("no bar now")
    lines = log.getvalue().split("\n")
    assert "scribbleseg segment: warning: stack.tif: a TIFF states no distance" in lines
    assert "scribbleseg segment: warning: no bar now" in lines
