"""`scribbleseg demo` end to end on tiny phantoms with a seconds-long training budget."""

from ScribbleSegLib import cli, volume_io


def test_demo_writes_its_outputs_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    status = cli.main(["demo", "--out", str(out), "--shape", "12", "48", "48", "--train-minutes", "0.03",
                       "--quiet"])
    assert status == 0
    captured = capsys.readouterr()
    printed = captured.out
    # The library's time-budget warning names the demo's flag, not the library's parameter.
    assert "stopped by its time budget (--train-minutes 0.03)" in captured.err, captured.err
    assert "max_minutes" not in captured.err
    # The DDML rows ran the library's defaults, not the paper's settings: named so, never the paper's names.
    for method in ("| U-net |", "| M-Unet |", "| M-Unet+adaptation (default) |", "| M-Unet+adaptation+GC (default) |"):
        assert method in printed
    assert "| M-Unet+DDML" not in printed
    for name in ("heart.seg.nrrd", "heart.stl", "heart.png", "overlay.png", "test_image.nrrd",
                 "scribbles.seg.nrrd", "munet.model", "unet.model", "table.md"):
        assert (out / name).stat().st_size > 0, name
    masks, _ = volume_io.read_segmentation(out / "heart.seg.nrrd")
    assert masks["heart"].any()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    # A second demo replaces the first's files (demo.json lists them), and no file of the user's own.
    (out / "table.md").write_text("edited")
    assert cli.main(["demo", "--out", str(out), "--shape", "12", "48", "48", "--train-minutes", "0.03",
                     "--quiet"]) == 0
    assert (out / "table.md").read_text().startswith("| method")  # a table again (its budget-bound training's)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "heart.seg.nrrd").write_text("a segmentation of my own")
    capsys.readouterr()
    assert cli.main(["demo", "--out", str(mine), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "heart.seg.nrrd: exists and is not a file of an earlier demo" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["heart.seg.nrrd"]
    assert (mine / "heart.seg.nrrd").read_text() == "a segmentation of my own"


def test_demo_refuses_an_output_folder_whose_parent_is_missing(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "no" / "demo"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_and_bench_refuse_what_they_would_fail_on_late_before_any_work(tmp_path, capsys, monkeypatch):
    """An empty --out (an unset variable: it meant the current folder), a device this machine lacks, a model
    --reuse-models cannot load and an --update file the run could only fail on at its end are refused at once,
    and an output folder the command made is gone again."""
    import pytest

    from ScribbleSegLib import phantom
    from ScribbleSegLib.commands import bench

    monkeypatch.setattr(phantom, "make_phantom", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.chdir(tmp_path)

    def refused(args, *words):
        try:
            status = cli.main(args)
        except SystemExit as exc:  # argparse's refusal
            status = exc.code
        err = capsys.readouterr().err.strip()
        assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        for word in words:
            assert word in err, err

    for command in ("demo", "bench"):
        refused([command, "--out", "", "--no-peers"][:3 if command == "demo" else 4], "--out", "empty path")
    assert list(tmp_path.iterdir()) == []
    import torch

    if not torch.cuda.is_available():
        refused(["demo", "--out", "d", "--device", "cuda"], "--device cuda")
        refused(["bench", "--out", "b", "--device", "cuda", "--no-peers"], "--device cuda")
    (tmp_path / "m").mkdir()
    for arch in ("munet", "unet"):
        (tmp_path / "m" / f"{arch}_a.model").write_text("not a model")
    refused(["bench", "--out", "m", "--reuse-models", "--no-peers"], "--reuse-models", "not a ScribbleSeg model")
    for name, text, words in (("one.md", f"x\n{bench.SECTION_START}\n", ("only one of the bench section markers",)),
                              ("swapped.md", f"{bench.SECTION_END}\n{bench.SECTION_START}\n", ("end marker",)),
                              ("bin.md", None, ("not a UTF-8 text file",))):
        path = tmp_path / name
        if text is None:
            path.write_bytes(b"\xc4\x00\xff")
        else:
            path.write_text(text)
        refused(["bench", "--out", "b", "--update", name, "--no-peers"], "--update", *words)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text("{}")  # a report of an earlier run, as --update's file
    refused(["bench", "--out", "b", "--update", "b/results.json", "--no-peers"], "--update", "results.json",
            "is given for both")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "bin.md", "m", "one.md", "swapped.md"]
