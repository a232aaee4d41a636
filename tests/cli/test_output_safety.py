"""Output safety: a run that must not or cannot write its outputs (an existing file without
--overwrite, an output that is an input under any name, a read-only folder, a full disk while
saving) exits 1 with one ``nst-jax: error:`` line naming the file and the reason, and leaves
every file that existed before byte-identical with its mtime unchanged, and no temporary file.

The tests run as root, which ignores permission bits: the read-only folder is a read-only bind
mount in a private mount namespace (``unshare -m``; else ``chattr +i``; else skipped), and the
full disk a small tmpfs filled to the last page in such a namespace (else a file size limit,
RLIMIT_FSIZE, which fails the same writes with EFBIG).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA

pytestmark = pytest.mark.slow  # every test here runs nst-jax in a subprocess

CONTENT, STYLE = DATA / "chelsea.png", DATA / "starry_night.png"
SMALL = ["--weights", "random", "--size", "32", "--iterations", "2", "--tol", "0", "-q"]
CLI = [sys.executable, "-m", "nst_jax.cli"]
TEMPORARY = re.compile(r"(\.tmp$|\.part$|^\.part-|^\.pip-|^\.nst-jax-probe-)")
OLD = 1_000_000_000  # the mtime given to every file that exists before a run (2001)


def environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NST_JAX_")}
    env.update(XDG_CACHE_HOME=str(folder / "cache"), NST_JAX_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]),
                                           env.get("PYTHONPATH", "")]))
    return env


def run(args, folder: Path, prefix=(), **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *CLI, *map(str, args)], cwd=folder, env=environment(folder),
                          capture_output=True, text=True, timeout=300, check=False, **kwargs)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (hidden ones too): its bytes and mtime (ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and "cache" not in p.parts}


def populate(folder: Path, files: dict[str, Path | bytes]) -> dict[str, tuple[bytes, int]]:
    """Create the files that exist before the run (old mtimes) and return their snapshot."""
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
        os.utime(path, ns=(OLD * 10**9, OLD * 10**9))
    return snapshot(folder)


def error_line(stderr: str) -> str:
    """The one error line; nothing else may mention an error, no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("nst-jax: error: "), stderr
    return errors[0]


def assert_refused(proc, folder: Path, before, *needles: str) -> str:
    assert proc.returncode == 1, proc.stderr
    line = error_line(proc.stderr)
    for needle in needles:
        assert needle in line, line
    assert snapshot(folder) == before  # bytes and mtimes of everything that was there
    assert [p for p in folder.rglob("*") if TEMPORARY.search(p.name)] == []
    return line


# ------------------------------------------------------------------ existing outputs


@pytest.mark.parametrize("args, needles", [
    (["stylize", CONTENT, STYLE, "-o", "out.png"],
     ["out.png: already exists; pass --overwrite"]),
    (["stylize", CONTENT, STYLE, "-o", "new.png", "--log", "log.json"],
     ["log.json: already exists; pass --overwrite"]),
    (["stylize", CONTENT, STYLE, "-o", "new.png", "--checkpoint-every", "1"],
     ["new.ckpt.npz: a checkpoint of an earlier run exists; pass --resume"]),
    (["stylize", CONTENT, STYLE, "-o", "new.png", "--save-every", "1"],
     ["new_00001.png: intermediate image exists; pass --overwrite"]),
    (["sweep", CONTENT, STYLE, "-o", "runs"], ["runs/000_run.png: already exists"]),
    (["stylize-frames", "frames", STYLE, "-o", "styled"],
     ["styled/f0.png: already exists; pass --skip-existing", "or --overwrite"]),
], ids=["image", "log", "checkpoint", "intermediate", "sweep", "frames"])
def test_an_existing_output_needs_overwrite(args, needles, tmp_path):
    before = populate(tmp_path, {
        "out.png": CONTENT, "log.json": b"{}", "new.ckpt.npz": b"an earlier checkpoint",
        "new_00001.png": STYLE, "runs/000_run.png": STYLE, "frames/f0.png": CONTENT,
        "styled/f0.png": STYLE})
    assert_refused(run([*args, *SMALL], tmp_path), tmp_path, before, *needles)


# ------------------------------------------------------------------ an input as output


