"""``nst-jax stylize``: one image; several styles, regions, colour, multi-scale; checkpoints.

Parse -> check every output before any compute -> prepare -> library call -> save -> report.
Signals are acted on at safe points (:mod:`._signals`): between compiled chunks the run stops,
and the best image so far and a checkpoint (when asked for) are written before exiting.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from .._errors import ImageError, NstError
from .._files import check_output, same_file
from . import _signals
from ._common import Progress, clock, jax_key, log_header, prepare, say, write_json
from ._parser import PROG, style_spec


def style_inputs(args) -> list[tuple[Path, float, float]]:
    """The style images: the positional STYLE and every ``--style``, parsed as
    ``PATH[:WEIGHT[:SCALE]]``, with the region and multi-scale options checked against them."""
    texts = ([args.style] if args.style else []) + list(args.more_styles)
    if not texts:
        raise NstError("no style image: give STYLE (or --style PATH, repeated for a blend)")
    try:
        specs = [style_spec(text) for text in texts]
    except argparse.ArgumentTypeError as err:
        raise NstError(str(err)) from None
    if len(specs) > 1 and not args.mask and not args.label_map and not sum(
            w for _, w, _ in specs) > 0:
        raise NstError("the style blend weights are all 0")
    if args.mask and args.label_map:
        raise NstError("give either --mask (one per style) or --label-map, not both")
    if args.mask and len(args.mask) != len(specs):
        raise NstError(f"{len(args.mask)} --mask images for {len(specs)} styles: give one mask "
                       "per style, in the same order")
    return specs


def scale_sizes(args) -> list[int] | None:
    """The scales of the run, or None for a single-scale run.

    By default the run is coarse-to-fine (:func:`nst_jax.run.pyramid_sizes`: sqrt(2) steps
    from ``--min-size``), with ``--iterations`` as the total split over the scales
    (:func:`nst_jax.run.split_iterations`). Single scale: ``--scale-factor 1``, a ``--size``
    at or below ``--min-size``, a preset (each reproduces a single-scale reference), or the
    single-scale-only options (checkpoints, ``--resume``, ``--save-every``) without
    ``--scales`` / ``--scale-factor``.
    """
    from ..run import SCALE_FACTOR, pyramid_sizes, split_iterations

    if args.scales is not None and args.scale_factor is not None:
        raise NstError("give either --scales or --scale-factor, not both")
    single_only = [flag for flag, value in (
        ("--resume", args.resume), ("--checkpoint-every", args.checkpoint_every),
        ("--checkpoint", args.checkpoint), ("--save-every", args.save_every)) if value]
    if args.scales is not None:
        sizes = list(args.scales)
        if sizes[-1] != args.size:
            sizes.append(args.size)
        if sizes != sorted(set(sizes)) or sizes[0] < 1:
            raise NstError(f"--scales must increase up to --size {args.size}, got {args.scales}")
    else:
        factor = args.scale_factor
        if factor is not None and not (factor >= 1 and math.isfinite(factor)):
            raise NstError(f"--scale-factor must be >= 1 (1: a single scale), got {factor}")
        if factor is None and (args.preset or single_only):
            factor = 1.0
        sizes = ([args.size] if factor == 1.0 else
                 pyramid_sizes(args.size, factor=factor or SCALE_FACTOR, min_size=args.min_size))
    if len(sizes) == 1 and args.scale_iterations is None:
        return None
    if single_only and len(sizes) > 1:
        raise NstError(f"{single_only[0]} works for single-scale runs only, not with --scales / "
                       "--scale-factor")
    counts = args.scale_iterations or split_iterations(args.iterations, len(sizes))
    if len(counts) != len(sizes) or min(counts) < 1:
        raise NstError(f"--scale-iterations: {len(counts)} positive counts needed for the scales "
                       f"{sizes}")
    args.scale_iterations = counts
    return sizes


def check_outputs(args) -> None:
    """Every file this run will write, checked before any compute.

    Sets ``args.checkpoint`` to the default ``OUT.ckpt.npz`` when checkpointing is on. With
    ``--resume`` the run's own files (OUT, intermediates, log, checkpoint) may exist: the resumed
    run continues them; otherwise an existing checkpoint needs ``--overwrite``. No output may be
    an input.
    """
    from ..images import check_writable
    from ..run._checkpoint import default_checkpoint_path

    if args.checkpoint is None and (args.checkpoint_every or args.resume):
        args.checkpoint = default_checkpoint_path(args.output)
    replace = args.overwrite or args.resume
    inputs = (args.content, *args.style_paths, *args.mask,
              *([args.label_map] if args.label_map else []))
    outputs = [args.output, *([args.log] if args.log else []),
               *([args.checkpoint] if args.checkpoint else [])]
    # The checkpoint first: when it exists, --resume is likely what the user wants.
    if args.checkpoint is not None:
        checkpoint = args.checkpoint
        if any(same_file(checkpoint, path) for path in outputs[:-1]):
            raise NstError(f"{checkpoint}: the checkpoint must differ from the image and the log")
        # Whether it may exist depends on --resume, so that is judged here, not there.
        check_output(checkpoint, overwrite=True, error=NstError, sources=inputs,
                     what="checkpoint")
        if args.resume and not checkpoint.is_file():
            raise NstError(f"{checkpoint}: no checkpoint to resume from; start the run without "
                           "--resume (with --checkpoint-every N to save one)")
        if not args.resume and checkpoint.exists() and not args.overwrite:
            raise NstError(f"{checkpoint}: a checkpoint of an earlier run exists; pass --resume "
                           "to continue that run or --overwrite to start again")
    check_writable(args.output, overwrite=replace, sources=inputs)
    if args.log is not None:
        if same_file(args.log, args.output):
            raise NstError(f"{args.log}: the log must differ from the image")
        check_output(args.log, overwrite=replace, error=NstError, sources=inputs, what="log")
    if args.save_every and not replace:
        existing = sorted(args.output.parent.glob(f"{args.output.stem}_[0-9]*{args.output.suffix}"))
        if existing:
            raise ImageError(f"{existing[0]}: intermediate image exists; pass --overwrite")


def command(args) -> int:
    import numpy as np

    from ..images import (
        load_label_map,
        load_masks,
        luminance_images,
        match_color,
        recombine_luminance,
    )
    from ..run._checkpoint import remove_stray_temporaries

    specs = style_inputs(args)
    args.style_paths = [path for path, _, _ in specs]
    sizes = scale_sizes(args)
    check_outputs(args)
    if args.checkpoint is not None:
        # A SIGKILLed writer cannot remove its temporary file; this run owns those names.
        remove_stray_temporaries(args.output, args.checkpoint)
    prepared = prepare(args, args.style_paths, [scale for _, _, scale in specs])
    _signals.check()
    photo = content = prepared.content
    styles = prepared.styles
    masks = None
    if args.mask:
        masks = load_masks(args.mask, content.shape[:2], max_pixels=args.max_pixels)
    elif args.label_map is not None:
        masks = load_label_map(args.label_map, content.shape[:2], len(styles),
                               max_pixels=args.max_pixels)
    if args.preserve_colors == "histogram":
        # Gatys et al. 2017, Sec. 5.1: the style's colours are mapped onto the photo's first.
        styles = [np.asarray(match_color(style, photo)) for style in styles]
    elif args.preserve_colors == "luminance":
        # Sec. 5.2: transfer on luminance only; the photo's chroma is put back at the end.
        pairs = [luminance_images(photo, style) for style in styles]
        content = np.asarray(pairs[0][0])
        styles = [np.asarray(style) for _, style in pairs]

    def finish(image):
        image = np.clip(np.asarray(image), 0, 255)
        if args.preserve_colors == "luminance":
            image = np.asarray(recombine_luminance(image, photo))
        return image

    blend = [w for _, w, _ in specs] if len(specs) > 1 and masks is None else None
    run = {"params": prepared.weights, "config": prepared.config, "solver": prepared.solver,
           "content_weight": args.content_weight, "style_weight": args.style_weight,
           "tv_weight": args.tv_weight, "style_layer_weights": args.style_layer_weights,
           "content_layer_weights": args.content_layer_weights, "style_blend": blend,
           "masks": masks, "init": args.init, "key": jax_key(args.seed), "tol": args.tol,
           "patience": args.patience}
    if sizes is not None:
        return _multiscale(args, content, styles, run, sizes, finish, prepared)
    from ._single import run_single

    return run_single(args, content, styles, run, finish, prepared, specs)


def _multiscale(args, content, styles, run, sizes, finish, prepared) -> int:
    import numpy as np

    from ..images import save_image
    from ..run import stylize_multiscale
    from ..run._multiscale import _resize

    latest: dict[str, Any] = {}
    bars: list[Progress] = []
    meta = prepared.meta
    # The ETA of the whole run: seconds per pixel-iteration so far (compiles included, so an
    # upper estimate), times the pixel-iterations the remaining scales may take.
    area = [side * side * content.shape[0] * content.shape[1] / max(content.shape[:2]) ** 2
            for side in sizes]
    clock_from, work_done = time.perf_counter(), 0.0

    def on_scale(index, size):
        nonlocal work_done
        if bars:
            bars[-1].close()
            work_done += area[index - 1] * (int(latest["state"].iteration) if "state" in latest
                                            else 0)
        _signals.check()
        bars.append(Progress(args.scale_iterations[index], args.quiet))
        eta = ""
        if work_done:
            rate = (time.perf_counter() - clock_from) / work_done
            left = rate * sum(a * n for a, n in zip(area[index:], args.scale_iterations[index:]))
            eta = f" (the whole run: at most about {clock(left)} more)"
        say(f"scale {index + 1}/{len(sizes)}: {size} px, {args.scale_iterations[index]} "
            f"iterations{eta}")

    def callback(state, records):
        latest["state"] = state  # copied to the host only if it is needed (an interrupt)
        bars[-1].update(int(state.iteration), float(state.loss), np.asarray(state.terms),
                        int(state.evaluations))
        return _signals.requested() is not None

    try:
        result = stylize_multiscale(content, styles, sizes=sizes,
                                    iterations=args.scale_iterations, on_scale=on_scale,
                                    callback=callback, **run)
        _signals.check()
    except _signals.Interrupted as interrupt:
        for bar in bars:
            bar.close()
        kept = "nothing was written"
        if "state" in latest:
            image = finish(_resize(np.asarray(latest["state"].best_image), content.shape[:2]))
            save_image(args.output, image, metadata={**meta, "status": "interrupted",
                                                     "scale": len(bars)})
            kept = f"saved its best image so far (upsampled) to {args.output}"
        say(f"{PROG}: interrupted ({interrupt}) at scale {len(bars)} of {len(sizes)}; {kept}")
        return interrupt.exit_code
    for bar in bars:
        bar.close()
    summary = {"sizes": sizes, "iterations": [r.iterations for r in result.scales],
               "evaluations": [r.evaluations for r in result.scales],
               "status": result.scales[-1].status,
               "loss": float(result.scales[-1].history["loss"][-1]),
               "compile_seconds": round(sum(r.compile_seconds for r in result.scales), 3)}
    save_image(args.output, finish(result.image), metadata={**meta, **summary})
    if args.log is not None:
        write_json(args.log, {
            **log_header(prepared), **summary,
            "scales": [{"size": size, "history": {k: np.asarray(v).tolist()
                                                  for k, v in r.history.items()}}
                       for size, r in zip(sizes, result.scales)]})
    say(f"{summary['status']}: scales {sizes}, {sum(summary['iterations'])} iterations; "
        f"wrote {args.output}")
    return 0

