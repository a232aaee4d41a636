"""The single-scale ``stylize`` run: progress, intermediate images, checkpoints and resume, and
what an interrupt keeps.

The run is started at iteration 0 first (this compiles), so a fresh and a resumed run continue
alike from a state, bit for bit; the history is kept here, so a checkpoint can hold it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .._errors import NstError
from . import _signals
from ._common import Progress, log_header, say, write_json
from ._parser import PROG


def run_single(args, content, styles, run, finish, prepared, specs) -> int:
    import numpy as np

    from ..images import save_image
    from ..run import load_checkpoint, save_checkpoint, stylize
    from ..run._checkpoint import (
        append_records,
        config_dict,
        file_fingerprint,
        meta_differences,
        read_checkpoint_meta,
    )
    from ..run._loop import NONFINITE

    checkpoint = args.checkpoint  # None: no checkpoints
    meta = prepared.meta
    run_meta: dict[str, Any] = {}
    if checkpoint is not None:
        # What must be equal for a resumed run to continue the same optimization.
        run_meta = {
            "content": file_fingerprint(args.content),
            "style": [file_fingerprint(path) for path in args.style_paths],
            "style_blend": [[w, scale] for _, w, scale in specs],
            "masks": [file_fingerprint(path) for path in args.mask] + (
                [file_fingerprint(args.label_map)] if args.label_map else []),
            "preserve_colors": args.preserve_colors, "preset": args.preset,
            "size": args.size, "style_scale": args.style_scale,
            "image_shape": list(content.shape), "config": config_dict(prepared.config),
            "solver": config_dict(prepared.solver),
            "loss_weights": {"content": args.content_weight, "style": args.style_weight,
                             "tv": args.tv_weight, "style_layers": args.style_layer_weights},
            "init": args.init, "seed": args.seed, "weights": prepared.record,
        }
    if args.resume:
        differences = meta_differences(read_checkpoint_meta(checkpoint), run_meta)
        if differences:
            raise NstError(f"{checkpoint}: the checkpoint belongs to a different run: "
                           f"{'; '.join(differences)}. Resume with the original inputs and "
                           "settings, or pass --overwrite without --resume to start again")
    # Chunks must end on multiples of both --save-every and --checkpoint-every; the same chunk
    # size in both calls below, so the run's step is compiled once.
    every = math.gcd(*[n for n in (args.save_every, args.checkpoint_every) if n]) or None
    try:
        first = stylize(content, styles, **run, iterations=0, save_every=every)
        _signals.check()
    except _signals.Interrupted as interrupt:
        say(f"{PROG}: interrupted ({interrupt}) before the first iteration; nothing was written")
        return interrupt.exit_code
    state, history = first.state, first.history
    if args.resume:
        state, history, _ = load_checkpoint(checkpoint, first.state)
        say(f"resuming from {checkpoint} at iteration {int(state.iteration)}")
    done = int(state.iteration)
    progress = Progress(args.iterations, args.quiet)
    latest: dict[str, Any] = {"state": state, "history": history,
                              "checkpointed": done if args.resume else None,
                              "saved": done // args.save_every if args.save_every else 0}

    def image_of(state):
        return finish(state.best_image)

    def write_checkpoint(state, history):
        save_checkpoint(checkpoint, state, history=history, meta=run_meta)
        latest["checkpointed"] = int(state.iteration)

    start = time.perf_counter() - float(history["seconds"][-1])

    def callback(state, records):
        history = append_records(latest["history"], records, time.perf_counter() - start)
        latest.update(state=state, history=history)  # one update: an interrupt sees both or none
        iteration = int(state.iteration)
        progress.update(iteration, float(state.loss), np.asarray(state.terms),
                        int(state.evaluations))
        if _signals.requested() is not None:
            return True  # stop here; the interrupt is handled below
        if args.save_every and iteration // args.save_every > latest["saved"]:
            latest["saved"] = iteration // args.save_every
            name = f"{args.output.stem}_{iteration:05d}{args.output.suffix}"
            save_image(args.output.with_name(name), image_of(state),
                       metadata={**meta, "iteration": iteration})
        every = args.checkpoint_every
        if every and iteration // every > (latest["checkpointed"] or 0) // every:
            # Checkpoint first: OUT never shows an iteration that the checkpoint cannot resume.
            write_checkpoint(state, history)
            save_image(args.output, image_of(state), metadata={
                **meta, "iteration": iteration, "checkpoint": str(checkpoint)})
        return False

    try:
        result = stylize(content, styles, **run, iterations=args.iterations, state=state,
                         targets=first.targets, callback=callback, save_every=every)
        _signals.check()
    except _signals.Interrupted as interrupt:
        progress.close()
        state, history = latest["state"], latest["history"]
        iteration = int(state.iteration)
        kept = []
        if checkpoint is not None:
            if latest["checkpointed"] != iteration:
                write_checkpoint(state, history)
            kept.append(f"the checkpoint {checkpoint} (continue with the same command plus "
                        "--resume)")
        if iteration > 0:
            save_image(args.output, image_of(state), metadata={
                **meta, "iteration": iteration, "status": "interrupted"})
            kept.insert(0, f"the best image so far in {args.output}")
        say(f"{PROG}: interrupted ({interrupt}) at iteration {iteration}; kept "
            f"{' and '.join(kept) or 'nothing (no iteration had finished)'}")
        return interrupt.exit_code
    progress.close()
    history = latest["history"]
    if done >= args.iterations:
        say(f"the checkpoint is at iteration {done} already; raise --iterations to continue")
    best = float(result.state.best_loss)
    summary = {"iterations": result.iterations, "evaluations": result.evaluations,
               "status": result.status, "loss": float(history["loss"][-1]),
               "best_loss": best,  # the loss of the image written (the lowest seen)
               "compile_seconds": round(first.compile_seconds + result.compile_seconds, 3)}
    if checkpoint is not None and latest["checkpointed"] != result.iterations:
        # Kept after a normal end: a later --resume with more --iterations extends the run.
        write_checkpoint(result.state, history)
    save_image(args.output, finish(result.image), metadata={**meta, **summary})
    if args.log is not None:
        write_json(args.log, {
            **log_header(prepared), **summary,
            "history": {"iteration": list(range(len(history["loss"]))),
                        **{k: np.asarray(v).tolist() for k, v in history.items()}},
        })
    kept = (f"; checkpoint {checkpoint} (add --resume and more --iterations to continue)"
            if checkpoint is not None else "")
    if int(result.state.status) == NONFINITE:
        say(f"{PROG}: error: the loss became NaN or infinite at iteration "
            f"{result.iterations + 1}; wrote the best image so far (loss {best:.4g}) to "
            f"{args.output}. Try a smaller --style-weight or --learning-rate, "
            "--linesearch backtracking, or --dtype float32")
        return 1
    say(f"{result.status}: {result.iterations} iterations, {result.evaluations} evaluations, "
        f"loss {history['loss'][0]:.4g} -> {best:.4g}; wrote {args.output}{kept}")
    return 0
