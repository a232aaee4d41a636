"""Score stylized images layer by layer, and run a quality sweep of CLI configurations.

Commands (from the repository root, with the venv active)::

    # every figure of one output (photo at the output's size; painting at --size)
    python scripts/quality.py score OUT.png examples/chelsea.jpg examples/starry_night.jpg \
        --weights auto

    # every configuration on every photo/painting pair (default: the 10 pairs below)
    python scripts/quality.py run --out quality_run --size 512 --iterations 500 \
        --weights auto --config default="" [--config adam="--optimizer adam"] \
        [--pairs tune | held-out | chelsea:starry_night,camera:great_wave] [--jobs 1]

``--config NAME="CLI OPTIONS"`` (repeatable) names a set of ``nst-jax stylize`` options; each run
is ``nst-jax stylize PHOTO PAINTING -o OUT/<config>/<pair>.png --size S --iterations N
--weights W --log OUT/<config>/<pair>.json --overwrite -q <options>`` in a subprocess
(``python -m nst_jax.cli`` when the console script is not next to this Python). Without
``--config`` the one configuration is ``default=""``. ``--pairs`` takes PHOTO:PAINTING items,
each a path or the stem of a file in ``examples/``, or the name of a set of the default pairs.
``--weights`` takes what ``nst-jax stylize --weights`` takes (default ``$NST_JAX_WEIGHTS``, else
``auto``); ``random`` scores with seeded random VGG-19 weights (a number that says nothing about
quality).

Outputs of ``run`` in ``--out``: ``<config>/<pair>.png`` / ``.json`` / ``.txt`` (image, CLI log,
stdout and stderr); ``quality.json`` (every number and the exact command of each run);
``quality.md`` (per configuration the worst value over the pairs of each figure and how many
pairs meet every bound, then a per-pair table); ``contact_sheet.jpg`` (rows = pairs: photo,
painting, then each configuration) at the run's own size, so a 512-px run shows what users
get (``--sheet-zoom`` enlarges small sizes nearest-neighbour).

Default pairs: ``tune`` (used to choose the defaults) astronaut / The Scream, chelsea / The
Starry Night, coffee / Composition VII, camera / The Great Wave; ``held-out`` (run once, to
check) rocket / The Shipwreck, hubble_deep_field / The Starry Night, brick / The Great Wave,
camera / The Shipwreck, coffee / The Scream, astronaut / Composition VII. ``--jax-cache DIR``
shares a persistent compilation cache between the runs.

Figures (``nst_jax.quality``), each against its own scale, with the bounds of BOUNDS:
relu1_1 ... relu5_1 (``PairScorer``: relative Gram error ``|G - A|_F / |A|_F``, Grams per
position, the painting scaled to the output's longest side; <= 0.30 for relu1_1-relu4_1,
<= 0.80 for relu5_1), colour (sliced Wasserstein-1 distance of the RGB distributions to the
painting's, 64 fixed directions, 0-255; <= 15), content (relu4_2 mean squared difference to
the photo as a fraction of the painting's; <= 0.46), grid (an added 4-32 px block lattice;
<= 0.1), saturation (fraction of pixels with a channel at 0 or 255; <= 0.1); and, without a
bound, change (mean |output - photo|) and the old style distance (the style loss summed with
the Gatys weights, relative to the photo's: it cannot see a layer that is not matched).

Runtime on the 2-core CPU machine: a default 512-px run is one process of about 2-4 minutes
(start-up, compiles and five scales), so the 10 pairs take 30-40 minutes; ``score`` ~10 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
FIGURES = (*LAYERS, "colour", "content", "change", "grid", "saturation", "style_distance")
FIGURE_TITLES = {**{name: "relu" + name[4:] for name in LAYERS}, "colour": "colour",
                 "content": "content", "style_distance": "style distance",
                 "change": "change", "grid": "grid", "saturation": "saturation"}
#: The bounds the default must meet on every pair (each layer against its own scale).
BOUNDS = {**dict.fromkeys(LAYERS[:4], 0.30), "conv5_1": 0.80, "colour": 15.0, "content": 0.46,
          "grid": 0.1, "saturation": 0.10}

#: (photo, painting, kind, set): the defaults were tuned on the "tune" pairs only; the
#: "held-out" ones (among them the only pairs with The Shipwreck) were run once, to check.
DEFAULT_PAIRS: tuple[tuple[str, str, str, str], ...] = (
    ("astronaut", "the_scream", "portrait / Munch", "tune"),
    ("chelsea", "starry_night", "animal / van Gogh", "tune"),
    ("coffee", "composition_vii", "still life / Kandinsky (flat colour)", "tune"),
    ("camera", "great_wave", "grey-scale portrait / Hokusai", "tune"),
    ("rocket", "shipwreck", "industrial landscape / Turner", "held-out"),
    ("hubble_deep_field", "starry_night", "night sky / van Gogh", "held-out"),
    ("brick", "great_wave", "texture / Hokusai", "held-out"),
    ("camera", "shipwreck", "grey-scale portrait / Turner", "held-out"),
    ("coffee", "the_scream", "still life / Munch", "held-out"),
    ("astronaut", "composition_vii", "portrait / Kandinsky (flat colour)", "held-out"),
)
PAIR_SETS = {"tune": [p for p in DEFAULT_PAIRS if p[3] == "tune"],
             "held-out": [p for p in DEFAULT_PAIRS if p[3] == "held-out"]}


# --------------------------------------------------------------------------------------------
# inputs


def find_image(spec: str) -> Path:
    """A path, or the stem (or file name) of an image in ``examples/``."""
    path = Path(spec)
    if path.is_file():
        return path.resolve()
    for candidate in (EXAMPLES / spec, *(EXAMPLES / f"{spec}{ext}"
                                         for ext in (".jpg", ".jpeg", ".png"))):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"quality.py: no image {spec!r} (not a file, not in {EXAMPLES})")


def parse_pairs(text: str | None) -> list[dict[str, Any]]:
    """PHOTO:PAINTING,... items, or "tune" / "held-out" (a set of DEFAULT_PAIRS); None: all."""
    kinds = {(p, s): (k, part) for p, s, k, part in DEFAULT_PAIRS}
    if text in PAIR_SETS:
        items = [f"{p}:{s}" for p, s, _, _ in PAIR_SETS[text]]
    else:
        items = ([f"{p}:{s}" for p, s, _, _ in DEFAULT_PAIRS] if text is None
                 else [t.strip() for t in text.split(",") if t.strip()])
    pairs, names = [], set()
    for item in items:
        photo, sep, painting = item.rpartition(":")
        if not sep or not photo or not painting:
            raise SystemExit(f"quality.py: --pairs item {item!r} is not PHOTO:PAINTING")
        photo_path, painting_path = find_image(photo), find_image(painting)
        name = f"{photo_path.stem}-{painting_path.stem}"
        if name in names:
            raise SystemExit(f"quality.py: pair {name} given twice")
        names.add(name)
        kind, part = kinds.get((photo_path.stem, painting_path.stem), ("", ""))
        pairs.append({"name": name, "photo": str(photo_path), "painting": str(painting_path),
                      "kind": kind, "set": part})
    return pairs


def parse_configs(items: list[str] | None) -> dict[str, list[str]]:
    configs: dict[str, list[str]] = {}
    for item in items or ['default=']:
        name, sep, options = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise SystemExit(f"quality.py: --config {item!r}: expected NAME=\"CLI OPTIONS\" "
                             "with NAME made of letters, digits and _.+-")
        if name in configs:
            raise SystemExit(f"quality.py: --config {name} given twice")
        configs[name] = shlex.split(options)
    return configs


def weights_spec(given: str | None) -> str:
    return given or os.environ.get("NST_JAX_WEIGHTS") or "auto"


def load_params(spec: str) -> tuple[Any, Any]:
    """(params, preprocessing) for scoring, as ``nst-jax stylize --weights SPEC`` finds them."""
    from nst_jax.weights import resolve_weights

    weights = resolve_weights(spec, notify=print, warn=print)
    return weights.params, weights.preprocessing


# --------------------------------------------------------------------------------------------
# score


def cmd_score(args: argparse.Namespace) -> int:
    import numpy as np

    import nst_jax
    from nst_jax import quality

    output = nst_jax.load_image(args.output)
    size = args.size or max(output.shape[:2])
    photo = nst_jax.load_image(args.photo, max_side=max(output.shape[:2]))
    style = nst_jax.load_image(args.style, max_side=size)
    params, preprocessing = load_params(weights_spec(args.weights))
    figures = figures_of(output, photo, style, quality.PairScorer(
        photo, style, params=params, preprocessing=preprocessing),
        quality.StyleScorer(style, params=params, preprocessing=preprocessing))
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"output {args.output}: {output.shape[1]}x{output.shape[0]}; painting at {size} px")
    for name in LAYERS:
        print(f"relu{name[4:]} Gram error {figures[name]:.3f}   (|G - A|_F / |A|_F; bound "
              f"{BOUNDS[name]:g})")
    print(f"colour          {figures['colour']:.2f}   (sliced W1 to the painting's RGB, 0-255)")
    print(f"content         {figures['content']:.3f}   (relu4_2 MSE to the photo / the "
          "painting's)")
    print(f"change          {figures['change']:.2f}   (mean |output - photo|, 0-255)")
    print(f"grid            {figures['grid']:+.3f}   (block lattice added; photo "
          f"{quality.block_grid(np.asarray(photo)):.3f})")
    print(f"saturation      {figures['saturation']:.4f}   (fraction of clipped pixels)")
    print(f"style distance  {figures['style_distance']:.4f}   (the objective-weighted sum; 1 = "
          "the photo's)")
    return 0


def figures_of(image, photo, painting, pair_scorer, style_scorer) -> dict[str, float]:
    """Every figure of one output, flat: per-layer Gram errors, colour, content, change,
    grid, saturation, style distance (``nst_jax.quality``)."""
    from nst_jax import quality

    layered = pair_scorer.figures(image)
    return {**layered["gram_errors"], "colour": layered["colour"],
            "content": layered["content"],
            **quality.score(image, photo, painting, scorer=style_scorer)}


def within_bounds(figures: dict[str, float]) -> list[str]:
    """The figures of one output that break :data:`BOUNDS` (empty: all met)."""
    return [name for name, bound in BOUNDS.items() if figures.get(name, math.inf) > bound]


# --------------------------------------------------------------------------------------------
# run


def cli_prefix() -> list[str]:
    script = Path(sys.executable).parent / ("nst-jax.exe" if os.name == "nt" else "nst-jax")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nst_jax.cli"]


def read_log(path: Path) -> dict[str, Any]:
    """wall seconds (iterations only, every scale), iterations, evaluations (per iteration),
    compile seconds; missing -> None. Multi-scale logs hold one history per scale."""
    try:
        log = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    histories = [scale["history"] for scale in log.get("scales", [])] or [log.get("history") or {}]
    seconds = [h["seconds"][-1] for h in histories if h.get("seconds")]
    iterations, evaluations = log.get("iterations"), log.get("evaluations")
    if isinstance(iterations, list):
        iterations, evaluations = sum(iterations), sum(evaluations)
    per = (evaluations / iterations
           if isinstance(iterations, (int, float)) and iterations
           and isinstance(evaluations, (int, float)) else None)
    return {"wall_seconds": float(sum(seconds)) if seconds else None,
            "iterations": iterations, "evaluations": evaluations,
            "evaluations_per_iteration": per,
            "compile_seconds": log.get("compile_seconds"), "status": log.get("status")}


def one_run(job: dict[str, Any], timeout: float, env: dict[str, str]) -> dict[str, Any]:
    out, log, text = Path(job["output"]), Path(job["log_path"]), Path(job["stdout_path"])
    for stale in (out, log):
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    record: dict[str, Any] = {}
    try:
        proc = subprocess.run(job["argv"], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=ROOT)
        record["returncode"] = proc.returncode
        stdout, stderr = proc.stdout, proc.stderr
        if proc.returncode != 0:
            lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
            record["error"] = lines[-1] if lines else f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired as err:
        record["returncode"] = None
        record["error"] = f"timed out after {timeout:g} s"
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
    except OSError as err:
        record["returncode"] = None
        record["error"] = f"could not start: {err}"
        stdout = stderr = ""
    record["process_seconds"] = round(time.perf_counter() - start, 2)
    text.write_text(f"$ {job['command']}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    if "error" not in record and not out.is_file():
        record["error"] = "no output image written"
    record["status"] = "failed" if "error" in record else "ok"
    record["log"] = read_log(log)
    return record


def summary_rows(records: list[dict[str, Any]], configs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        runs = [r for r in records if r["config"] == config]
        ok = [r for r in runs if r["status"] == "ok" and r.get("figures")]
        row: dict[str, Any] = {"config": config, "runs": len(runs), "ok": len(ok)}
        for fig in FIGURES:
            values = [r["figures"][fig] for r in ok]
            row[fig] = ({"mean": sum(values) / len(values), "worst": max(values)}
                        if values else {"mean": None, "worst": None})
        for key in ("wall_seconds", "evaluations_per_iteration", "compile_seconds"):
            values = [r["log"][key] for r in ok if r["log"].get(key) is not None]
            row[key] = sum(values) / len(values) if values else None
        values = [r["process_seconds"] for r in ok]
        row["process_seconds"] = sum(values) / len(values) if values else None
        row["within_bounds"] = sum(not within_bounds(r["figures"]) for r in ok)
        rows.append(row)
    return rows


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


FORMATS = {**dict.fromkeys(LAYERS, ".2f"), "colour": ".1f", "content": ".2f",
           "style_distance": ".3f", "change": ".1f", "grid": "+.2f", "saturation": ".3f"}


def markdown(meta: dict[str, Any], summary: list[dict[str, Any]],
             records: list[dict[str, Any]]) -> str:
    bounds = ", ".join(f"{FIGURE_TITLES[k]} <= {v:g}" for k, v in BOUNDS.items())
    lines = [
        "# Style transfer quality sweep", "",
        f"{len(meta['pairs'])} photo/painting pairs at {meta['size']} px, "
        f"{meta['iterations']} iterations, weights `{meta['weights']}`. relu*: relative Gram "
        "error |G - A|_F / |A|_F of that layer (Grams per position, the painting at the "
        "output's longest side); colour: sliced Wasserstein-1 distance of the RGB "
        "distributions to the painting's (64 directions, 0-255); content: relu4_2 mean "
        "squared difference to the photo as a fraction of the painting's; change: mean "
        "|output - photo|; grid: block lattice added over the photo's; saturation: fraction "
        "of clipped pixels; style distance: the objective-weighted sum of the old yardstick "
        f"(1 = the photo's). Bounds: {bounds}. *Worst* is the largest value over the pairs. "
        "Process: seconds of the whole command (start-up, weights, compiles, every scale); "
        "wall: iterations only (`history.seconds`).", "",
        "| config | ok | within bounds | " + " | ".join(f"{FIGURE_TITLES[f]} worst"
                                                      for f in FIGURES)
        + " | process s | wall s | compile s | options |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in FIGURES) + " | ---: | ---: | ---: | --- |",
    ]
    for row in summary:
        cells = [row["config"], f"{row['ok']}/{row['runs']}", f"{row['within_bounds']}/{row['runs']}"]
        cells += [fmt(row[fig]["worst"], FORMATS[fig]) for fig in FIGURES]
        cells += [fmt(row["process_seconds"], ".0f"), fmt(row["wall_seconds"], ".0f"),
                  fmt(row["compile_seconds"], ".1f"),
                  f"`{shlex.join(meta['configs'][row['config']])}`"
                  if meta["configs"][row["config"]] else "(none)"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Per pair", "",
              "| pair | kind | set | config | " + " | ".join(FIGURE_TITLES[f] for f in FIGURES)
              + " | process s | iterations | status |",
              "| --- | --- | --- | --- | " + " | ".join("---:" for _ in FIGURES)
              + " | ---: | ---: | --- |"]
    for r in records:
        figures = r.get("figures") or {}
        log = r["log"]
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')}"
        if figures and r["status"] == "ok":
            broken = within_bounds(figures)
            status = "ok" if not broken else "ok; over bound: " + ", ".join(
                FIGURE_TITLES[b] for b in broken)
        status = status.replace("|", "\\|")
        lines.append("| " + " | ".join([
            r["pair"], r["kind"], r.get("set", ""), r["config"],
            *(fmt(figures.get(f), FORMATS[f]) for f in FIGURES),
            fmt(r.get("process_seconds"), ".0f"), fmt(log.get("iterations"), "d"),
            status]) + " |")
    return "\n".join(lines) + "\n"


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def cmd_run(args: argparse.Namespace) -> int:
    configs = parse_configs(args.config)
    pairs = parse_pairs(args.pairs)
    weights = weights_spec(args.weights)
    out_dir = Path(args.out).resolve()
    prefix = cli_prefix()
    jobs = []
    for config, options in configs.items():
        (out_dir / config).mkdir(parents=True, exist_ok=True)
        for pair in pairs:
            stem = out_dir / config / pair["name"]
            argv = [*prefix, "stylize", pair["photo"], pair["painting"],
                    "-o", f"{stem}.png", "--size", str(args.size),
                    "--iterations", str(args.iterations), "--weights", weights,
                    "--log", f"{stem}.json", "--overwrite", "-q", *options]
            jobs.append({"config": config, "pair": pair["name"], "kind": pair["kind"],
                         "photo": pair["photo"], "painting": pair["painting"],
                         "output": f"{stem}.png", "log_path": f"{stem}.json",
                         "stdout_path": f"{stem}.txt", "argv": argv,
                         "command": shlex.join(argv)})
    env = dict(os.environ)
    if args.jax_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(Path(args.jax_cache).resolve())

    def work(job: dict[str, Any]) -> dict[str, Any]:
        result = one_run(job, args.timeout, env)
        print(f"[{job['config']}] {job['pair']}: {result['status']} in "
              f"{result['process_seconds']:.0f} s"
              + (f" ({result['error']})" if result["status"] != "ok" else ""), flush=True)
        return {**job, **result}

    print(f"{len(jobs)} runs ({len(configs)} configurations x {len(pairs)} pairs), "
          f"{args.jobs} at a time; outputs in {out_dir}", flush=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        records = list(pool.map(work, jobs))
    run_seconds = time.perf_counter() - started

    # Score (in this process, after the runs, so it does not compete with them for the CPU).
    import nst_jax
    from nst_jax import quality

    params, preprocessing = load_params(weights)
    photos = {p["name"]: nst_jax.load_image(p["photo"], max_side=args.size) for p in pairs}
    paintings = {p["name"]: nst_jax.load_image(p["painting"], max_side=args.size)
                 for p in pairs}
    scorers: dict[str, tuple[Any, Any]] = {}
    outputs: dict[tuple[str, str], Any] = {}
    for r in records:
        if not Path(r["output"]).is_file():
            continue
        try:
            image = nst_jax.load_image(r["output"])
            photo, painting = photos[r["pair"]], paintings[r["pair"]]
            if r["pair"] not in scorers:
                scorers[r["pair"]] = (
                    quality.PairScorer(photo, painting, params=params,
                                       preprocessing=preprocessing),
                    quality.StyleScorer(painting, params=params, preprocessing=preprocessing))
            r["figures"] = figures_of(image, photo, painting, *scorers[r["pair"]])
            outputs[(r["config"], r["pair"])] = image
        except Exception as err:  # noqa: BLE001 - one bad output must not stop the report
            r["status"] = "failed"
            r["error"] = f"scoring failed: {type(err).__name__}: {err}"
    summary = summary_rows(records, list(configs))

    meta = {"size": args.size, "iterations": args.iterations, "weights": weights,
            "configs": configs, "pairs": pairs, "cli": prefix,
            "python": sys.version.split()[0], "run_seconds": round(run_seconds, 1),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for r in records:
        del r["log_path"], r["stdout_path"]
    (out_dir / "quality.json").write_text(json.dumps(
        json_safe({**meta, "summary": summary, "runs": records}), indent=2) + "\n")
    (out_dir / "quality.md").write_text(markdown(meta, summary, records))

    rows = [[photos[p["name"]], paintings[p["name"]],
             *(outputs.get((c, p["name"])) for c in configs)] for p in pairs]
    labels = [f"{p['name']}" + (f"\n({p['kind']})" if p["kind"] else "") for p in pairs]
    zoom = args.sheet_zoom or max(1, 192 // args.size)
    # At the run's own size (512 px: what users get), as JPEG: a PNG of 10 such rows is ~20 MB.
    quality.contact_sheet(rows, labels, ["photo", "painting", *configs], zoom=zoom).save(
        out_dir / "contact_sheet.jpg", quality=88)

    print((out_dir / "quality.md").read_text().split("\n## Per pair")[0].rstrip())
    print(f"\nwrote {out_dir / 'quality.json'}, {out_dir / 'quality.md'}, "
          f"{out_dir / 'contact_sheet.jpg'} ({run_seconds:.0f} s of runs)")
    return 0 if all(r["status"] == "ok" for r in records) else 1


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quality.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="the four figures of one stylized image")
    s.add_argument("output", help="stylized image")
    s.add_argument("photo", help="content photo (resized to the output's size)")
    s.add_argument("style", help="painting (resized to --size)")
    s.add_argument("--weights", help="as nst-jax's --weights: auto, quantized, random or a .h5 file "
                   "(default: $NST_JAX_WEIGHTS, else auto)")
    s.add_argument("--size", type=int, default=None,
                   help="longest side of the painting when scoring (default: the output's)")
    s.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    s.set_defaults(func=cmd_score)

    r = sub.add_parser("run", help="stylize every pair with every configuration and score them")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--size", type=int, default=128, help="longest side in px (default 128)")
    r.add_argument("--iterations", type=int, default=100, help="per run (default 100)")
    r.add_argument("--weights", help="as nst-jax's --weights: auto, quantized, random or a .h5 file "
                   "(default: $NST_JAX_WEIGHTS, else auto)")
    r.add_argument("--config", action="append", metavar='NAME="OPTIONS"',
                   help='a named set of nst-jax stylize options, repeatable (default: default="")')
    r.add_argument("--pairs", help="PHOTO:PAINTING,... (paths or examples/ stems; default: "
                   + ",".join(f"{p}:{s}" for p, s, _, _ in DEFAULT_PAIRS) + "; or tune, "
                   "held-out)")
    r.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    r.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds per run before it is killed and recorded as failed")
    r.add_argument("--jax-cache", help="JAX persistent compilation cache folder for the runs "
                   "(off by default: compile times then stay comparable)")
    r.add_argument("--sheet-zoom", type=int, default=None,
                   help="enlarge the images of the contact sheet this many times, nearest "
                   "neighbour (default: 192 // size, at least 1)")
    r.set_defaults(func=cmd_run)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
