"""`scribbleseg demo` end to end on tiny phantoms with a seconds-long training budget."""

from ScribbleSegLib import cli, volume_io


def test_demo_writes_its_outputs_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    status = cli.main(["demo", "--out", str(out), "--shape", "12", "48", "48", "--train-minutes", "0.03",
                       "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
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


def test_demo_refuses_an_output_folder_whose_parent_is_missing(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "no" / "demo"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
