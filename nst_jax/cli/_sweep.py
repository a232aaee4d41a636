"""``nst-jax sweep``: every combination of the listed weights, seeds and styles as one batched,
compiled job, run in chunks of iterations; writes each image, a contact sheet, the loss curves
and ``sweep.json``. A signal ends the job after the chunk in progress: every run's best image so
far and a checkpoint are written, and ``--resume`` continues from it bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import NstError
from .._files import same_file
from . import _signals
from ._common import (
    Progress,
    check_resumable,
    first_state,
    log_header,
    make_output_folder,
    prepare,
    say,
    write_json,
)
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


#: The checkpoint of an interrupted sweep, in its output folder.
CHECKPOINT = "sweep.ckpt.npz"


def check_outputs(args, names: list[str]) -> None:
    """Every file the sweep writes (``names`` and the checkpoint), checked before any compute:
    with ``--resume`` the sweep's own files may exist (the resumed sweep continues them);
    otherwise they need ``--overwrite``. No output may be an input."""
    outdir = args.output
    if outdir.exists() and not outdir.is_dir():
        raise NstError(f"{outdir}: exists and is not a folder")
    check_resumable(outdir / CHECKPOINT, resume=args.resume, overwrite=args.overwrite,
                    what="sweep")
    existing = [name for name in names if (outdir / name).exists()]
    if existing and not (args.overwrite or args.resume):
        raise NstError(f"{outdir / existing[0]}: already exists; pass --overwrite to replace it")
    for style in (args.content, *args.styles):
        if same_file(outdir, style.parent) and f"{style.stem}.png" in names:
            raise NstError(f"{style}: an output would overwrite this input")


def _joined(before: dict, after: dict) -> dict:
    """The history so far (a checkpoint's, or the first call's single row) followed by a
    continuing call's, whose row 0 repeats the last row before it."""
    offset = {"seconds": before["seconds"][-1]}
    return {k: np.concatenate([before[k], after[k][1:] + offset.get(k, 0)]) for k in before}


