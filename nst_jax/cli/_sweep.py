"""``nst-jax sweep``: every combination of the listed weights, seeds and styles as one batched,
compiled job; writes each image, a contact sheet, the loss curves and ``sweep.json``."""

from __future__ import annotations

from typing import Any

from .._errors import NstError
from .._files import same_file
from .._version import __version__
from . import _signals
from ._common import Progress, make_output_folder, prepare, say, write_json
from ._parser import PROG


def sweep_grid(args) -> list[dict[str, Any]]:
    """One dict per run: every combination of the listed values (styles outermost)."""
    return [
        {"style": s, "content_weight": c, "style_weight": w, "tv_weight": t, "seed": seed}
        for s in range(len(args.styles)) for c in args.content_weight
        for w in args.style_weight for t in args.tv_weight for seed in args.seed
    ]


def run_label(run: dict[str, Any], args, *, with_style: bool = True) -> str:
    """A short name for one run: the values that vary across the sweep."""
    parts = []
    if with_style and len(args.styles) > 1:
        parts.append(args.styles[run["style"]].stem)
    for key, short in (("content_weight", "cw"), ("style_weight", "sw"), ("tv_weight", "tv"),
                       ("seed", "seed")):
        if len(getattr(args, key)) > 1:
            parts.append(f"{short}{run[key]:g}")
    return "_".join(parts) or "run"


def command(args) -> int:
    import numpy as np

    from .._objective import default_weights
    from .._plots import loss_plot
    from ..images import save_image
    from ..quality import contact_sheet
    from ..run import stylize_batch

    grid = sweep_grid(args)
    labels = [f"{i:03d}_{run_label(run, args)}" for i, run in enumerate(grid)]
    outdir = args.output
    names = [f"{label}.png" for label in labels] + [
        "contact_sheet.png", "loss_curves.png", "sweep.json"]
    if outdir.exists() and not outdir.is_dir():
        raise NstError(f"{outdir}: exists and is not a folder")
    existing = [name for name in names if (outdir / name).exists()]
    if existing and not args.overwrite:
        raise NstError(f"{outdir / existing[0]}: already exists; pass --overwrite to replace it")
    for style in (args.content, *args.styles):
        if same_file(outdir, style.parent) and f"{style.stem}.png" in names:
            raise NstError(f"{style}: an output would overwrite this input")
    make_output_folder(outdir)
    prepared = prepare(args, args.styles, batch=len(grid))
    _signals.check()
    meta = {"weights": prepared.record, "settings": prepared.settings}
    progress = Progress(args.iterations, args.quiet)
    for run in grid:  # the size-aware defaults: the same balance at every size
        run["content_weight"], run["tv_weight"] = default_weights(
            prepared.config, prepared.content.shape, content=run["content_weight"],
            tv=run["tv_weight"])

    def callback(state, records):
        # The bar follows the slowest lane (the job ends with it) and shows the best loss.
        best = int(np.argmin(np.asarray(state.loss)))
        progress.update(int(np.max(state.iteration)), float(state.loss[best]),
                        np.asarray(state.terms[best]), int(np.sum(state.evaluations)))
        return _signals.requested() is not None

    try:
        result = stylize_batch(
            prepared.content, prepared.styles, params=prepared.weights, config=prepared.config,
            solver=prepared.solver,
            content_weight=[r["content_weight"] for r in grid],
            style_weight=[r["style_weight"] for r in grid],
            tv_weight=[r["tv_weight"] for r in grid],
            style_layer_weights=args.style_layer_weights,
            style_index=[r["style"] for r in grid], seeds=[r["seed"] for r in grid],
            init=args.init, iterations=args.iterations, tol=args.tol, patience=args.patience,
            callback=callback)
        _signals.check()
    except _signals.Interrupted as interrupt:
        progress.close()
        say(f"{PROG}: interrupted ({interrupt}); the sweep's images are written only when "
            "every run has finished, so nothing was written")
        return interrupt.exit_code
    progress.close()
    history = result.history
    runs = []
    for i, (run, label) in enumerate(zip(grid, labels)):
        summary = {**run, "style": str(args.styles[run["style"]]),
                   "iterations": int(result.iterations[i]),
                   "evaluations": int(result.evaluations[i]), "status": result.status[i],
                   "loss": float(history["loss"][-1, i])}
        save_image(outdir / f"{label}.png", result.images[i], metadata={**meta, "run": summary})
        runs.append({"file": f"{label}.png", **summary,
                     "history": {k: np.asarray(history[k][:, i]).tolist()
                                 for k in ("loss", "content", "style", "tv", "evaluations")}})
    # One row per style image, one column per combination of weights and seeds.
    per_style = len(grid) // len(args.styles)
    rows = [list(result.images[i:i + per_style]) for i in range(0, len(grid), per_style)]
    columns = [run_label({**run, "style": 0}, args, with_style=False)
               for run in grid[:per_style]]
    save_image(outdir / "contact_sheet.png", np.asarray(contact_sheet(
        rows, [p.stem for p in args.styles] if len(args.styles) > 1 else None, columns),
        np.float32))
    write_json(outdir / "sweep.json", {
        "nst_jax": __version__, **meta,
        "devices": result.devices, "compile_seconds": round(result.compile_seconds, 3),
        "seconds": np.asarray(history["seconds"]).tolist(), "runs": runs,
    })
    plot = loss_plot([history["loss"][:, i] for i in range(len(grid))], labels)
    if plot is None:
        say(f"{PROG}: loss_curves.png needs matplotlib: pip install 'nst-jax[plots]'")
    else:
        save_image(outdir / "loss_curves.png", plot)
    say(f"{len(grid)} runs on {result.devices} device(s): wrote {outdir}/ (images, "
        "contact_sheet.png, loss_curves.png, sweep.json)")
    return 0