@pytest.mark.parametrize("args, needles", [
    (["stylize", "content.png", STYLE, "-o", "content.png"],
     ["content.png: the output would overwrite the input content.png"]),
    (["stylize", "content.png", STYLE, "-o", "hard.png"],  # a hard link to the content
     ["hard.png: the output would overwrite the input content.png"]),
    (["stylize", "soft.png", STYLE, "-o", "content.png"],  # the content through a symlink
     ["content.png: the output would overwrite the input soft.png"]),
    (["stylize", "content.png", "style.png", "-o", "out.png", "--log", "style.png"],
     ["style.png: the output would overwrite the input style.png"]),
    (["stylize", "content.png", "style.png", "-o", "out.png", "--checkpoint", "hard.png",
      "--checkpoint-every", "1"],
     ["hard.png: the output would overwrite the input content.png"]),
], ids=["same-path", "hard-link", "symlink", "log", "checkpoint"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(args, needles, tmp_path):
    populate(tmp_path, {"content.png": CONTENT, "style.png": STYLE})
    os.link(tmp_path / "content.png", tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to("content.png")
    before = snapshot(tmp_path)
    assert_refused(run([*args, *SMALL, "--overwrite"], tmp_path), tmp_path, before, *needles)


# ------------------------------------------------------------------ a read-only folder


def _read_only(folder: Path):
    """(command prefix, cleanup) that make ``folder`` read-only for the run, even for root:
    a read-only bind mount in a private mount namespace, else the immutable attribute."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && '
                            'mount -o remount,bind,ro "$0" && ! touch "$0/.probe" 2>/dev/null',
                            str(folder)], capture_output=True, check=False) \
        if shutil.which("unshare") else None
    if probe is not None and probe.returncode == 0:
        return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && '
                'mount -o remount,bind,ro "$0" && exec "$@"', str(folder)], lambda: None
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)],
                                                 capture_output=True).returncode == 0:
        return [], lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    pytest.skip("cannot make a folder read-only for root here: no private mount namespace "
                f"(unshare -m: {probe.stderr.decode().strip() if probe else 'missing'}) and "
                "no chattr +i")


@pytest.mark.parametrize("args, needles", [
    (["stylize", CONTENT, STYLE, "-o", "ro/out.png", "--overwrite"],
     ["ro/out.png: folder ro is not writable ("]),
    (["stylize", CONTENT, STYLE, "-o", "ro/new.png", "--checkpoint-every", "1"],
     ["ro/new.ckpt.npz: folder ro is not writable ("]),
    (["sweep", CONTENT, STYLE, "-o", "ro/runs"], ["ro/runs: cannot create folder ("]),
], ids=["image", "checkpoint", "sweep-folder"])
def test_a_read_only_folder_is_refused_before_any_compute(args, needles, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    before = populate(tmp_path, {"ro/out.png": CONTENT, "ro/other.png": STYLE})
    prefix, cleanup = _read_only(folder)
    try:
        proc = run([*args, *SMALL], tmp_path, prefix=prefix)
    finally:
        cleanup()
    line = assert_refused(proc, tmp_path, before, *needles)
    assert re.search(r"\((Read-only file system|Operation not permitted|Permission denied)\)",
                     line), line
    assert "compiling" not in proc.stderr  # refused before any compute


# ------------------------------------------------------------------ a full disk


# Runs inside the private mount namespace, where ``folder`` is a fresh small tmpfs: creates the
# files that exist before the run, fills the rest of the tmpfs, runs nst-jax and reports the
# snapshots before and after (the tmpfs vanishes with the namespace).
_FULL_DISK_DRIVER = r"""
import base64, json, os, subprocess, sys
folder, files, command = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
for name, data in files.items():
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write(base64.b64decode(data))
    os.utime(os.path.join(folder, name), ns=(10**18, 10**18))
fd = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"\0" * 4096)
except OSError:
    pass
os.close(fd)
def snapshot():
    return {n: [base64.b64encode(open(os.path.join(folder, n), "rb").read()).decode(),
                os.stat(os.path.join(folder, n)).st_mtime_ns] for n in sorted(os.listdir(folder))}
before = snapshot()
proc = subprocess.run(command, capture_output=True, text=True)
print(json.dumps({"code": proc.returncode, "stderr": proc.stderr, "before": before,
                  "after": snapshot()}))
"""


def _run_on_full_disk(args, tmp_path: Path, files: dict[str, Path]):
    """Run nst-jax with ``full/`` out of space; returns (code, stderr, before, after, reason)."""
    folder = tmp_path / "full"
    folder.mkdir()
    import base64

    encoded = {name: base64.b64encode(path.read_bytes()).decode() for name, path in files.items()}
    namespace = ["unshare", "-m", "sh", "-c",
                 'mount -t tmpfs -o size=512k tmpfs "$0" && exec "$@"', str(folder)]
    probe = subprocess.run([*namespace, "true"], capture_output=True, check=False) \
        if shutil.which("unshare") else None
    if probe is not None and probe.returncode == 0:
        proc = subprocess.run([*namespace, sys.executable, "-c", _FULL_DISK_DRIVER, str(folder),
                               json.dumps(encoded), *CLI, *map(str, args)], cwd=tmp_path,
                              env=environment(tmp_path), capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        return (report["code"], report["stderr"], report["before"], report["after"],
                "[Errno 28] No space left on device")
    # No mount namespace: a file size limit makes every write past 1 KiB fail (EFBIG; Python
    # ignores SIGXFSZ), which takes the same path through the writer.
    before = populate(folder, files)
    env = environment(tmp_path)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # its writes would fail too

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    proc = subprocess.run([*CLI, *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False, preexec_fn=limit)
    return proc.returncode, proc.stderr, before, snapshot(folder), "[Errno 27] File too large"


@pytest.mark.parametrize("args, what", [
    (["stylize", CONTENT, STYLE, "-o", "full/out.png", "--overwrite"],
     "full/out.png: cannot write image"),
    (["stylize", CONTENT, STYLE, "-o", "full/out.png", "--overwrite", "--checkpoint-every",
      "1"], "full/out.ckpt.npz: cannot write checkpoint"),
], ids=["image", "checkpoint"])
def test_a_full_disk_while_saving_keeps_the_old_files(args, what, tmp_path):
    code, stderr, before, after, reason = _run_on_full_disk(
        [*args, *SMALL], tmp_path, {"out.png": STYLE, "out.ckpt.npz": CONTENT})
    assert code == 1, stderr
    assert "compiling" in stderr  # the run itself went ahead: the disk filled while saving
    line = error_line(stderr)
    assert line == f"nst-jax: error: {what} ({reason})", line
    assert after == before  # the old image and checkpoint untouched, no temporary file
