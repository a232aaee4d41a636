"""``nst-jax stylize-frames``: a folder of video frames, one compiled optimizer, each frame
warm-started from the previous result; ``--skip-existing`` continues an interrupted job."""

from __future__ import annotations

import time
from pathlib import Path

from .._errors import NstError
from .._files import same_file
from . import _signals
from ._common import clock, jax_key, make_output_folder, prepare, say
from ._parser import PROG

FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def command(args) -> int:
    from ..images import load_image, save_image
    from ..run import stylize_frames

    if not args.frames.is_dir():
        raise NstError(f"{args.frames}: not a folder of frames")
    paths = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not paths:
        raise NstError(f"{args.frames}: no frame images ({', '.join(sorted(FRAME_SUFFIXES))})")
    outdir = args.output
    if outdir.exists() and not outdir.is_dir():
        raise NstError(f"{outdir}: exists and is not a folder")
    if same_file(outdir, args.frames):
        raise NstError(f"{outdir}: the output folder must differ from the frames folder")
    by_stem: dict[str, Path] = {}
    for path in paths:  # a.jpg and a.png would both be written to a.png
        if path.stem in by_stem:
            raise NstError(f"{by_stem[path.stem]} and {path}: both frames would be written to "
                           f"{outdir / (path.stem + '.png')}; rename one")
        by_stem[path.stem] = path
    outputs = [outdir / f"{p.stem}.png" for p in paths]
    done = [out.exists() for out in outputs]
    if any(done) and not (args.overwrite or args.skip_existing):
        first = outputs[done.index(True)]
        raise NstError(f"{first}: already exists; pass --skip-existing to continue the job or "
                       "--overwrite to redo it")
    make_output_folder(outdir)
    skip = 0
    if args.skip_existing and not args.overwrite:
        while skip < len(paths) and done[skip]:
            skip += 1
    if skip == len(paths):
        say(f"all {len(paths)} frames already done in {outdir}/")
        return 0
    args.content = paths[skip]
    prepared = prepare(args, [args.style])
    first = prepared.content
    init = args.init
    if skip:
        init = load_image(outputs[skip - 1])
        if init.shape != first.shape:
            raise NstError(f"{outputs[skip - 1]}: size differs from the frames; remove it or "
                           "pass --overwrite")

    def frames():
        yield first  # prepare() decoded it already
        for path in paths[skip + 1:]:
            frame = load_image(path, max_side=args.size, max_pixels=args.max_pixels)
            if frame.shape != first.shape:
                raise NstError(f"{path}: {frame.shape[1]}x{frame.shape[0]} px after resizing, "
                               f"the first frame is {first.shape[1]}x{first.shape[0]}; all "
                               "frames must have one size")
            yield frame

    results = stylize_frames(
        frames(), prepared.styles[0], params=prepared.weights, config=prepared.config,
        solver=prepared.solver, init=init, key=jax_key(args.seed),
        content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, style_layer_weights=args.style_layer_weights,
        content_layer_weights=args.content_layer_weights, iterations=args.iterations,
        tol=args.tol, patience=args.patience,
        callback=lambda state, records: _signals.requested() is not None)
    start = time.perf_counter()
    written = 0
    try:
        _signals.check()
        for count, (path, out, result) in enumerate(zip(paths[skip:], outputs[skip:], results),
                                                    1):
            # A frame cut short by a signal is not written: --skip-existing would take it as done.
            _signals.check()
            save_image(out, result.image, metadata={
                **prepared.meta, "frame": path.name,
                "iterations": result.iterations, "status": result.status,
                "loss": float(result.history["loss"][-1])})
            written += 1
            if not args.quiet:
                left = (time.perf_counter() - start) / count * (len(paths) - skip - count)
                say(f"frame {skip + count}/{len(paths)} {path.name}: {result.iterations} "
                    f"iterations, loss {result.history['loss'][-1]:.4g} ({result.status}); "
                    f"ETA {clock(left)}")
    except _signals.Interrupted as interrupt:
        kept = (f"kept the {written} written this time in {outdir}/" if written else
                "no frame was written this time")
        say(f"{PROG}: interrupted ({interrupt}) after {skip + written} of {len(paths)} frames; "
            f"{kept} (continue with the same command plus --skip-existing)")
        return interrupt.exit_code
    say(f"wrote {written} frames to {outdir}/")
    return 0
