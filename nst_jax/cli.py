"""``nst-jax`` command line: parse, build a config, call the library, save. No logic of its own
that a Python user could not call."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from ._errors import ImageError, NstError, WeightsError
from ._image import check_writable, load_image, publish, save_image
from ._weights import (
    ENV_VAR, FILENAME, URLS, cache_dir, download_weights, local_weights_file, progress_printer,
    resolve_weights, weights_info,
)

_PROG = "nst-jax"


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from ._optimize import DEFAULT_STYLE_LAYERS, INITS, LINESEARCHES, OPTIMIZERS

    parser = argparse.ArgumentParser(
        prog=_PROG, description="Neural style transfer (Gatys et al.) with JAX."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("stylize", help="paint CONTENT in the style of STYLE")
    run.add_argument("content", type=Path, help="content photo")
    run.add_argument("style", type=Path, help="style image (a painting)")
    run.add_argument("-o", "--output", type=Path, required=True,
                     help="output image; format from the extension (.png, .jpg, ...)")
    run.add_argument("--overwrite", action="store_true", help="replace existing output files")
    size = run.add_argument_group("size")
    size.add_argument("--size", type=_positive_int, default=512,
                      help="longest side of the output in pixels (default 512)")
    size.add_argument("--style-scale", type=float, default=1.0,
                      help="style image longest side = size x this (default 1.0)")
    loss = run.add_argument_group("objective: alpha*content + beta*style + gamma*TV")
    loss.add_argument("--content-weight", type=_nonnegative_float, default=1.0,
                      help="alpha (default 1)")
    loss.add_argument("--style-weight", type=_nonnegative_float, default=1e3,
                      help="beta (default 1e3: alpha/beta = 1e-3, Gatys et al. 2015)")
    loss.add_argument("--tv-weight", type=_nonnegative_float, default=0.0,
                      help="gamma, squared total variation (default 0)")
    loss.add_argument("--content-layers", type=_names, default=("conv4_2",),
                      help="comma-separated (default conv4_2)")
    loss.add_argument("--style-layers", type=_names, default=DEFAULT_STYLE_LAYERS,
                      help="comma-separated (default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1)")
    loss.add_argument("--style-layer-weights", type=_floats, default=None,
                      help="comma-separated, one per style layer (default 1/L each)")
    loss.add_argument("--pooling", choices=("max", "avg"), default="max")
    opt = run.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default="jaxopt-lbfgs")
    opt.add_argument("--iterations", type=_positive_int, default=1000,
                     help="maximum optimizer iterations (default 1000)")
    opt.add_argument("--history-size", type=_positive_int, default=100,
                     help="L-BFGS history (default 100)")
    opt.add_argument("--linesearch", choices=LINESEARCHES, default="backtracking",
                     help="jaxopt L-BFGS line search (default backtracking)")
    opt.add_argument("--learning-rate", type=float, default=10.0, help="Adam only (default 10)")
    opt.add_argument("--tol", type=_nonnegative_float, default=1e-4,
                     help="stop when the relative loss decrease stays below this (0: never)")
    opt.add_argument("--patience", type=_positive_int, default=10,
                     help="... for this many iterations in a row (default 10)")
    opt.add_argument("--init", choices=INITS, default="content")
    opt.add_argument("--seed", type=int, default=0, help="seeds noise init and random weights")
    out = run.add_argument_group("weights and output")
    out.add_argument("--weights", default="auto",
                     help="PATH | imagenet | random | auto (default: local file, else download, "
                     "else random with a warning)")
    out.add_argument("--save-every", type=_positive_int, default=None,
                     help="also write OUT_<iteration> images every N iterations")
    out.add_argument("--log", type=Path, default=None, help="write the loss history as JSON")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    weights = commands.add_parser("weights", help="get and check the VGG-19 weights")
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    download = actions.add_parser("download", help=f"download {FILENAME} (80 MB)")
    download.add_argument("-o", "--output", type=Path, default=None,
                          help=f"file or folder (default {cache_dir()})")
    download.add_argument("--url", action="append", default=None,
                          help="download from this URL instead (repeat for mirrors); the size "
                          "and MD5 of the release are still required")
    for name, text in (("verify", "load strictly and compare with the release checksum"),
                       ("info", "layers, shapes, parameter count, checksum, preprocessing")):
        action = actions.add_parser(name, help=text)
        action.add_argument("path", nargs="?", type=Path, default=None,
                            help=f"weights file (default: ${ENV_VAR}, ./weights/, the cache)")
        if name == "info":
            action.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nst-jax``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "stylize":
            return _stylize(args)
        return _weights(args)
    except NstError as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{_PROG}: interrupted", file=sys.stderr)
        return 130


def _weights(args) -> int:
    if args.action == "download":
        urls = tuple(args.url) if args.url else URLS
        path = download_weights(args.output, urls=urls, progress=progress_printer())
        print(f"saved {path} (size and MD5 verified)")
        return 0
    path = args.path or local_weights_file()
    if path is None:
        raise WeightsError(
            f"no weights file given and none found (${ENV_VAR}, ./weights/{FILENAME}, "
            f"{cache_dir() / FILENAME}); run `{_PROG} weights download`"
        )
    info = weights_info(path)
    if args.action == "verify":
        verdict = ("the canonical Keras release" if info.canonical
                   else "a valid VGG-19 file, but not byte-identical to the Keras release")
        print(f"{path}: OK, {verdict} (md5 {info.md5}, {info.size:,} bytes)")
        return 0
    if args.json:
        print(json.dumps(info._asdict(), indent=2))
        return 0
    print(f"file: {info.path}\nsize: {info.size:,} bytes\nmd5: {info.md5} "
          f"({'canonical release' if info.canonical else 'not the canonical release'})")
    pre = info.preprocessing
    print(f"preprocessing: {pre['channel_order']}, 0-{pre['input_scale']:g}, "
          f"minus mean {pre['mean']}")
    for name, kernel, bias in info.layers:
        print(f"  {name:<13} kernel {str(kernel):<18} bias {bias}")
    print(f"parameters: {info.parameters:,}")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_outputs(args) -> list[Path]:
    """Every file this run will write, checked before any compute."""
    outputs = [args.output]
    if args.log is not None:
        outputs.append(args.log)
    for path in outputs:
        for source in (args.content, args.style):
            if _same_file(path, source):
                raise ImageError(f"{path}: output would overwrite the input {source}")
    check_writable(args.output, overwrite=args.overwrite)
    if args.log is not None:
        if args.log.exists() and not args.overwrite:
            raise NstError(f"{args.log}: already exists; pass --overwrite to replace it")
        folder = args.log.parent if str(args.log.parent) else Path(".")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise NstError(f"{args.log}: folder {folder} is missing or not writable")
    if args.save_every and not args.overwrite:
        existing = sorted(args.output.parent.glob(f"{args.output.stem}_[0-9]*{args.output.suffix}"))
        if existing:
            raise ImageError(f"{existing[0]}: intermediate image exists; pass --overwrite")
    return outputs


def _write_json(path: Path, data: Any) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Progress:
    """One-line progress: iteration, loss terms, it/s, ETA (stderr)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()
        self.first: tuple[int, float] | None = None  # rate is measured after the compile
        self.last_line = 0.0
        self.shown = -1

    def update(self, iteration: int, loss: float, terms, evaluations: int, final=False):
        if self.quiet:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = (iteration, now)
        if iteration == self.shown or not (self.tty or final or now - self.last_line > 10):
            return
        self.last_line, self.shown = now, iteration
        rate = (iteration - self.first[0]) / max(now - self.first[1], 1e-9)
        eta = (self.total - iteration) / rate if rate > 0 else float("inf")
        width = 20
        filled = int(width * iteration / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {iteration}/{self.total} "
                f"loss {loss:.3e} (content {terms[0]:.2e} style {terms[1]:.2e} tv {terms[2]:.2e}) "
                f"{evaluations} evals {rate:.2f} it/s ETA {_clock(eta)}")
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        if final and self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else \
        f"{minutes}:{seconds:02d}"