def command(args) -> int:
    from .._objective import default_weights
    from .._plots import loss_plot
    from ..images import save_image
    from ..quality import contact_sheet
    from ..run import stylize_batch
    from ..run._checkpoint import config_dict, file_fingerprint, remove_stray_temporaries

    grid = sweep_grid(args)
    labels = [f"{i:03d}_{run_label(run, args)}" for i, run in enumerate(grid)]
    outdir, checkpoint = args.output, args.output / CHECKPOINT
    check_outputs(args, [f"{label}.png" for label in labels] + [
        "contact_sheet.png", "loss_curves.png", "sweep.json"])
    make_output_folder(outdir)
    remove_stray_temporaries(checkpoint)  # a SIGKILLed writer cannot remove its own
    prepared = prepare(args, args.styles, batch=len(grid))
    _signals.check()
    meta = prepared.meta
    for run in grid:  # the size-aware defaults: the same balance at every size
        run["content_weight"], run["tv_weight"] = default_weights(
            prepared.config, prepared.content.shape, content=run["content_weight"],
            tv=run["tv_weight"])
    # What must be equal for a resumed sweep to continue the same optimizations.
    run_meta = {
        "content": file_fingerprint(args.content),
        "styles": [file_fingerprint(path) for path in args.styles],
        "size": args.size, "style_scale": args.style_scale, "preset": args.preset,
        "image_shape": list(prepared.content.shape), "config": config_dict(prepared.config),
        "solver": config_dict(prepared.solver), "runs": grid,
        "style_layer_weights": args.style_layer_weights, "init": args.init,
        "weights": prepared.record,
    }
    batch = {"params": prepared.weights, "config": prepared.config, "solver": prepared.solver,
             "content_weight": [r["content_weight"] for r in grid],
             "style_weight": [r["style_weight"] for r in grid],
             "tv_weight": [r["tv_weight"] for r in grid],
             "style_layer_weights": args.style_layer_weights,
             "style_index": [r["style"] for r in grid], "seeds": [r["seed"] for r in grid],
             "init": args.init, "tol": args.tol, "patience": args.patience}
    first, state, history = first_state(
        lambda: stylize_batch(prepared.content, prepared.styles, iterations=0, **batch),
        checkpoint, resume=args.resume, meta=run_meta, what="sweep")
    progress = Progress(args.iterations, args.quiet)

    def callback(state, records):
        # The bar follows the slowest lane (the job ends with it) and shows the best loss.
        best = int(np.argmin(np.asarray(state.loss)))
        progress.update(int(np.max(state.iteration)), float(state.loss[best]),
                        np.asarray(state.terms[best]), int(np.sum(state.evaluations)))
        return _signals.requested() is not None  # stop after this chunk; handled below

    result = stylize_batch(prepared.content, prepared.styles, iterations=args.iterations,
                           state=state, callback=callback, **batch)
    progress.close()
    history = _joined(history, result.history)
    runs = []
    for i, (run, label) in enumerate(zip(grid, labels)):
        runs.append({"file": f"{label}.png", **run, "style": str(args.styles[run["style"]]),
                     "iterations": int(result.iterations[i]),
                     "evaluations": int(result.evaluations[i]), "status": result.status[i],
                     "loss": float(history["loss"][-1, i])})
    if _signals.requested() is not None:
        return _interrupted(args, result, history, runs, meta, run_meta)
    for i, run in enumerate(runs):
        save_image(outdir / run["file"], result.images[i], metadata={**meta, "run": run})
    # One row per style image, one column per combination of weights and seeds.
    per_style = len(grid) // len(args.styles)
    rows = [list(result.images[i:i + per_style]) for i in range(0, len(grid), per_style)]
    columns = [run_label({**run, "style": 0}, args, with_style=False)
               for run in grid[:per_style]]
    save_image(outdir / "contact_sheet.png", np.asarray(contact_sheet(
        rows, [p.stem for p in args.styles] if len(args.styles) > 1 else None, columns),
        np.float32))
    write_json(outdir / "sweep.json", {
        **log_header(prepared),
        "devices": result.devices,
        "compile_seconds": round(first.compile_seconds + result.compile_seconds, 3),
        "seconds": np.asarray(history["seconds"]).tolist(),
        "runs": [{**run, "history": {k: np.asarray(history[k][:, i]).tolist()
                                     for k in ("loss", "content", "style", "tv", "evaluations")}}
                 for i, run in enumerate(runs)],
    })
    plot = loss_plot([history["loss"][:, i] for i in range(len(grid))], labels)
    if plot is None:
        say(f"{PROG}: loss_curves.png needs matplotlib: pip install 'nst-jax[plots]'")
    else:
        save_image(outdir / "loss_curves.png", plot)
    # Finished: the checkpoint of an interrupted part of this sweep is out of date.
    checkpoint.unlink(missing_ok=True)
    say(f"{len(grid)} runs on {result.devices} device(s): wrote {outdir}/ (images, "
        "contact_sheet.png, loss_curves.png, sweep.json)")
    return 0


def _interrupted(args, result, history, runs, meta, run_meta) -> int:
    """A signal stopped the sweep after a chunk: keep the checkpoint, then every run's best
    image so far (the checkpoint first: no image shows an iteration it cannot resume)."""
    from ..images import save_image
    from ..run import save_checkpoint

    interrupt = _signals.Interrupted(_signals.requested())
    checkpoint = args.output / CHECKPOINT
    save_checkpoint(checkpoint, result.state, history=history, meta=run_meta)
    for i, run in enumerate(runs):
        save_image(args.output / run["file"], result.images[i],
                   metadata={**meta, "run": {**run, "status": "interrupted"}})
    low, high = int(np.min(result.iterations)), int(np.max(result.iterations))
    say(f"{PROG}: interrupted ({interrupt}) at iteration {low if low == high else f'{low}-{high}'}"
        f"; kept every run's best image so far ({len(runs)} images in {args.output}/) and the "
        f"checkpoint {checkpoint} (continue with the same command plus --resume)")
    return interrupt.exit_code
