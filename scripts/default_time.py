"""The default command against the previous default, side by side on one machine: whole
processes timed (start-up, weights, compiles and every scale), and both outputs scored.

Command (repository root, venv active; pretrained weights)::

    python scripts/default_time.py --out default_time --repeats 1 \
        --pairs chelsea:starry_night,astronaut:the_scream

Each pair runs ``nst-jax stylize PHOTO PAINTING -o OUT --size 512`` twice per repeat, the
previous default and the current one, which one first alternating over pairs and repeats (so
that drift and other load on the machine hit both alike): the previous default is one scale at 512 px with the Gatys losses, beta 100, and
alpha and gamma 1 and 200 per 128x128 px (``--content-norm gatys --style-norm gatys
--style-weight 100 --tv-weight <200 * 128^2 / (H W)> --scale-factor 1``; alpha is that
norm's size-aware default); the current one is the plain command. Prints and writes
``default_time.json`` and ``default_time.md`` in ``--out``: seconds of each process, iterations,
the ratio current / previous per pair and over all, and every figure of
``scripts/quality.py`` (``figures_of``). Runtime: about 2 x 3 minutes a pair and repeat on 2
CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402  (scripts/quality.py: pairs, figures, the CLI prefix)


def previous_options(shape: tuple[int, int]) -> list[str]:
    """The options that make today's CLI run the previous default on an (H, W) output."""
    tv = 200.0 * 128 * 128 / (shape[0] * shape[1])
    return ["--content-norm", "gatys", "--style-norm", "gatys", "--style-weight", "100",
            "--tv-weight", repr(tv), "--scale-factor", "1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--pairs", default="chelsea:starry_night,astronaut:the_scream")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--weights", default=None)
    args = parser.parse_args(argv)

    import nst_jax
    from nst_jax import quality

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    weights = q.weights_spec(args.weights)
    prefix = q.cli_prefix()
    runs = []
    for index, pair in enumerate(q.parse_pairs(args.pairs)):
        photo = nst_jax.load_image(pair["photo"], max_side=args.size)
        configs = {"previous": previous_options(photo.shape[:2]), "current": []}
        for repeat in range(args.repeats):
            # Which goes first alternates over pairs and repeats.
            order = list(configs) if (index + repeat) % 2 == 0 else list(configs)[::-1]
            for name in order:
                image = out / f"{pair['name']}_{name}_{repeat}.png"
                argv_ = [*prefix, "stylize", pair["photo"], pair["painting"], "-o", str(image),
                         "--size", str(args.size), "--weights", weights, "--overwrite", "-q",
                         "--log", str(image.with_suffix(".json")), *configs[name]]
                start = time.perf_counter()
                proc = subprocess.run(argv_, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                if proc.returncode != 0:
                    raise SystemExit(f"{' '.join(argv_)} failed:\n{proc.stderr}")
                log = q.read_log(image.with_suffix(".json"))
                runs.append({"pair": pair["name"], "config": name, "repeat": repeat,
                             "seconds": round(seconds, 1), "iterations": log["iterations"],
                             "image": str(image), "command": " ".join(argv_)})
                print(f"{pair['name']} {name}: {seconds:.0f} s, {log['iterations']} iterations",
                      flush=True)
    params, preprocessing = q.load_params(weights)
    for pair in q.parse_pairs(args.pairs):
        photo = nst_jax.load_image(pair["photo"], max_side=args.size)
        painting = nst_jax.load_image(pair["painting"], max_side=args.size)
        scorers = (quality.PairScorer(photo, painting, params=params,
                                      preprocessing=preprocessing),
                   quality.StyleScorer(painting, params=params, preprocessing=preprocessing))
        for run in runs:
            if run["pair"] == pair["name"]:
                run["figures"] = q.figures_of(nst_jax.load_image(run["image"]), photo,
                                              painting, *scorers)
    total = {name: sum(r["seconds"] for r in runs if r["config"] == name)
             for name in ("previous", "current")}
    lines = [f"# The default against the previous default, {args.size} px", "",
             f"Whole `nst-jax stylize` processes, alternating, {args.repeats} repeat(s); "
             f"weights `{weights}`. Ratio = current / previous seconds.", "",
             "| pair | config | seconds | iterations | " + " | ".join(
                 q.FIGURE_TITLES[f] for f in q.FIGURES) + " |",
             "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in q.FIGURES) + " |"]
    for r in runs:
        lines.append(f"| {r['pair']} | {r['config']} | {r['seconds']:.0f} | {r['iterations']} | "
                     + " | ".join(q.fmt(r["figures"][f], q.FORMATS[f]) for f in q.FIGURES)
                     + " |")
    lines += ["", f"Total: previous {total['previous']:.0f} s, current {total['current']:.0f} s,"
              f" ratio {total['current'] / total['previous']:.2f}."]
    (out / "default_time.md").write_text("\n".join(lines) + "\n")
    (out / "default_time.json").write_text(json.dumps(
        q.json_safe({"size": args.size, "weights": weights, "runs": runs, "total": total}),
        indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