def _stylize(args) -> int:
    import jax
    import numpy as np

    from ._optimize import StyleConfig, stylize
    from ._vgg import min_image_side

    if not (args.style_scale > 0 and math.isfinite(args.style_scale)):
        raise NstError(f"--style-scale must be a positive number, got {args.style_scale}")
    _check_outputs(args)
    try:
        config = StyleConfig(
            content_layers=args.content_layers,
            style_layers=args.style_layers,
            pooling=args.pooling,
            optimizer=args.optimizer,
            history_size=args.history_size,
            linesearch=args.linesearch,
            learning_rate=args.learning_rate,
        )
    except ValueError as err:
        raise NstError(str(err)) from None
    if args.style_layer_weights is not None and len(args.style_layer_weights) != len(
            config.style_layers):
        raise NstError(f"--style-layer-weights: {len(args.style_layer_weights)} values for "
                       f"{len(config.style_layers)} style layers")
    content = load_image(args.content, max_side=args.size)
    style = load_image(args.style, max_side=max(1, round(args.size * args.style_scale)))
    need = min_image_side(config.feature_layers)
    for name, image in (("content", content), ("style", style)):
        if min(image.shape[:2]) < need:
            raise NstError(f"{name} image is {image.shape[1]}x{image.shape[0]} px after resizing; "
                           f"the layers used need at least {need} px per side (raise --size)")
    source = resolve_weights(args.weights, seed=args.seed)
    weights_record = {"source": source.source, "path": source.path, "md5": source.md5,
                      "seed": source.seed}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("command", "output", "log", "quiet", "overwrite")}
    print(f"{args.content.name} + {args.style.name} -> {args.output} "
          f"({content.shape[1]}x{content.shape[0]} px, weights: {source.source}"
          f"{' ' + source.path if source.path else ''}); compiling...", file=sys.stderr)

    progress = _Progress(args.iterations, args.quiet)
    latest: dict[str, Any] = {}

    def callback(state, records):
        iteration = int(state.iteration)
        latest["image"] = np.clip(np.asarray(state.image), 0, 255)
        latest["iteration"] = iteration
        progress.update(iteration, float(state.loss), np.asarray(state.terms),
                        int(state.evaluations))
        if args.save_every and iteration // args.save_every > latest.get("saved", 0):
            latest["saved"] = iteration // args.save_every
            name = f"{args.output.stem}_{iteration:05d}{args.output.suffix}"
            save_image(args.output.with_name(name), latest["image"],
                       metadata={"weights": weights_record, "settings": settings,
                                 "iteration": iteration})
        return False

    try:
        result = stylize(
            content, style, params=source.params, config=config,
            content_weight=args.content_weight, style_weight=args.style_weight,
            tv_weight=args.tv_weight, style_layer_weights=args.style_layer_weights,
            init=args.init, key=jax.random.key(args.seed), iterations=args.iterations,
            tol=args.tol, patience=args.patience, callback=callback,
            save_every=args.save_every,
        )
    except KeyboardInterrupt:
        if "image" in latest:
            save_image(args.output, latest["image"], metadata={
                "weights": weights_record, "settings": settings,
                "iteration": latest["iteration"], "status": "interrupted"})
            print(f"\n{_PROG}: interrupted; saved the image of iteration {latest['iteration']} "
                  f"to {args.output}", file=sys.stderr)
        raise
    history = result.history
    terms = [history[name][-1] for name in ("content", "style", "tv")]
    progress.update(result.iterations, float(history["loss"][-1]), terms, result.evaluations,
                    final=True)
    summary = {"iterations": result.iterations, "evaluations": result.evaluations,
               "status": result.status, "loss": float(history["loss"][-1]),
               "compile_seconds": round(result.compile_seconds, 3)}
    save_image(args.output, result.image,
               metadata={"weights": weights_record, "settings": settings, **summary})
    if args.log is not None:
        _write_json(args.log, {
            "nst_jax": __version__, "weights": weights_record, "settings": settings, **summary,
            "history": {"iteration": list(range(len(history["loss"]))),
                        **{k: np.asarray(v).tolist() for k, v in history.items()}},
        })
    print(f"{result.status}: {result.iterations} iterations, {result.evaluations} evaluations, "
          f"loss {history['loss'][0]:.4g} -> {history['loss'][-1]:.4g}; wrote {args.output}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
