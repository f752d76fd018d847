"""Reliability battery: bad inputs and faults against the real command line, as a markdown table.

Makes a tiny phantom and model with the command line, then runs each case in a
subprocess (``python -m ScribbleSegLib ...``) in a fresh folder, and records:
the exit status, the last line of stderr and how many lines it had, whether
a traceback appeared, whether the inputs are byte-identical afterwards, and
which files the case left behind (outputs of failed runs, temporaries).
A few cases call the Python API in a subprocess instead.  The full-disk
cases mount a small tmpfs and need root (they are marked skipped otherwise).

    python benchmarks/bench_reliability.py            # prints the table
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def cli(*args, cwd: Path, wait: bool = True, env: Optional[Dict[str, str]] = None):
    command = [sys.executable, "-m", "ScribbleSegLib", *[str(a) for a in args]]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=cwd, env=env or ENV, capture_output=True, text=True)


def api(code: str, cwd: Path):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True)


def digest(paths) -> Dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def listing(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


class Battery:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.rows: List[List[str]] = []
        data = base / "data"
        data.mkdir()
        done = cli("phantom", "--out", data, "--volumes", 1, "--shape", 8, 48, 48, "--quiet", cwd=base)
        assert done.returncode == 0, done.stderr
        self.image, self.scribbles = data / "vol00_image.nrrd", data / "vol00_scribbles_p0.seg.nrrd"
        self.label = data / "vol00_label.seg.nrrd"
        self.model = data / "tiny.model"
        done = cli("train", "--images", self.image, "--labels", self.label, "--out", self.model, "--max-iters", 3,
                   "--max-minutes", 1, "--device", "cpu", "--quiet", cwd=base)
        assert done.returncode == 0, done.stderr
        self.inputs = [self.image, self.scribbles, self.label, self.model]
        self.count = 0

    def segment(self, out, *extra, cache: Optional[Path] = None) -> List:
        return ["segment", "--image", self.image, "--scribbles", self.scribbles, "--model", self.model,
                "--out", out, "--device", "cpu", "--quiet",
                *(["--cache-dir", cache] if cache else ["--no-cache"]), *extra]

    def case(self, what: str, action: Callable[[Path], subprocess.CompletedProcess],
             expected: Callable[[Path], set] = lambda work: set()) -> None:
        """Run one case in a fresh folder; ``expected`` names what it should leave (relative paths)."""
        self.count += 1
        work = self.base / f"case{self.count:02d}"
        work.mkdir()
        before_inputs = digest(self.inputs)
        before_data = listing(self.inputs[0].parent)
        done = action(work)
        if done is None:
            self.rows.append([str(self.count), what, "skipped", "needs root to mount a tmpfs", "", "", "", ""])
            return
        err = [line for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in err if "error" in line or "Error" in line or "interrupted" in line]
        # The tiny phantom's strokes lie on one section, and its 3-step model's network contradicts them: every
        # segment run warns of both; another warning says more.
        warnings = [line for line in err if "warning" in line and "all strokes lie on section" not in line
                    and "the model's network calls" not in line]
        shown = (errors or warnings or err or done.stdout.strip().splitlines() or [""])[0]
        shown = shown.replace(str(self.base), "$W").replace("|", "/")
        if len(shown) > 200:  # the start and the end: a long path must not hide what the line says
            shown = shown[:90] + " … " + shown[-107:]
        left = sorted(listing(work) - expected(work)) + sorted(listing(self.inputs[0].parent) - before_data)
        self.rows.append([
            str(self.count), what, str(done.returncode), f"`{shown}`",
            str(len(err)), "yes" if "Traceback" in done.stderr else "no",
            "yes" if digest(self.inputs) == before_inputs else "**NO**",
            ", ".join(left) if left else "nothing"])

    def table(self) -> str:
        head = ["#", "what was tried", "exit", "stderr: first error/warning line, else first line ($W: work folder)",
                "stderr lines", "traceback", "inputs identical", "left behind"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def mount_tmpfs(folder: Path, size: str) -> bool:
    if os.name != "posix" or os.geteuid() != 0:
        return False
    folder.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def umount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def run_battery(b: Battery) -> None:
    img, scr, model = b.image, b.scribbles, b.model

    # Outputs that would destroy an input, or each other
    b.case("segment `--out` = the scribbles file", lambda w: cli(*b.segment(scr), cwd=w))
    b.case("segment `--out` = the image file", lambda w: cli(*b.segment(img), cwd=w))
    b.case("segment `--out` = the model file", lambda w: cli(*b.segment(model), cwd=w))

    def hardlink(w):
        os.link(scr, w / "link.seg.nrrd")
        return cli(*b.segment(w / "link.seg.nrrd"), cwd=w)
    b.case("segment `--out` = a hard link to the scribbles", hardlink, lambda w: {"link.seg.nrrd"})
    b.case("segment `--out o.nrrd --probability o.nrrd`",
           lambda w: cli(*b.segment(w / "o.nrrd", "--probability", w / "o.nrrd"), cwd=w))
    b.case("segment `--probability p.xyz` (bad extension)",
           lambda w: cli(*b.segment(w / "out.seg.nrrd", "--probability", w / "p.xyz"), cwd=w))
    b.case("segment `--surface s.ply` (bad extension)",
           lambda w: cli(*b.segment(w / "out.seg.nrrd", "--surface", w / "s.ply"), cwd=w))
    b.case("segment `--out` in a missing folder", lambda w: cli(*b.segment(w / "missing" / "o.seg.nrrd"), cwd=w))

    def out_is_folder(w):
        (w / "dir.nrrd").mkdir()
        return cli(*b.segment(w / "dir.nrrd"), cwd=w)
    b.case("segment `--out` is an existing folder", out_is_folder, lambda w: {"dir.nrrd"})
    b.case("train `--out` = the training image",
           lambda w: cli("train", "--images", img, "--labels", b.label, "--out", img, "--quiet", cwd=w))
    b.case("segment, every output (control)",
           lambda w: cli(*b.segment(w / "o.seg.nrrd", "--probability", w / "p.nrrd", "--surface", w / "s.stl",
                                    "--render", w / "r.png"), cwd=w),
           lambda w: {"o.seg.nrrd", "p.nrrd", "s.stl", "r.png"})

    # The feature cache
    def damaged_cache(w):
        cache = w / "cache"
        cli(*b.segment(w / "o.seg.nrrd", cache=cache), cwd=w)
        entry = next(p for p in cache.iterdir() if p.is_dir())
        with open(entry / "features.npy", "r+b") as f:
            f.truncate((entry / "features.npy").stat().st_size // 2)
        return cli(*b.segment(w / "o.seg.nrrd", cache=cache), cwd=w)
    b.case("segment after a cache entry was truncated", damaged_cache,
           lambda w: {"o.seg.nrrd", "cache"} | {str(p.relative_to(w)) for p in (w / "cache").rglob("*")
                                                 if "scribbleseg-tmp" not in str(p)})

    def cache_is_file(w):
        (w / "cache").write_bytes(b"x")
        return cli(*b.segment(w / "o.seg.nrrd", cache=w / "cache"), cwd=w)
    b.case("segment with a cache folder that is a file", cache_is_file, lambda w: {"o.seg.nrrd", "cache"})

    def stale_cache_temp(w):
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (w / "cache" / f".{'a' * 32}.scribbleseg-tmp-{dead.pid}-00000000").mkdir(parents=True)
        return cli(*b.segment(w / "o.seg.nrrd", cache=w / "cache"), cwd=w)
    b.case("segment with a temp entry a killed run left in the cache", stale_cache_temp,
           lambda w: {"o.seg.nrrd", "cache"} | {str(p.relative_to(w)) for p in (w / "cache").rglob("*")
                                                 if "scribbleseg-tmp" not in str(p)})

    def cache_cap(w):
        cli(*b.segment(w / "o.seg.nrrd", cache=w / "cache"), cwd=w)
        return cli("cache", "--max-gb", 0.00001, "--cache-dir", w / "cache", cwd=w)
    b.case("`cache --max-gb 0.00001` after one run (LRU eviction)", cache_cap,
           lambda w: {"o.seg.nrrd", "cache", "cache/settings.json"})

    # Signals
    def terminated(w, sig):
        args = [a for a in b.segment(w / "o.seg.nrrd", "--probability", w / "p.nrrd") if a != "--quiet"]
        proc = cli(*args, cwd=w, wait=False)
        seen, deadline = b"", time.monotonic() + 120
        while b"metric learning" not in seen and time.monotonic() < deadline:  # the progress bar shows the stage
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
        proc.send_signal(sig)
        out, err = proc.communicate()
        # Keep what the program said, without the progress bars it drew before.
        text = seen.decode(errors="replace") + err
        said = re.findall(r"(scribbleseg \w+: [^\r\n]*|Traceback[^\r\n]*|time: [^\r\n]*)", text)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "\n".join(said))
    b.case("segment, SIGTERM during DDML", lambda w: terminated(w, signal.SIGTERM))
    b.case("segment, SIGINT (Ctrl-C) during DDML", lambda w: terminated(w, signal.SIGINT))

    def killed_then_rerun(w):
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (w / f".o.seg.nrrd.scribbleseg-tmp-{dead.pid}-0a1b2c3d.seg.nrrd").write_bytes(b"half")
        return cli(*b.segment(w / "o.seg.nrrd"), cwd=w)
    b.case("segment after a SIGKILLed run left a temp beside `--out`", killed_then_rerun, lambda w: {"o.seg.nrrd"})

    # Full disk (a 256 kB tmpfs)
    def full_disk(w, action):
        disk = w / "disk"
        if not mount_tmpfs(disk, "256k"):
            return None
        try:
            return action(disk)
        finally:
            umount(disk)
    b.case("segment, outputs on a 256 kB disk", lambda w: full_disk(
        w, lambda d: cli(*b.segment(d / "o.nii", "--probability", d / "p.nrrd"), cwd=w)), lambda w: {"disk"})
    b.case("train, model on a 256 kB disk", lambda w: full_disk(
        w, lambda d: cli("train", "--images", img, "--labels", b.label, "--out", d / "m.model", "--max-iters", 1,
                         "--device", "cpu", "--quiet", cwd=w)), lambda w: {"disk"})
    for writer, call in (
            ("labelmap .nii", "volume_io.write_labelmap(d + '/o.nii', (n * 255).astype('uint8'), g)"),
            ("`.seg.nrrd`", "volume_io.write_segmentation(d + '/o.seg.nrrd', [('heart', n > .5, (1, 0, 0))], g)"),
            ("probability", "volume_io.write_probability(d + '/p.nrrd', n.astype('float32'), g)")):
        code = ("import sys, numpy as np; from ScribbleSegLib import fileio, volume_io\n"
                "from ScribbleSegLib.geometry import Geometry\n"
                "fileio.check_free_space = lambda needs: None  # reach the write itself\n"
                "d = sys.argv[1]; g = Geometry((1, 1, 1)); n = np.random.default_rng(0).random((16, 64, 64))\n"
                "open(d + '/filler', 'wb').write(bytes(fileio.free_bytes(d) - 12 * 1024))\n"
                "try:\n    " + call + "\nexcept Exception as e:\n    print(type(e).__name__ + ': ' + str(e),"
                " file=sys.stderr); sys.exit(2)\n")
        b.case(f"API: {writer} written to a full disk, free-space check bypassed", lambda w, code=code: full_disk(
            w, lambda d: subprocess.run([sys.executable, "-c", code, str(d)], env=ENV, capture_output=True,
                                        text=True)), lambda w: {"disk"})

    # Memory and options
    b.case("`phantom --shape 5000 5000 5000`", lambda w: cli("phantom", "--out", w / "p", "--shape", 5000, 5000,
                                                              5000, cwd=w))
    b.case("`demo --train-minutes -1`", lambda w: cli("demo", "--out", w / "demo", "--train-minutes", -1, cwd=w))
    b.case("segment without `--model` (argparse)", lambda w: cli("segment", "--image", img, "--out", "o.nrrd", cwd=w))
    b.case("segment `--method magic`", lambda w: cli(*b.segment(w / "o.nrrd", "--method", "magic"), cwd=w))
    b.case("segment `--downsample 0`", lambda w: cli(*b.segment(w / "o.nrrd", "--downsample", 0), cwd=w))
    b.case("segment `--device cuda` on a machine without CUDA" if not _has_cuda() else "segment `--device cuda`",
           lambda w: cli(*b.segment(w / "o.nrrd"), "--device", "cuda", cwd=w),
           (lambda w: set()) if not _has_cuda() else (lambda w: {"o.nrrd"}))
    b.case("`segment --help` (control)", lambda w: cli("segment", "--help", cwd=w))

    # The Python API
    setup = (f"import numpy as np; from ScribbleSegLib import pipeline, volume_io\n"
             f"v = volume_io.read_image({str(img)!r})\n"
             f"s = volume_io.read_scribbles({str(scr)!r}, v.shape, v.geometry)\n")
    for what, call in (("scribbles as a list", f"pipeline.segment(v, s.tolist(), {str(model)!r})"),
                       ("`model=None`", "pipeline.segment(v, s, None)"),
                       ("a 0-section image", f"pipeline.segment(v.array[:0], s[:0], {str(model)!r})"),
                       ("a float image", f"pipeline.segment(v.array.astype('f4'), s, {str(model)!r})"),
                       ("`read_scribbles` with a 2-value shape",
                        f"volume_io.read_scribbles({str(scr)!r}, v.shape[:2], v.geometry)")):
        code = setup + ("try:\n    " + call + "\nexcept Exception as e:\n"
                        "    import sys; print(type(e).__name__ + ': ' + str(e), file=sys.stderr); sys.exit(2)\n")
        b.case(f"API: {what}", lambda w, code=code: api(code, w))
    run_later_cases(b)


def run_later_cases(b: Battery) -> None:
    """Cases added on 2026-12-03, after a fuzzing round of the command line (BENCHMARKS.md, *Reliability*)."""
    import numpy as np

    from ScribbleSegLib import volume_io
    from ScribbleSegLib.geometry import Geometry, Volume

    img, scr, label = b.image, b.scribbles, b.label
    b.case("`cache --max-gb 1e308` (a cap no disk holds)",
           lambda w: cli("cache", "--max-gb", "1e308", "--cache-dir", w / "cache", cwd=w))

    def stored_bad_cap(w):
        (w / "cache").mkdir()
        (w / "cache" / "settings.json").write_text('{"max_gb": 1e308}')  # by hand, or an older version
        return cli(*b.segment(w / "o.seg.nrrd", cache=w / "cache"), cwd=w)
    b.case("segment with a cap no disk holds stored in the cache folder", stored_bad_cap,
           lambda w: {str(p.relative_to(w)) for p in w.rglob("*") if "scribbleseg-tmp" not in str(p)})
    b.case("segment `--seed 2^64`", lambda w: cli(*b.segment(w / "o.nrrd", "--seed", 2**64), cwd=w))

    def thin_sections(w):
        # 3 rows of the phantom: too few for the colour gradient the stroke pull follows.
        image = volume_io.read_image(img)
        strokes = volume_io.read_scribbles(scr, image.shape, image.geometry)
        rows = int(np.argmax((strokes == 1).any(axis=(0, 2))))
        rows = slice(max(0, rows - 1), max(0, rows - 1) + 3)
        g = image.geometry
        axes = np.asarray(g.direction).reshape(3, 3) * np.asarray(g.spacing)[None, :]
        origin = tuple(np.asarray(g.origin) + axes[:, 1] * rows.start)
        thin = Geometry(g.spacing, origin, g.direction)
        cut = strokes[:, rows].copy()
        cut[:, :, :2] = 2  # background at the section's edge, in case the rows held none
        volume_io.write_rgb_volume(w / "thin.nrrd", Volume(np.ascontiguousarray(image.array[:, rows]), thin))
        volume_io.write_labelmap(w / "thin_scribbles.nrrd", cut, thin)
        return cli("segment", "--image", w / "thin.nrrd", "--scribbles", w / "thin_scribbles.nrrd", "--model",
                   b.model, "--out", w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment on sections 3 pixels tall", thin_sections,
           lambda w: {"thin.nrrd", "thin_scribbles.nrrd", "o.seg.nrrd"})

    def empty_result(w):
        image = volume_io.read_image(img)
        volume_io.write_rgb_volume(w / "white.nrrd", Volume(np.full_like(image.array, 240), image.geometry))
        return cli("segment", "--image", w / "white.nrrd", "--method", "munet", "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--surface", w / "o.stl", "--render", w / "o.png", "--device", "cpu",
                   "--quiet", "--no-cache", cwd=w)
    b.case("segment `--method munet --surface --render` on a white image (no heart)", empty_result,
           lambda w: {"white.nrrd", "o.seg.nrrd"})
    b.case("segment `--probability p.seg.nrrd`",
           lambda w: cli(*b.segment(w / "o.nrrd", "--probability", w / "p.seg.nrrd"), cwd=w))

    def part_of_the_grid(w):
        # A result for the first 4 sections only (another image, or saved cropped in Slicer).
        image = volume_io.read_image(img)
        volume_io.write_segmentation(w / "four.seg.nrrd", [("heart", np.ones((4,) + image.shape[1:], np.uint8),
                                                            volume_io.HEART_COLOR)], image.geometry)
        return cli("evaluate", "--prediction", w / "four.seg.nrrd", "--label", label, cwd=w)
    b.case("evaluate a `.seg.nrrd` prediction covering half the label's sections", part_of_the_grid,
           lambda w: {"four.seg.nrrd"})
    b.case("segment `--spacing` other than the file's, scribbles drawn on the file",
           lambda w: cli(*b.segment(w / "o.seg.nrrd", "--spacing", 0.5, 0.5, 1.5), cwd=w), lambda w: {"o.seg.nrrd"})

    def worker_train_over_its_label(w):
        # The Slicer module's worker, asked to write the model over its own training label.
        shutil.copy(label, w / "label.seg.nrrd")
        request = {"protocol": 1, "task": "train", "images": [str(img)], "labels": ["label.seg.nrrd"],
                   "max_iters": 2, "output": "label.seg.nrrd"}
        (w / "train.json").write_text(__import__("json").dumps(request))
        done = subprocess.run([sys.executable, "-m", "ScribbleSegLib.worker", "train.json"], cwd=w,
                              capture_output=True, text=True, env=ENV)
        # The worker speaks JSON lines on stdout: its error event is the line to show.
        return subprocess.CompletedProcess(done.args, done.returncode, "", done.stdout + done.stderr)
    b.case("worker `train` request whose output is its training label", worker_train_over_its_label,
           lambda w: {"label.seg.nrrd", "train.json"})

    def nan_model(w):
        import torch

        payload = torch.load(b.model, weights_only=True)
        name = next(k for k, v in payload["state"].items() if torch.is_floating_point(v))
        payload["state"][name] = payload["state"][name].clone().fill_(float("nan"))
        torch.save(payload, w / "nan.model")
        return cli("segment", "--image", img, "--scribbles", scr, "--model", w / "nan.model", "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment with a model whose weights were overwritten with NaN", nan_model, lambda w: {"nan.model"})

    def text_model(w):
        (w / "notes.model").write_text("not a model\n")
        return cli("segment", "--image", img, "--scribbles", scr, "--model", w / "notes.model", "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment `--model` a text file", text_model, lambda w: {"notes.model"})

    def nan_image(w):
        import SimpleITK as sitk

        image = volume_io.read_image(img)
        nan = sitk.GetImageFromArray(np.full(image.array.shape, np.nan, np.float32), isVector=True)
        nan.SetSpacing(image.geometry.spacing)
        nan.SetOrigin(image.geometry.origin)
        nan.SetDirection(image.geometry.direction)
        sitk.WriteImage(nan, str(w / "nan.nrrd"))
        return cli("segment", "--image", w / "nan.nrrd", "--scribbles", scr, "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment on a float image that is all NaN", nan_image, lambda w: {"nan.nrrd"})

    def strokes_in(w, name, placed):
        image = volume_io.read_image(img)
        strokes = volume_io.read_scribbles(scr, image.shape, image.geometry)
        array, geometry = placed(strokes, image.geometry)
        volume_io.write_labelmap(w / name, array, geometry)
        return cli("segment", "--image", img, "--scribbles", w / name, "--model", b.model, "--out", w / "o.seg.nrrd",
                   "--device", "cpu", "--quiet", "--no-cache", cwd=w)

    def cropped(strokes, geometry):
        from ScribbleSegLib import grids

        lo = np.argwhere(strokes).min(axis=0)
        hi = np.argwhere(strokes).max(axis=0) + 1
        return strokes[tuple(slice(a, c) for a, c in zip(lo, hi))], grids.box_geometry(geometry, lo)

    def finer(strokes, geometry):
        fine = np.repeat(np.repeat(strokes, 2, axis=1), 2, axis=2)
        spacing = (geometry.spacing[0] / 2, geometry.spacing[1] / 2, geometry.spacing[2])
        corner = np.asarray(geometry.direction).reshape(3, 3) @ (0.5 * (np.asarray(spacing) - geometry.spacing))
        return fine, Geometry(spacing, tuple(np.asarray(geometry.origin) + corner), geometry.direction)
    b.case("segment, scribbles a labelmap cropped to its strokes (Slicer's default labelmap export)",
           lambda w: strokes_in(w, "cropped.nrrd", cropped), lambda w: {"cropped.nrrd", "o.seg.nrrd"})
    b.case("segment, scribbles on a grid twice as fine in-plane (Slicer's oversampling)",
           lambda w: strokes_in(w, "fine.nrrd", finer), lambda w: {"fine.nrrd", "o.seg.nrrd"})

    def cropped_label(w):
        from ScribbleSegLib import grids

        truth = volume_io.read_label_volume(label)
        lo = np.argwhere(truth.array).min(axis=0)
        hi = np.argwhere(truth.array).max(axis=0) + 1
        box = tuple(slice(a, c) for a, c in zip(lo, hi))
        volume_io.write_segmentation(w / "truth.seg.nrrd", [("heart", truth.array[box], volume_io.HEART_COLOR)],
                                     grids.box_geometry(truth.geometry, lo))
        volume_io.write_labelmap(w / "pred.nrrd", np.roll(truth.array, 1, axis=2), truth.geometry)
        return cli("evaluate", "--prediction", w / "pred.nrrd", "--label", w / "truth.seg.nrrd", cwd=w)
    b.case("evaluate against a label `.seg.nrrd` cropped to its segment", cropped_label,
           lambda w: {"truth.seg.nrrd", "pred.nrrd"})

    def interrupted_render(w):
        args = b.segment(w / "o.seg.nrrd", "--surface", w / "o.stl", "--render", w / "o.png")
        proc = cli(*args, cwd=w, wait=False)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not list(w.glob(".o.stl*")) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.1)  # the surface is written: the render's VTK modules are being imported
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    b.case("segment `--surface --render`, SIGINT (Ctrl-C) as the render starts", interrupted_render)

    def interrupted_phantom(w):
        proc = cli("phantom", "--out", w / "set", "--volumes", 3, "--shape", 8, 48, 48, cwd=w, wait=False)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not any(w.rglob("*vol01*")) and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    b.case("phantom, SIGINT (Ctrl-C) once the second volume is being written", interrupted_phantom)
    b.case("train `--images A --labels L --images A --labels L` (flags repeated)",
           lambda w: cli("train", "--images", img, "--labels", label, "--images", img, "--labels", label,
                         "--out", w / "m.model", "--max-iters", 1, "--device", "cpu", "--quiet", cwd=w),
           lambda w: {"m.model"})
    b.case("train `--downsample 2` with the label the phantom wrote",
           lambda w: cli("train", "--images", img, "--labels", label, "--downsample", 2, "--out", w / "m.model",
                         "--max-iters", 1, "--device", "cpu", "--quiet", cwd=w),
           lambda w: {"m.model"})

    def empty_cache_dir(w):
        cli(*b.segment(w / "o.seg.nrrd", cache=w / "default"), cwd=w)
        return cli("cache", "clear", "--cache-dir", "", cwd=w, env=dict(ENV, SCRIBBLESEG_CACHE_DIR=str(w / "default")))
    b.case("`cache clear --cache-dir \"\"` (an unset variable), the default cache full", empty_cache_dir,
           lambda w: {"o.seg.nrrd"} | {str(p.relative_to(w)) for p in w.rglob("*") if "default" in str(p)})

    def closed_pipe(w):
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run([sys.executable, "-m", "ScribbleSegLib", "evaluate", "--prediction", label,
                                   "--label", label], cwd=w, env=ENV, stdout=write, stderr=subprocess.PIPE,
                                  text=True)
        finally:
            os.close(write)
        return subprocess.CompletedProcess(done.args, done.returncode, "", done.stderr)
    b.case("`evaluate ... / head` whose reader is gone before the first line", closed_pipe)

    def misspelt_run(w):
        from ScribbleSegLib import worker

        request = worker.write_request(w / "session.json", {"task": "session", "image": str(img),
                                                            "model": str(b.model), "device": "cpu"})
        session = worker.SessionProcess(request)
        session.start()
        try:
            session.wait_ready(timeout=120)
            run = session.send({"scribbles": str(scr), "methd": "munet", "outputs": {"labels": str(w / "o.nrrd")}})
            answer = session.wait_run(run, timeout=120) or {}
        finally:
            session.close()
            session.wait(timeout=60)
        return subprocess.CompletedProcess([], session.returncode, "", f"{answer.get('message', answer)}\n")
    b.case("warm worker: a run line with a misspelt field (`methd`)", misspelt_run, lambda w: {"session.json"})
    run_output_cases(b)


def run_output_cases(b: Battery) -> None:
    """Cases added on 2026-12-04 after audits of the outputs, the Python API and the README (BENCHMARKS.md,
    *Reliability*)."""
    import numpy as np
    import slicerio

    from ScribbleSegLib import fileio, volume_io

    img, scr, label = b.image, b.scribbles, b.label

    def read_only_out(w):
        (w / "kept.seg.nrrd").write_bytes(b"an earlier result")
        (w / "kept.seg.nrrd").chmod(0o444)
        return cli(*b.segment(w / "kept.seg.nrrd"), cwd=w)
    b.case("segment `--out` an existing file made read-only", read_only_out, lambda w: {"kept.seg.nrrd"})
    long_name = "h" * 230 + ".seg.nrrd"
    b.case("segment `--out` a 239-byte name (its temporary's would be 289 bytes)",
           lambda w: cli(*b.segment(w / long_name), cwd=w), lambda w: {long_name})
    b.case("segment `--out` a 309-byte name", lambda w: cli(*b.segment(w / ("h" * 300 + ".seg.nrrd")), cwd=w))

    def shared_folder(w):
        # Another machine's temporaries in a shared folder: its process id means nothing here.
        other = "0" * 8 if fileio._HOST != "0" * 8 else "1" * 8
        fresh = w / f".a.nrrd{fileio.TEMP_TAG}{other}-1-0a1b2c3d.nrrd"
        old = w / f".b.nrrd{fileio.TEMP_TAG}{other}-1-0a1b2c3d.nrrd"
        for path in (fresh, old):
            path.write_bytes(b"being written elsewhere")
        os.utime(old, (time.time() - 2 * 86400,) * 2)
        return cli(*b.segment(w / "o.seg.nrrd"), cwd=w)
    b.case("segment beside another machine's temporaries in a shared folder (one fresh, one 2 days old)",
           shared_folder, lambda w: {"o.seg.nrrd", next(p.name for p in w.iterdir() if p.name.startswith(".a."))})

    def no_spacing_image(w):
        array = volume_io.read_image(img).array
        z, y, x = array.shape[:3]
        with open(w / "nospacing.nrrd", "wb") as f:  # an NRRD header without spacing: read as 1 mm
            f.write(f"NRRD0004\ntype: uint8\ndimension: 4\nsizes: 3 {x} {y} {z}\nkinds: vector domain domain "
                    f"domain\nencoding: raw\n\n".encode())
            f.write(np.ascontiguousarray(array).tobytes())
        return cli("segment", "--image", w / "nospacing.nrrd", "--scribbles", scr, "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment, an image whose header lacks the spacing, strokes drawn with it", no_spacing_image,
           lambda w: {"nospacing.nrrd"})
    b.case("segment `--image` a `.seg.nrrd`", lambda w: cli("segment", "--image", label, "--scribbles", scr,
                                                              "--model", b.model, "--out", w / "o.seg.nrrd",
                                                              "--quiet", "--no-cache", cwd=w))

    def crossing_strokes(w):
        made = slicerio.read_segmentation(str(scr))
        voxels = made["voxels"]
        heart, background = voxels == 1, voxels == 2
        for k, j, i in np.argwhere(heart)[:3]:
            background[k, j, i] = True
        made["voxels"] = np.stack([heart, background]).astype(np.uint8)
        made["segments"][1]["layer"], made["segments"][1]["labelValue"] = 1, 1
        slicerio.write_segmentation(str(w / "layers.seg.nrrd"), made)
        return cli("segment", "--image", img, "--scribbles", w / "layers.seg.nrrd", "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment, heart and background strokes crossing in a two-layer `.seg.nrrd`", crossing_strokes,
           lambda w: {"layers.seg.nrrd", "o.seg.nrrd"})

    def evaluate_downsampled(w):
        cli(*b.segment(w / "half.seg.nrrd", "--downsample", 2), cwd=w)
        return cli("evaluate", "--prediction", w / "half.seg.nrrd", "--label", label, "--downsample", 2, cwd=w)
    b.case("`evaluate --downsample 2`: the image's full-size label against a result of `--downsample 2`",
           evaluate_downsampled, lambda w: {"half.seg.nrrd"})
    run_new_user_cases(b)


def run_new_user_cases(b: Battery) -> None:
    """Cases added on 2026-12-05, after a new-user pass over the command line with inputs unlike the phantoms
    (BENCHMARKS.md, *Reliability*)."""
    import json

    import numpy as np
    import SimpleITK as sitk
    import torch

    from ScribbleSegLib import feature_cache, volume_io

    img, scr = b.image, b.scribbles

    def not_numbers_in_the_cache(method):
        def action(w):
            cli(*b.segment(w / "o.seg.nrrd", *method, cache=w / "cache"), cwd=w)
            entry = next(p for p in (w / "cache").iterdir() if p.is_dir() and not p.name.startswith("."))
            features = np.load(entry / "features.npy", mmap_mode="r+")
            features[...] = np.nan  # damage between the checksum's samples: the manifest is made to match it
            features.flush()
            del features
            meta = json.loads((entry / "meta.json").read_text())
            meta["files"]["features.npy"]["checksum"] = feature_cache.sampled_checksum(entry / "features.npy")
            (entry / "meta.json").write_text(json.dumps(meta))
            return cli(*b.segment(w / "o.seg.nrrd", *method, cache=w / "cache"), cwd=w)
        return action
    for method in ((), ("--method", "ddml")):
        b.case(f"segment {' '.join(method) or 'again'} on a cache entry whose features turned to NaN between its "
               "checksum's samples", not_numbers_in_the_cache(method),
               lambda w: {"o.seg.nrrd", "cache"} | {str(p.relative_to(w)) for p in (w / "cache").rglob("*")})
    volume = volume_io.read_image(img)

    def image_of(name, array):
        def action(w):
            volume_io.write_rgb_volume(w / name, volume_io.Volume(array, volume.geometry))
            return cli("segment", "--image", w / name, "--scribbles", scr, "--model", b.model, "--out",
                       w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
        return action
    b.case("segment `--image` a white scan", image_of("white.nrrd", np.full_like(volume.array, 255)),
           lambda w: {"white.nrrd"})

    def labelmap_as_image(w):
        strokes = volume_io.read_scribbles(scr, volume.shape, volume.geometry)
        volume_io.write_labelmap(w / "strokes.nrrd", strokes, volume.geometry)
        return cli("segment", "--image", w / "strokes.nrrd", "--scribbles", scr, "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment `--image` the scribbles as a labelmap", labelmap_as_image, lambda w: {"strokes.nrrd"})

    def flipped_strokes(w):
        strokes = volume_io.read_scribbles(scr, volume.shape, volume.geometry)
        image = sitk.GetImageFromArray(np.ascontiguousarray(strokes[..., ::-1]))
        image.SetSpacing(volume.geometry.spacing)
        origin = np.asarray(volume.geometry.origin) + np.asarray(volume.geometry.direction).reshape(3, 3)[:, 0] * (
            volume.geometry.spacing[0] * (volume.shape[2] - 1))
        image.SetOrigin(tuple(origin))
        direction = np.asarray(volume.geometry.direction, float).reshape(3, 3).copy()
        direction[:, 0] *= -1
        image.SetDirection(tuple(direction.ravel()))
        sitk.WriteImage(image, str(w / "flipped.nrrd"))
        return cli("segment", "--image", img, "--scribbles", w / "flipped.nrrd", "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment, strokes on the image's voxels written with the x axis flipped", flipped_strokes,
           lambda w: {"flipped.nrrd", "o.seg.nrrd"})

    def changed_weight(w):
        payload = torch.load(b.model, weights_only=True)
        name = next(k for k, v in payload["state"].items() if torch.is_floating_point(v) and v.numel() > 4)
        payload["state"][name] = payload["state"][name].clone()
        payload["state"][name].view(-1)[0] += 0.25  # finite, as flipped bytes mostly read
        torch.save(payload, w / "changed.model")
        return cli("segment", "--image", img, "--scribbles", scr, "--model", w / "changed.model", "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment `--model` with one weight changed inside the file", changed_weight, lambda w: {"changed.model"})

    def transparent_glass(w):
        folder = w / "sections"
        folder.mkdir()
        rgba = np.concatenate([volume.array, np.full(volume.array.shape[:3] + (1,), 255, np.uint8)], axis=3)
        rgba[:, :, :6] = 0  # transparent black glass on the left, as registration tools pad sections
        for z, plane in enumerate(rgba):
            sitk.WriteImage(sitk.GetImageFromArray(plane, isVector=True), str(folder / f"s{z + 1}.png"))
        x, y, z = volume.geometry.spacing
        return cli("segment", "--image", folder, "--spacing", x, y, z, "--scribbles", scr, "--model", b.model,
                   "--out", w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment, a folder of RGBA sections with transparent black glass", transparent_glass,
           lambda w: {"sections", "o.seg.nrrd"} | {f"sections/s{z + 1}.png" for z in range(volume.shape[0])})
    b.case("train `--out` a name ending in `.seg.nrrd`",
           lambda w: cli("train", "--images", img, "--labels", b.label, "--out", w / "m.seg.nrrd", "--max-iters",
                         1, "--quiet", cwd=w))
    run_real_tile_cases(b, volume)


def run_real_tile_cases(b: Battery, volume) -> None:
    """Cases added on 2026-12-05, after a new-user pass with real H&E tiles and slide files (BENCHMARKS.md,
    *Reliability*).  The multi-page TIFF and the JPEG are written with Pillow (the bench extra's matplotlib
    brings it)."""
    import numpy as np
    import SimpleITK as sitk
    from PIL import Image

    from ScribbleSegLib import volume_io

    strokes = volume_io.read_scribbles(b.scribbles, volume.shape, volume.geometry)
    z = int(np.argmax((strokes > 0).sum(axis=(1, 2))))  # the most stroked section, at twice its pixel count: a tile
    section = volume.array[z].repeat(2, axis=0).repeat(2, axis=1)  # with tissue enough for a stain fit of its own
    tile_strokes = strokes[z].repeat(2, axis=0).repeat(2, axis=1)
    x, y, zs = volume.geometry.spacing
    spacing = ["--spacing", x / 2, y / 2, zs]  # the tiles' files state none: given as a user gives it

    def tile_run(w, image, *extra, out="o.seg.nrrd"):
        sitk.WriteImage(sitk.GetImageFromArray(tile_strokes), str(w / "strokes.png"))
        return cli("segment", "--image", image, "--scribbles", w / "strokes.png", "--model", b.model, "--out",
                   w / out, "--device", "cpu", "--quiet", "--no-cache", *spacing, *extra, cwd=w)

    def with_thumbnail(w):
        Image.fromarray(section).save(w / "slide.tif", save_all=True,
                                      append_images=[Image.fromarray(section[::4, ::4])])
        return tile_run(w, w / "slide.tif")
    b.case("segment `--image` a TIFF of one section with its thumbnail as a second page", with_thumbnail,
           lambda w: {"slide.tif", "strokes.png", "o.seg.nrrd"})

    def turned_jpeg(w):
        exif = Image.Exif()
        exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
        Image.fromarray(section).save(w / "photo.jpg", exif=exif.tobytes(), quality=95)
        return tile_run(w, w / "photo.jpg")
    b.case("segment `--image` a JPEG whose EXIF orientation turns it", turned_jpeg,
           lambda w: {"photo.jpg", "strokes.png", "o.seg.nrrd"})

    def palette_strokes(w):
        sitk.WriteImage(sitk.GetImageFromArray(section, isVector=True), str(w / "tile.png"))
        indexed = Image.fromarray(tile_strokes, mode="P")
        indexed.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
        indexed.save(w / "strokes.png")
        return cli("segment", "--image", w / "tile.png", "--scribbles", w / "strokes.png", "--model", b.model,
                   "--out", w / "mask.png", "--device", "cpu", "--quiet", "--no-cache", *spacing, cwd=w)
    b.case("segment a tile with strokes saved as an indexed-colour (palette) PNG, `--out` a PNG mask",
           palette_strokes, lambda w: {"tile.png", "strokes.png", "mask.png"})
    b.case("segment a stack `--out` a PNG", lambda w: cli(*b.segment(w / "o.png"), cwd=w))

    def negative_tile(w):
        label = volume_io.read_label(b.label, volume.shape, volume.geometry)
        # Every section of this phantom holds heart: the tile without it is the corner of a section away from it.
        k = int(np.argmin(label.sum(axis=(1, 2))))
        y, x = next((y, x) for y in (0, 24) for x in (0, 24) if not label[k, y:y + 24, x:x + 24].any())
        for name, image, mask in (("heart", volume.array[z], label[z]),
                                  ("none", volume.array[k, y:y + 24, x:x + 24], label[k, y:y + 24, x:x + 24])):
            sitk.WriteImage(sitk.GetImageFromArray(image.repeat(2, axis=0).repeat(2, axis=1), isVector=True),
                            str(w / f"{name}_tile.png"))
            sitk.WriteImage(sitk.GetImageFromArray(mask.repeat(2, axis=0).repeat(2, axis=1) * np.uint8(255)),
                            str(w / f"{name}.png"))
        return cli("train", "--images", w / "heart_tile.png", w / "none_tile.png", "--labels", w / "heart.png",
                   w / "none.png", "--out", w / "m.model", "--max-iters", 1, "--device", "cpu", "--quiet", *spacing,
                   cwd=w)
    b.case("train on two tiles, the second's label without heart", negative_tile,
           lambda w: {"heart_tile.png", "none_tile.png", "heart.png", "none.png", "m.model"})
    run_second_new_user_cases(b, volume)


def run_second_new_user_cases(b: Battery, volume) -> None:
    """Cases added on 2026-12-05 (evening), from the findings of a second new-user pass (BENCHMARKS.md,
    *Reliability*)."""
    import SimpleITK as sitk

    from ScribbleSegLib import volume_io

    b.case("train `--batch 100000` (more patches per step than the memory holds)",
           lambda w: cli("train", "--images", b.image, "--labels", b.label, "--out", w / "m.model", "--batch",
                         100000, "--device", "cpu", "--quiet", cwd=w))

    def gland_label(w):
        label = volume_io.read_label(b.label, volume.shape, volume.geometry)
        volume_io.write_segmentation(w / "gland.seg.nrrd", [("Gland", label, volume_io.HEART_COLOR)], volume.geometry)
        return cli("train", "--images", b.image, "--labels", w / "gland.seg.nrrd", "--out", w / "m.model",
                   "--max-iters", 1, "--device", "cpu", "--quiet", cwd=w)
    b.case("train with a `.seg.nrrd` label whose only segment is named `Gland`", gland_label,
           lambda w: {"gland.seg.nrrd", "m.model"})

    def one_number_twice(w):
        (w / "sections").mkdir()
        for z, name in enumerate(["s9", "s10", "s010", "s11"] + [f"s{k}" for k in range(12, 8 + volume.shape[0])]):
            sitk.WriteImage(sitk.GetImageFromArray(volume.array[z], isVector=True), str(w / "sections" / f"{name}.png"))
        x, y, z = volume.geometry.spacing
        return cli("segment", "--image", w / "sections", "--spacing", x, y, z, "--model", b.model, "--method",
                   "munet", "--out", w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment a folder holding `s10.png` and `s010.png`", one_number_twice,
           lambda w: {"sections"} | {f"sections/{p.name}" for p in (w / "sections").iterdir()})
    b.case("segment `--out o.MHA --probability p.NII.GZ` (capital extensions)",
           lambda w: cli(*b.segment(w / "o.MHA", "--probability", w / "p.NII.GZ"), cwd=w),
           lambda w: {"o.MHA", "p.NII.GZ"})
    b.case("segment `--out .nrrd` (a name that is only an extension)", lambda w: cli(*b.segment(w / ".nrrd"), cwd=w))

    def folder_is_a_file(w):
        (w / "afile").write_text("kept")
        return cli(*b.segment(w / "afile" / "o.seg.nrrd"), cwd=w)
    b.case("segment `--out afile/o.seg.nrrd` where `afile` is a file", folder_is_a_file, lambda w: {"afile"})
    b.case("train `--init starter --no-stain-normalization`",
           lambda w: cli("train", "--images", b.image, "--labels", b.label, "--init", "starter", "--out",
                         w / "m.model", "--max-iters", 1, "--quiet", "--no-stain-normalization", cwd=w))
    run_third_new_user_cases(b, volume)


def run_third_new_user_cases(b: Battery, volume) -> None:
    """Cases added on 2026-12-06, from the findings of a third new-user pass (BENCHMARKS.md, *Reliability*)."""
    import nrrd  # pynrrd, which slicerio reads with
    import numpy as np
    import SimpleITK as sitk

    from ScribbleSegLib import volume_io

    strokes = volume_io.read_scribbles(b.scribbles, volume.shape, volume.geometry)
    x, y, zs = volume.geometry.spacing

    def skipped_numbers(w):
        (w / "sections").mkdir()
        numbers = [k + 1 + (k >= 3) + (k >= 5) for k in range(volume.shape[0])]  # 4 and 7 left out
        for z, n in enumerate(numbers):
            sitk.WriteImage(sitk.GetImageFromArray(volume.array[z], isVector=True), str(w / "sections" / f"s{n}.png"))
        return cli("segment", "--image", w / "sections", "--spacing", x, y, zs, "--model", b.model, "--method",
                   "munet", "--out", w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment a folder whose section numbers skip 4 and 7 (sections left out)", skipped_numbers,
           lambda w: {"sections", "o.seg.nrrd"} | {f"sections/{p.name}" for p in (w / "sections").iterdir()})

    def slicer_4_10_strokes(w):
        # A layer per segment and no Segment<i>_Layer field, as Slicer 4.10 and earlier saved a segmentation.
        layers = np.stack([(strokes == k).transpose(2, 1, 0).astype(np.uint8) for k in (1, 2)])
        header = {"type": "uint8", "dimension": 4, "space": "left-posterior-superior",
                  "kinds": ["list"] + ["domain"] * 3, "space origin": np.asarray(volume.geometry.origin),
                  "space directions": np.vstack([[np.nan] * 3, np.asarray(volume.geometry.direction).reshape(3, 3).T
                                                 * np.asarray(volume.geometry.spacing)[:, None]]), "encoding": "gzip"}
        for i, name in enumerate(("heart", "background")):
            header.update({f"Segment{i}_ID": f"Segment_{i + 1}", f"Segment{i}_Name": name,
                           f"Segment{i}_Color": "0.5 0.5 0.5"})
        nrrd.write(str(w / "old.seg.nrrd"), layers, header)
        return cli("segment", "--image", b.image, "--scribbles", w / "old.seg.nrrd", "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment with strokes saved by Slicer 4.10 (a layer per segment, no layer fields)", slicer_4_10_strokes,
           lambda w: {"old.seg.nrrd", "o.seg.nrrd"})

    def strokes_twice_the_tile(w):
        z = int(np.argmax((strokes > 0).sum(axis=(1, 2))))
        sitk.WriteImage(sitk.GetImageFromArray(volume.array[z], isVector=True), str(w / "tile.png"))
        sitk.WriteImage(sitk.GetImageFromArray(strokes[z].repeat(2, axis=0).repeat(2, axis=1)), str(w / "s.png"))
        return cli("segment", "--image", w / "tile.png", "--scribbles", w / "s.png", "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", "--downsample", 2, cwd=w)
    b.case("segment a tile `--downsample 2` with strokes drawn at twice its size", strokes_twice_the_tile,
           lambda w: {"tile.png", "s.png"})
    b.case("segment `--out o.seg.nrrd/` (a trailing slash)", lambda w: cli(*b.segment(f"{w / 'o.seg.nrrd'}/"), cwd=w))
    b.case("segment `--model` a folder that `--out` lies in",
           lambda w: cli("segment", "--image", b.image, "--model", w, "--method", "munet", "--out", w / "o.nrrd",
                         "--device", "cpu", "--quiet", "--no-cache", cwd=w))

    # train, from a new-user pass of train and the API the same day.
    label = volume_io.read_label(b.label, volume.shape, volume.geometry)

    def mask_as_image(w):
        sitk.WriteImage(sitk.GetImageFromArray(label[0] * np.uint8(255)), str(w / "mask.png"))
        return cli("train", "--images", w / "mask.png", "--labels", w / "mask.png", "--out", w / "m.model",
                   "--max-iters", 1, "--device", "cpu", "--quiet", cwd=w)
    b.case("train `--images` a mask (the label given as the image)", mask_as_image, lambda w: {"mask.png"})

    def tile_beside_stack(w):
        z = int(np.argmax(label.sum(axis=(1, 2))))
        sitk.WriteImage(sitk.GetImageFromArray(volume.array[z], isVector=True), str(w / "tile.png"))
        sitk.WriteImage(sitk.GetImageFromArray(label[z] * np.uint8(255)), str(w / "tile_mask.png"))
        return cli("train", "--images", w / "tile.png", b.image, "--labels", w / "tile_mask.png", b.label, "--out",
                   w / "m.model", "--max-iters", 1, "--device", "cpu", "--quiet", cwd=w)
    b.case("train on a PNG tile (no pixel size) beside a stack", tile_beside_stack,
           lambda w: {"tile.png", "tile_mask.png", "m.model"})
    b.case("train `--val-images` one of the training images",
           lambda w: cli("train", "--images", b.image, "--labels", b.label, "--val-images", b.image, "--val-labels",
                         b.label, "--out", w / "m.model", "--max-iters", 1, "--device", "cpu", "--quiet", cwd=w),
           lambda w: {"m.model"})

    def labels_swapped(w):
        volume_io.write_rgb_volume(w / "crop.nrrd", volume_io.Volume(volume.array[:, :24, :24].copy(),
                                                                      volume.geometry))
        volume_io.write_labelmap(w / "crop_label.nrrd", label[:, :24, :24], volume.geometry)
        return cli("train", "--images", b.image, w / "crop.nrrd", "--labels", w / "crop_label.nrrd", b.label,
                   "--out", w / "m.model", "--max-iters", 1, "--device", "cpu", "--quiet", cwd=w)
    b.case("train with the labels of two images given in the wrong order", labels_swapped,
           lambda w: {"crop.nrrd", "crop_label.nrrd"})

    # From a new-user pass with real H&E tiles the same day.
    def antialiased_strokes(w):
        rimmed = strokes.copy()
        background = rimmed == 2
        rim = np.zeros_like(background)
        rim[:, 1:] |= background[:, :-1]  # a brush's soft edge on either side of each stroke
        rim[:, :-1] |= background[:, 1:]
        rimmed[rim & (rimmed == 0)] = 1
        volume_io.write_labelmap(w / "rimmed.nrrd", rimmed, volume.geometry)
        return cli("segment", "--image", b.image, "--scribbles", w / "rimmed.nrrd", "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment with background strokes rimmed by 1s (an antialiased brush)", antialiased_strokes,
           lambda w: {"rimmed.nrrd", "o.seg.nrrd"})
    def label_as_strokes(w):
        volume_io.write_labelmap(w / "label.nrrd", label, volume.geometry)
        return cli("evaluate", "--prediction", b.label, "--label", w / "label.nrrd", "--ignore-scribbles",
                   w / "label.nrrd", cwd=w)
    b.case("evaluate `--ignore-scribbles` the label itself (a labelmap)", label_as_strokes, lambda w: {"label.nrrd"})
    b.case("segment `--spacing 0.62 0.62 1.24` (micrometres given as mm)",
           lambda w: cli(*b.segment(w / "o.seg.nrrd", "--spacing", 0.62, 0.62, 1.24), cwd=w), lambda w: {"o.seg.nrrd"})

    # From a new-user pass with real-world file formats (2026-12-06).
    def label_named_in_cyrillic(w):
        lung = np.zeros_like(label)
        lung[:, :3, :3] = 1
        volume_io.write_segmentation(w / "l.seg.nrrd", [("Gland", label, volume_io.HEART_COLOR),
                                                        ("Lumen", lung, (0.5, 0.5, 0.5))], volume.geometry)
        data = (w / "l.seg.nrrd").read_bytes()
        end = data.index(b"\n\n")  # the names as Slicer writes them: UTF-8 in the header
        head = data[:end].replace(b"_Name:=Gland", "_Name:=Сердце".encode()).replace(b"_Name:=Lumen",
                                                                                  "_Name:=Лёгкое".encode())
        (w / "l.seg.nrrd").write_bytes(head + data[end:])
        return cli("evaluate", "--prediction", b.label, "--label", w / "l.seg.nrrd", cwd=w)
    b.case("evaluate a label whose two segments are named in Cyrillic (heart and lung)", label_named_in_cyrillic,
           lambda w: {"l.seg.nrrd"})

    def strokes_half_a_voxel_off(w):
        g = volume.geometry
        axes = np.asarray(g.direction).reshape(3, 3) * np.asarray(g.spacing)
        off = volume_io.Geometry(g.spacing, tuple(np.asarray(g.origin) + axes @ (0.5, 0.0, 0.0)), g.direction)
        volume_io.write_labelmap(w / "s.nrrd", strokes, off)
        return cli("segment", "--image", b.image, "--scribbles", w / "s.nrrd", "--model", b.model, "--out",
                   w / "o.seg.nrrd", "--device", "cpu", "--quiet", "--no-cache", cwd=w)
    b.case("segment with strokes half a voxel off the image's grid", strokes_half_a_voxel_off,
           lambda w: {"s.nrrd", "o.seg.nrrd"})


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="scribbleseg-reliability-"))
    try:
        battery = Battery(base)
        run_battery(battery)
        print(battery.table())
    finally:
        if args.keep:
            print(f"work folder: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
