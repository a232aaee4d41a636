"""``nst-jax`` command line: parse, build a config, call the library, save. No logic of its own
that a Python user could not call."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._errors import ImageError, NstError, WeightsError
from ._image import (
    atomic_file,
    check_folder_writable,
    check_output,
    check_writable,
    load_image,
    same_file,
    save_image,
)
from ._weights import (
    ENV_VAR,
    FILENAME,
    URLS,
    cache_dir,
    download_weights,
    local_weights_file,
    progress_printer,
    resolve_weights,
    weights_info,
)

_PROG = "nst-jax"


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _whole_number(text: str, smallest: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = smallest - 1
    if value < smallest:
        raise argparse.ArgumentTypeError(f"expected {what} whole number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1, "a positive")


def _nonnegative_int(text: str) -> int:
    return _whole_number(text, 0, "a non-negative")


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Neural style transfer (Gatys et al.) with JAX."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("stylize", help="paint CONTENT in the style of STYLE")
    run.add_argument("content", type=Path, help="content photo")
    run.add_argument("style", nargs="?", default=None, metavar="STYLE",
                     help="style image (a painting): PATH[:WEIGHT[:SCALE]]")
    run.add_argument("-o", "--output", type=Path, required=True,
                     help="output image; format from the extension (.png, .jpg, ...)")
    _add_run_options(run, sweep=False)
    styles = run.add_argument_group("several styles, regions, colour")
    styles.add_argument("--style", dest="more_styles", action="append", default=[],
                        metavar="PATH[:WEIGHT[:SCALE]]",
                        help="another style image (repeat): its blend weight (default 1; "
                        "weights are normalized) and a factor on --style-scale for it")
    styles.add_argument("--mask", action="append", default=[], type=Path, metavar="PATH",
                        help="region mask per style, in the order of the styles (white = "
                        "painted in that style; guided Gram matrices, Gatys et al. 2017)")
    styles.add_argument("--label-map", type=Path, default=None, metavar="PATH",
                        help="one image whose distinct colours (sorted, darkest first) are the "
                        "regions of styles 1, 2, ... (instead of --mask)")
    styles.add_argument("--preserve-colors", choices=("luminance", "histogram"), default=None,
                        help="keep the photo's colours: transfer luminance only, or first "
                        "match the style's colour statistics to the photo (Gatys et al. 2017)")
    scales = run.add_argument_group("multi-scale (the route to large images)")
    scales.add_argument("--scales", type=_int_list, default=None, metavar="LIST",
                        help="longest side of each scale, increasing, the last = --size, e.g. "
                        "256,512,1024; each scale starts from the previous result, upsampled")
    scales.add_argument("--scale-factor", type=float, default=None, metavar="F",
                        help="instead of --scales: sizes --size / F^k down to --min-size")
    scales.add_argument("--min-size", type=_positive_int, default=256,
                        help="smallest scale for --scale-factor (default 256)")
    scales.add_argument("--scale-iterations", type=_int_list, default=None, metavar="LIST",
                        help="iterations per scale, e.g. 500,200,100 (default --iterations each)")
    out = run.add_argument_group("extra outputs")
    out.add_argument("--save-every", type=_positive_int, default=None,
                     help="also write OUT_<iteration> images every N iterations")
    out.add_argument("--log", type=Path, default=None, help="write the loss history as JSON")
    out.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                     help="every N iterations save the full optimizer state (and OUT), so an "
                     "interrupted or killed run can continue with --resume")
    out.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                     help="checkpoint file (default: OUT with suffix .ckpt.npz); also written "
                     "on Ctrl-C/SIGTERM and at the end")
    out.add_argument("--resume", action="store_true",
                     help="continue the run saved in the checkpoint up to --iterations in all "
                     "(same inputs and settings required)")

    sweep = commands.add_parser(
        "sweep", help="a grid of stylizations as one batched, compiled job",
        description="Every combination of the listed weights, seeds and styles runs as one "
        "vmapped optimization (sharded over all local devices). Writes each image, "
        "contact_sheet.png, loss_curves.png and sweep.json into OUTDIR.")
    sweep.add_argument("content", type=Path, help="content photo")
    sweep.add_argument("styles", type=Path, nargs="+", metavar="STYLE", help="style image(s)")
    sweep.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_run_options(sweep, sweep=True)

    frames = commands.add_parser(
        "stylize-frames", help="stylize a folder of video frames",
        description="Stylizes every image in FRAMES (sorted by name) with one compiled "
        "optimizer: the style Grams are computed once, and each frame starts from the previous "
        "frame's result, which keeps consecutive frames consistent (less flicker). Writes "
        "OUTDIR/<frame name>.png.")
    frames.add_argument("frames", type=Path, metavar="FRAMES", help="folder of frame images")
    frames.add_argument("style", type=Path, help="style image")
    frames.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    frames.add_argument("--skip-existing", action="store_true",
                        help="continue an interrupted job: frames whose output exists are not "
                        "redone (the last of them seeds the next frame)")
    _add_run_options(frames, sweep=False)

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
    convert = actions.add_parser(
        "convert", help="convert a PyTorch .pth or MatConvNet .mat VGG-19 to HDF5",
        description="Write SRC (torchvision-layout or Gatys' vgg_conv.pth state_dict, or "
        "MatConvNet imagenet-vgg-verydeep-19.mat) as a Keras-layout HDF5 file that records the "
        "input convention the weights expect. .pth needs torch, .mat needs scipy: "
        'pip install "nst_jax[convert]".')
    convert.add_argument("source", type=Path, help="the .pth or .mat file")
    convert.add_argument("-o", "--output", type=Path, required=True, help="HDF5 file to write")
    convert.add_argument("--preprocessing", choices=("caffe", "torchvision"), default=None,
                         help="input convention of a torchvision-layout file that is not a known "
                         "one: torchvision (RGB 0-1, mean/std) or caffe (BGR 0-255 minus mean)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output")
    normalize = actions.add_parser(
        "normalize", help="rescale filters to mean activation 1 (Gatys et al.)",
        description="Rescale every conv filter (and the next layer's input weights) so that its "
        "mean ReLU activation over IMAGES and positions is 1, as Gatys et al. 2016 did; the "
        "features become a per-channel rescaling of the original's. Use the result with "
        "--preset gatys2016 (average pooling).")
    normalize.add_argument("path", nargs="?", type=Path, default=None,
                           help=f"weights file (default: ${ENV_VAR}, ./weights/, the cache)")
    normalize.add_argument("-o", "--output", type=Path, required=True, help="HDF5 file to write")
    normalize.add_argument("--images", type=Path, nargs="+", required=True,
                           help="images to average over (Gatys used ImageNet validation images)")
    normalize.add_argument("--size", type=_positive_int, default=256,
                           help="longest side the images are resized to (default 256)")
    normalize.add_argument("--pooling", choices=("max", "avg"), default="avg",
                           help="pooling of the network the means are measured in (default avg, "
                           "the gatys2016 preset's)")
    normalize.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def _add_run_options(run: argparse.ArgumentParser, *, sweep: bool) -> None:
    """Options shared by ``stylize`` and ``sweep``; a sweep takes lists for weights and seeds."""
    from ._image import MAX_PIXELS
    from ._optimize import INITS, LINESEARCHES, OPTIMIZERS, SUBSPACES
    from ._presets import PRESETS

    weight = _float_list if sweep else _nonnegative_float
    listed = " (comma-separated list: one run per value)" if sweep else ""
    run.add_argument("--overwrite", action="store_true", help="replace existing output files")
    run.add_argument("--preset", choices=sorted(PRESETS), default=None,
                     help="the conventions of a reference implementation (layers, loss "
                     "normalizations, weights, optimizer, init, iterations; README table); "
                     "options given explicitly override it")
    size = run.add_argument_group("size")
    size.add_argument("--size", type=_positive_int, default=None,
                      help="longest side of the output in pixels (default 512)")
    size.add_argument("--style-scale", type=float, default=1.0,
                      help="style image longest side = size x this (default 1.0)")
    size.add_argument("--max-pixels", type=_positive_int, default=None,
                      help="refuse input images that declare more pixels than this, before "
                      f"decoding (decompression-bomb guard; default {MAX_PIXELS})")
    size.add_argument("--max-memory", type=_nonnegative_float, default=None, metavar="GB",
                      help="refuse runs whose estimated peak memory exceeds this many GB "
                      "(default: the memory available now)")
    loss = run.add_argument_group("objective: alpha*content + beta*style + gamma*TV")
    loss.add_argument("--content-weight", type=weight, default=None,
                      help="alpha (default 1)" + listed)
    loss.add_argument("--style-weight", type=weight, default=None,
                      help="beta (default 1e3: alpha/beta = 1e-3, Gatys et al. 2015)" + listed)
    loss.add_argument("--tv-weight", type=weight, default=None,
                      help="gamma, squared total variation (default 0)" + listed)
    loss.add_argument("--content-layers", type=_names, default=None,
                      help="comma-separated (default conv4_2)")
    loss.add_argument("--style-layers", type=_names, default=None,
                      help="comma-separated (default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1)")
    loss.add_argument("--style-layer-weights", type=_floats, default=None,
                      help="comma-separated, one per style layer (default 1/L each)")
    loss.add_argument("--pooling", choices=("max", "avg"), default=None, help="default max")
    opt = run.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                     help="default jaxopt-lbfgs")
    opt.add_argument("--iterations", type=_positive_int, default=None,
                     help="maximum optimizer iterations (default 1000)")
    opt.add_argument("--history-size", type=_positive_int, default=None,
                     help="L-BFGS history (default 10)")
    opt.add_argument("--linesearch", choices=LINESEARCHES, default=None,
                     help="jaxopt L-BFGS line search (default none: fixed step 1, one evaluation per "
                     "iteration)")
    opt.add_argument("--subspace", choices=SUBSPACES, default="projected",
                     help="jaxopt L-BFGS-B's subspace step: projected onto the pixel box "
                     "(default; L-BFGS-B 3.0's rule) or truncated at the first bound (jaxopt's)")
    opt.add_argument("--pyramid-levels", type=_nonnegative_int, default=None,
                     help="projected-lbfgs only: levels of the coarse-to-fine preconditioner "
                     "(default: from the image size; 0: none)")
    opt.add_argument("--learning-rate", type=float, default=10.0, help="Adam only (default 10)")
    opt.add_argument("--tol", type=_nonnegative_float, default=None,
                     help="stop when the relative loss decrease stays below this (0: never)")
    opt.add_argument("--patience", type=_positive_int, default=10,
                     help="... for this many iterations in a row (default 10)")
    opt.add_argument("--init", choices=INITS, default=None, help="default content")
    opt.add_argument("--seed", type=_int_list if sweep else int, default=[0] if sweep else 0,
                     help="seeds the noise init and random weights" + listed)
    opt.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                     help="VGG compute dtype (bfloat16: half the activation memory)")
    opt.add_argument("--remat", action="store_true",
                     help="recompute VGG activations in the backward pass (less memory)")
    out = run.add_argument_group("weights")
    out.add_argument("--weights", default="auto",
                     help="PATH | imagenet | random | auto (default: local file, else download, "
                     "else random with a warning)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


#: Built-in defaults of the options a preset may set (None in argparse, so an explicit value
#: can be told apart from a default and win over the preset).
_DEFAULTS = {
    "size": 512, "content_weight": 1.0, "style_weight": 1e3, "tv_weight": 0.0,
    "content_layers": ("conv4_2",),
    "style_layers": ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
    "style_layer_weights": None, "pooling": "max", "optimizer": "jaxopt-lbfgs",
    "iterations": 1000, "history_size": 10, "linesearch": "none", "tol": 1e-4,
    "init": "content",
}
_LISTED = ("content_weight", "style_weight", "tv_weight")  # lists in `sweep`


def _apply_preset(args) -> None:
    """Fill every option left unset: from ``--preset`` where it has a value, else the built-in
    default. Config fields without a flag (layer outputs, loss normalizations, ...) go to
    ``args.preset_config``, per-content-layer weights to ``args.content_layer_weights``."""
    from ._presets import get_preset

    preset = get_preset(args.preset) if args.preset else None
    values = dict(_DEFAULTS)
    args.preset_config, args.content_layer_weights = {}, None
    if preset is not None:
        values["size"] = preset.size
        for key, value in {**preset.config_kwargs, **preset.run_kwargs}.items():
            if key in values:
                values[key] = tuple(value) if isinstance(value, (list, tuple)) and key.endswith(
                    "layers") else value
            elif key == "content_layer_weights":
                args.content_layer_weights = list(value)
            elif key not in ("patience",):
                args.preset_config[key] = value
    explicit_layers = args.style_layers is not None
    for key, value in values.items():
        if getattr(args, key) is None:
            listed = args.command == "sweep" and key in _LISTED
            setattr(args, key, [value] if listed else value)
    if preset is not None and explicit_layers and args.style_layer_weights is not None and len(
            args.style_layer_weights) != len(args.style_layers):
        raise NstError(f"--preset {preset.name} weighs {len(args.style_layer_weights)} style "
                       f"layers; with --style-layers give --style-layer-weights too")
    if preset is not None and args.content_layer_weights is not None and len(
            args.content_layer_weights) != len(args.content_layers):
        args.content_layer_weights = None  # the content layers were changed explicitly


def _float_list(text: str) -> list[float]:
    values = _floats(text)
    if not values or any(not (v >= 0 and math.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0, got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()] or [0]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nst-jax``; returns the exit code."""
    args = _parser().parse_args(argv)
    # SIGTERM ends a run like Ctrl-C does: the last good image is saved before exiting.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command in ("stylize", "sweep", "stylize-frames"):
            _apply_preset(args)
        if args.command == "stylize":
            return _stylize(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "stylize-frames":
            return _frames(args)
        return _weights(args)
    except NstError as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{_PROG}: interrupted", file=sys.stderr)
        return 130


def _weights(args) -> int:
    from ._convert import convert_weights, describe_preprocessing
    from ._vgg import Preprocessing

    if args.action == "convert":
        result = convert_weights(args.source, args.output, preprocessing=args.preprocessing,
                                 overwrite=args.overwrite)
        print(f"{args.source}: {result.description}")
        print(f"input convention recorded: {describe_preprocessing(result.preprocessing)}")
        print(f"wrote {args.output}")
        return 0
    if args.action == "normalize":
        from ._normalize import normalize_weights_file

        source = args.path or local_weights_file()
        if source is None:
            raise WeightsError(f"no weights file given and none found; run `{_PROG} weights "
                               "download` or name the file")
        summary = normalize_weights_file(source, args.output, args.images, size=args.size,
                                         pooling=args.pooling, overwrite=args.overwrite)
        for name, layer in summary["layers"].items():
            dead = f" ({layer['dead']} dead channels kept as they were)" if layer["dead"] else ""
            print(f"  {name:<8} mean activation was {layer['min']:.3g} .. {layer['max']:.3g}{dead}")
        print(f"wrote {args.output} (normalized over {len(args.images)} images at {args.size} px, "
              f"{args.pooling} pooling)")
        return 0
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
    print(f"preprocessing: {describe_preprocessing(Preprocessing(**info.preprocessing))}")
    for name, kernel, bias in info.layers:
        print(f"  {name:<13} kernel {kernel!s:<18} bias {bias}")
    print(f"parameters: {info.parameters:,}")
    return 0


def _make_output_folder(outdir: Path) -> None:
    """Create the output folder of ``sweep`` / ``stylize-frames`` if needed and check that files
    can be written in it (before any compute)."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NstError(f"{outdir}: cannot create folder ({err.strerror})") from None
    check_folder_writable(outdir, error=NstError)


def _check_outputs(args) -> list[Path]:
    """Every file this run will write, checked before any compute.

    Sets ``args.checkpoint`` to the default ``OUT.ckpt.npz`` when checkpointing is on. With
    ``--resume`` the run's own files (OUT, intermediates, log, checkpoint) may exist: the resumed
    run continues them; otherwise an existing checkpoint needs ``--overwrite``. No output may be
    an input (:func:`check_output`).
    """
    from ._checkpoint import default_checkpoint_path

    if args.checkpoint is None and (args.checkpoint_every or args.resume):
        args.checkpoint = default_checkpoint_path(args.output)
    replace = args.overwrite or args.resume
    inputs = (args.content, *args.style_paths, *args.mask,
              *([args.label_map] if args.label_map else []))
    outputs = [args.output]
    if args.log is not None:
        outputs.append(args.log)
    if args.checkpoint is not None:
        outputs.append(args.checkpoint)
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
    return outputs


def _write_json(path: Path, data: Any) -> None:
    with atomic_file(path, NstError, "JSON") as handle:
        handle.write(json.dumps(data, indent=1).encode())


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


def _style_spec(text: str) -> tuple[Path, float, float]:
    """``PATH[:WEIGHT[:SCALE]]`` -> (path, blend weight, style scale). Trailing fields that are
    not numbers belong to the path (file names may contain colons)."""
    parts = text.split(":")
    numbers: list[float] = []
    while len(parts) > 1 and len(numbers) < 2:
        try:
            value = float(parts[-1])
        except ValueError:
            break
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r}: weights and scales must be >= 0")
        numbers.insert(0, value)
        parts.pop()
    weight, scale = (numbers + [1.0, 1.0])[:2] if len(numbers) != 1 else (numbers[0], 1.0)
    if scale <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the style scale must be positive")
    return Path(":".join(parts)), weight, scale


def _prepare(args, styles: list[Path], scales: Sequence[float] | None = None):
    """Everything before the optimization: checks, config, images, weights (one place for
    ``stylize``, ``sweep`` and ``stylize-frames``, so all fail early the same way).

    ``scales``: per style image, a factor on ``--style-scale`` (``PATH:WEIGHT:SCALE``)."""
    from ._memory import check_fits
    from ._optimize import StyleConfig
    from ._vgg import CAFFE, min_image_side

    if not (args.style_scale > 0 and math.isfinite(args.style_scale)):
        raise NstError(f"--style-scale must be a positive number, got {args.style_scale}")
    try:
        config = StyleConfig(
            content_layers=args.content_layers, style_layers=args.style_layers,
            pooling=args.pooling, optimizer=args.optimizer, history_size=args.history_size,
            linesearch=args.linesearch, learning_rate=args.learning_rate, dtype=args.dtype,
            remat=args.remat, subspace=args.subspace, pyramid_levels=args.pyramid_levels,
            **args.preset_config,
        )
    except ValueError as err:
        raise NstError(str(err)) from None
    if args.style_layer_weights is not None and len(args.style_layer_weights) != len(
            config.style_layers):
        raise NstError(f"--style-layer-weights: {len(args.style_layer_weights)} values for "
                       f"{len(config.style_layers)} style layers")
    content = load_image(args.content, max_side=args.size, max_pixels=args.max_pixels)
    # Refuse a run that cannot fit before anything is compiled; a sweep holds every run at once.
    check_fits(*content.shape[:2], config,
               budget=None if args.max_memory is None else round(args.max_memory * 1e9),
               batch=len(_sweep_grid(args)) if args.command == "sweep" else 1)
    scales = scales or [1.0] * len(styles)
    images = [load_image(path, max_side=max(1, round(args.size * args.style_scale * scale)),
                         max_pixels=args.max_pixels)
              for path, scale in zip(styles, scales)]
    need = min_image_side(config.feature_layers)
    for path, image in ((args.content, content), *zip(styles, images)):
        if min(image.shape[:2]) < need:
            raise NstError(f"{path}: {image.shape[1]}x{image.shape[0]} px after resizing; the "
                           f"layers used need at least {need} px per side (raise --size)")
    seed = args.seed if isinstance(args.seed, int) else args.seed[0]
    source = resolve_weights(args.weights, seed=seed)
    # The input convention comes from the weights file, never from a flag. A preset may refine
    # the Caffe convention (neural-style feeds 0-256), never replace another one.
    if "preprocessing" not in args.preset_config:
        config = dataclasses.replace(config, preprocessing=source.preprocessing)
    elif source.preprocessing != CAFFE:
        raise NstError(f"--preset {args.preset} needs Caffe-convention (BGR 0-255) weights, but "
                       f"{source.path} expects {source.preprocessing.channel_order} input")
    record = {"source": source.source, "path": source.path, "md5": source.md5,
              "seed": source.seed, "preprocessing": source.preprocessing.as_dict()}
    settings = {k: (str(v) if isinstance(v, Path) else
                    [str(x) for x in v] if isinstance(v, list) and v and isinstance(v[0], Path)
                    else v)
                for k, v in vars(args).items()
                if k not in ("command", "output", "log", "quiet", "overwrite", "preset_config")}
    print(f"{args.content.name} + {', '.join(p.name for p in styles)} -> {args.output} "
          f"({content.shape[1]}x{content.shape[0]} px, weights: {source.source}"
          f"{' ' + source.path if source.path else ''}); compiling...", file=sys.stderr)
    return config, content, images, source.params, record, settings


def _style_inputs(args) -> list[tuple[Path, float, float]]:
    """The style images of ``stylize``: the positional STYLE and every ``--style``, parsed as
    ``PATH[:WEIGHT[:SCALE]]``, with the region and multi-scale options checked against them."""
    texts = ([args.style] if args.style else []) + list(args.more_styles)
    if not texts:
        raise NstError("no style image: give STYLE (or --style PATH, repeated for a blend)")
    try:
        specs = [_style_spec(text) for text in texts]
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
    if args.scales is not None or args.scale_factor is not None:
        for flag, value in (("--resume", args.resume), ("--checkpoint-every",
                            args.checkpoint_every), ("--checkpoint", args.checkpoint),
                            ("--save-every", args.save_every)):
            if value:
                raise NstError(f"{flag} works for single-scale runs only, not with --scales / "
                               "--scale-factor")
    return specs


def _scale_sizes(args) -> list[int] | None:
    """Multi-scale sizes from ``--scales`` or ``--scale-factor``/``--min-size``; None if off."""
    from ._multiscale import pyramid_sizes

    if args.scales is not None and args.scale_factor is not None:
        raise NstError("give either --scales or --scale-factor, not both")
    if args.scales is not None:
        sizes = list(args.scales)
        if sizes[-1] != args.size:
            sizes.append(args.size)
        if sizes != sorted(set(sizes)) or sizes[0] < 1:
            raise NstError(f"--scales must increase up to --size {args.size}, got {args.scales}")
    elif args.scale_factor is not None:
        if not (args.scale_factor > 1 and math.isfinite(args.scale_factor)):
            raise NstError(f"--scale-factor must be > 1, got {args.scale_factor}")
        sizes = pyramid_sizes(args.size, factor=args.scale_factor, min_size=args.min_size)
    else:
        if args.scale_iterations is not None:
            raise NstError("--scale-iterations needs --scales or --scale-factor")
        return None
    counts = args.scale_iterations or [args.iterations] * len(sizes)
    if len(counts) != len(sizes) or min(counts) < 1:
        raise NstError(f"--scale-iterations: {len(counts)} positive counts needed for the scales "
                       f"{sizes}")
    args.scale_iterations = counts
    return sizes


def _stylize(args) -> int:
    import numpy as np

    from ._checkpoint import remove_stray_temporaries
    from ._color import luminance_images, match_color, recombine_luminance
    from ._image import load_label_map, load_masks

    specs = _style_inputs(args)
    args.style_paths = [path for path, _, _ in specs]
    sizes = _scale_sizes(args)
    _check_outputs(args)
    if args.checkpoint is not None:
        # A SIGKILLed writer cannot remove its temporary file; this run owns those names.
        remove_stray_temporaries(args.output, args.checkpoint)
    config, content, styles, params, weights_record, settings = _prepare(
        args, args.style_paths, [scale for _, _, scale in specs])
    photo = content
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
    run = {"params": params, "config": config, "content_weight": args.content_weight,
           "style_weight": args.style_weight, "tv_weight": args.tv_weight,
           "style_layer_weights": args.style_layer_weights,
           "content_layer_weights": args.content_layer_weights, "style_blend": blend,
           "masks": masks, "init": args.init, "key": _jax_key(args.seed), "tol": args.tol,
           "patience": args.patience}
    if sizes is not None:
        return _run_multiscale(args, content, styles, run, sizes, finish, weights_record,
                               settings)
    return _run_single(args, content, styles, run, finish, weights_record, settings, specs)


def _run_multiscale(args, content, styles, run, sizes, finish, weights_record,
                    settings) -> int:
    import numpy as np

    from ._multiscale import _resize, stylize_multiscale

    latest: dict[str, Any] = {}
    bars: list[_Progress] = []

    def on_scale(index, size):
        bars.append(_Progress(args.scale_iterations[index], args.quiet))
        print(f"scale {index + 1}/{len(sizes)}: {size} px, {args.scale_iterations[index]} "
              "iterations", file=sys.stderr)

    def callback(state, records):
        latest["image"] = np.asarray(state.best_image)
        bars[-1].update(int(state.iteration), float(state.loss), np.asarray(state.terms),
                        int(state.evaluations))
        return False

    try:
        result = stylize_multiscale(content, styles, sizes=sizes,
                                    iterations=args.scale_iterations, on_scale=on_scale,
                                    callback=callback, **run)
    except KeyboardInterrupt:
        if "image" in latest:
            image = finish(_resize(latest["image"], content.shape[:2]))
            save_image(args.output, image, metadata={
                "weights": weights_record, "settings": settings, "status": "interrupted",
                "scale": len(bars)})
            print(f"\n{_PROG}: interrupted at scale {len(bars)}; saved its latest image "
                  f"(upsampled) to {args.output}", file=sys.stderr)
        raise
    for bar, scale in zip(bars, result.scales):
        history = scale.history
        bar.update(scale.iterations, float(history["loss"][-1]),
                   [history[name][-1] for name in ("content", "style", "tv")],
                   scale.evaluations, final=True)
    summary = {"sizes": sizes, "iterations": [r.iterations for r in result.scales],
               "evaluations": [r.evaluations for r in result.scales],
               "status": result.scales[-1].status,
               "loss": float(result.scales[-1].history["loss"][-1]),
               "compile_seconds": round(sum(r.compile_seconds for r in result.scales), 3)}
    save_image(args.output, finish(result.image),
               metadata={"weights": weights_record, "settings": settings, **summary})
    if args.log is not None:
        _write_json(args.log, {
            "nst_jax": __version__, "weights": weights_record, "settings": settings, **summary,
            "scales": [{"size": size, "history": {k: np.asarray(v).tolist()
                                                  for k, v in r.history.items()}}
                       for size, r in zip(sizes, result.scales)]})
    print(f"{summary['status']}: scales {sizes}, {sum(summary['iterations'])} iterations; "
          f"wrote {args.output}", file=sys.stderr)
    return 0


def _run_single(args, content, styles, run, finish, weights_record, settings, specs) -> int:
    import numpy as np

    from ._checkpoint import (
        append_records,
        config_dict,
        file_fingerprint,
        load_checkpoint,
        meta_differences,
        read_checkpoint_meta,
        save_checkpoint,
    )
    from ._optimize import NONFINITE, stylize

    config = run["config"]
    checkpoint = args.checkpoint  # None: no checkpoints
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
            "image_shape": list(content.shape), "config": config_dict(config),
            "loss_weights": {"content": args.content_weight, "style": args.style_weight,
                             "tv": args.tv_weight, "style_layers": args.style_layer_weights},
            "init": args.init, "seed": args.seed, "weights": weights_record,
        }
    if args.resume:
        differences = meta_differences(read_checkpoint_meta(checkpoint), run_meta)
        if differences:
            raise NstError(f"{checkpoint}: the checkpoint belongs to a different run: "
                           f"{'; '.join(differences)}. Resume with the original inputs and "
                           "settings, or pass --overwrite without --resume to start again")
    # Iteration 0 first (this compiles): a fresh and a resumed run then continue alike from a
    # state, bit for bit (the history is kept here, so a checkpoint can hold it).
    first = stylize(content, styles, **run, iterations=0)
    state, history = first.state, first.history
    if args.resume:
        state, history, _ = load_checkpoint(checkpoint, first.state)
        print(f"resuming from {checkpoint} at iteration {int(state.iteration)}", file=sys.stderr)
    done = int(state.iteration)
    progress = _Progress(args.iterations, args.quiet)
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
        if args.save_every and iteration // args.save_every > latest["saved"]:
            latest["saved"] = iteration // args.save_every
            name = f"{args.output.stem}_{iteration:05d}{args.output.suffix}"
            save_image(args.output.with_name(name), image_of(state),
                       metadata={"weights": weights_record, "settings": settings,
                                 "iteration": iteration})
        every = args.checkpoint_every
        if every and iteration // every > (latest["checkpointed"] or 0) // every:
            # Checkpoint first: OUT never shows an iteration that the checkpoint cannot resume.
            write_checkpoint(state, history)
            save_image(args.output, image_of(state), metadata={
                "weights": weights_record, "settings": settings, "iteration": iteration,
                "checkpoint": str(checkpoint)})
        return False

    # Chunks must end on multiples of both --save-every and --checkpoint-every.
    every = math.gcd(*[n for n in (args.save_every, args.checkpoint_every) if n]) or None
    try:
        result = stylize(content, styles, **run, iterations=args.iterations, state=state,
                         targets=first.targets, callback=callback, save_every=every)
    except KeyboardInterrupt:
        state, history = latest["state"], latest["history"]
        iteration = int(state.iteration)
        if checkpoint is None and iteration == 0:
            raise  # nothing done yet: no image worth writing
        hint = " (--checkpoint-every N makes a run resumable)"
        if checkpoint is not None:
            if latest["checkpointed"] != iteration:
                write_checkpoint(state, history)
            hint = (f" and the checkpoint to {checkpoint}; continue with the same command "
                    "plus --resume")
        save_image(args.output, image_of(state), metadata={
            "weights": weights_record, "settings": settings, "iteration": iteration,
            "status": "interrupted"})
        print(f"\n{_PROG}: interrupted at iteration {iteration}; saved the best image so far "
              f"to {args.output}{hint}", file=sys.stderr)
        raise
    history = latest["history"]
    if done >= args.iterations:
        print(f"the checkpoint is at iteration {done} already; raise --iterations to continue",
              file=sys.stderr)
    terms = [history[name][-1] for name in ("content", "style", "tv")]
    progress.update(result.iterations, float(history["loss"][-1]), terms, result.evaluations,
                    final=True)
    best = float(result.state.best_loss)
    summary = {"iterations": result.iterations, "evaluations": result.evaluations,
               "status": result.status, "loss": float(history["loss"][-1]),
               "best_loss": best,  # the loss of the image written (the lowest seen)
               "compile_seconds": round(first.compile_seconds + result.compile_seconds, 3)}
    if checkpoint is not None and latest["checkpointed"] != result.iterations:
        # Kept after a normal end: a later --resume with more --iterations extends the run.
        write_checkpoint(result.state, history)
    save_image(args.output, finish(result.image),
               metadata={"weights": weights_record, "settings": settings, **summary})
    if args.log is not None:
        _write_json(args.log, {
            "nst_jax": __version__, "weights": weights_record, "settings": settings, **summary,
            "history": {"iteration": list(range(len(history["loss"]))),
                        **{k: np.asarray(v).tolist() for k, v in history.items()}},
        })
    kept = (f"; checkpoint {checkpoint} (add --resume and more --iterations to continue)"
            if checkpoint is not None else "")
    if int(result.state.status) == NONFINITE:
        print(f"{_PROG}: error: the loss became NaN or infinite at iteration "
              f"{result.iterations + 1}; wrote the best image so far (loss {best:.4g}) to "
              f"{args.output}. Try a smaller --style-weight or --learning-rate, "
              "--linesearch backtracking, or --dtype float32", file=sys.stderr)
        return 1
    print(f"{result.status}: {result.iterations} iterations, {result.evaluations} evaluations, "
          f"loss {history['loss'][0]:.4g} -> {best:.4g}; wrote {args.output}"
          f"{kept}", file=sys.stderr)
    return 0


def _sweep_grid(args) -> list[dict[str, Any]]:
    """One dict per run: every combination of the listed values (styles outermost)."""
    return [
        {"style": s, "content_weight": c, "style_weight": w, "tv_weight": t, "seed": seed}
        for s in range(len(args.styles)) for c in args.content_weight
        for w in args.style_weight for t in args.tv_weight for seed in args.seed
    ]


def _run_label(run: dict[str, Any], args) -> str:
    parts = []
    if len(args.styles) > 1:
        parts.append(args.styles[run["style"]].stem)
    for key, short in (("content_weight", "cw"), ("style_weight", "sw"), ("tv_weight", "tv"),
                       ("seed", "seed")):
        if len(getattr(args, key)) > 1:
            parts.append(f"{short}{run[key]:g}")
    return "_".join(parts) or "run"


def _sweep(args) -> int:
    import numpy as np

    from ._batch import stylize_batch
    from ._sheet import contact_sheet, loss_plot

    grid = _sweep_grid(args)
    labels = [f"{i:03d}_{_run_label(run, args)}" for i, run in enumerate(grid)]
    outdir = args.output
    names = [f"{label}.png" for label in labels] + [
        "contact_sheet.png", "loss_curves.png", "sweep.json"]
    if outdir.exists() and not outdir.is_dir():
        raise NstError(f"{outdir}: exists and is not a folder")
    existing = [name for name in names if (outdir / name).exists()]
    if existing and not args.overwrite:
        raise NstError(f"{outdir / existing[0]}: already exists; pass --overwrite to replace it")
    for style in args.styles:
        if same_file(outdir, style.parent) and f"{style.stem}.png" in names:
            raise NstError(f"{style}: an output would overwrite this input")
    _make_output_folder(outdir)
    config, content, styles, params, weights_record, settings = _prepare(args, args.styles)
    progress = _Progress(args.iterations, args.quiet)

    def callback(state, records):
        # The bar follows the slowest lane (the job ends with it) and shows the best loss.
        best = int(np.argmin(np.asarray(state.loss)))
        progress.update(int(np.max(state.iteration)), float(state.loss[best]),
                        np.asarray(state.terms[best]), int(np.sum(state.evaluations)))
        return False

    result = stylize_batch(
        content, styles, params=params, config=config,
        content_weight=[r["content_weight"] for r in grid],
        style_weight=[r["style_weight"] for r in grid],
        tv_weight=[r["tv_weight"] for r in grid],
        style_layer_weights=args.style_layer_weights,
        style_index=[r["style"] for r in grid], seeds=[r["seed"] for r in grid],
        init=args.init, iterations=args.iterations, tol=args.tol, patience=args.patience,
        callback=callback,
    )
    history = result.history
    progress.update(int(result.iterations.max()), float(history["loss"][-1].min()),
                    [history[n][-1][int(np.argmin(history["loss"][-1]))]
                     for n in ("content", "style", "tv")],
                    int(result.evaluations.sum()), final=True)
    runs = []
    for i, (run, label) in enumerate(zip(grid, labels)):
        summary = {**run, "style": str(args.styles[run["style"]]),
                   "iterations": int(result.iterations[i]),
                   "evaluations": int(result.evaluations[i]), "status": result.status[i],
                   "loss": float(history["loss"][-1, i])}
        save_image(outdir / f"{label}.png", result.images[i],
                   metadata={"weights": weights_record, "settings": settings, "run": summary})
        runs.append({"file": f"{label}.png", **summary,
                     "history": {k: np.asarray(history[k][:, i]).tolist()
                                 for k in ("loss", "content", "style", "tv", "evaluations")}})
    _save_picture(outdir / "contact_sheet.png", contact_sheet(list(result.images), labels))
    _save_picture(outdir / "loss_curves.png",
                  loss_plot([history["loss"][:, i] for i in range(len(grid))], labels))
    _write_json(outdir / "sweep.json", {
        "nst_jax": __version__, "weights": weights_record, "settings": settings,
        "devices": result.devices, "compile_seconds": round(result.compile_seconds, 3),
        "seconds": np.asarray(history["seconds"]).tolist(), "runs": runs,
    })
    print(f"{len(grid)} runs on {result.devices} device(s): wrote {outdir}/ "
          "(images, contact_sheet.png, loss_curves.png, sweep.json)", file=sys.stderr)
    return 0


_FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _frames(args) -> int:

    from ._multiscale import stylize_frames

    if not args.frames.is_dir():
        raise NstError(f"{args.frames}: not a folder of frames")
    paths = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
    if not paths:
        raise NstError(f"{args.frames}: no frame images ({', '.join(sorted(_FRAME_SUFFIXES))})")
    outdir = args.output
    if outdir.exists() and not outdir.is_dir():
        raise NstError(f"{outdir}: exists and is not a folder")
    if same_file(outdir, args.frames):
        raise NstError(f"{outdir}: the output folder must differ from the frames folder")
    outputs = [outdir / f"{p.stem}.png" for p in paths]
    done = [out.exists() for out in outputs]
    if any(done) and not (args.overwrite or args.skip_existing):
        first = outputs[done.index(True)]
        raise NstError(f"{first}: already exists; pass --skip-existing to continue the job or "
                       "--overwrite to redo it")
    _make_output_folder(outdir)
    skip = 0
    if args.skip_existing and not args.overwrite:
        while skip < len(paths) and done[skip]:
            skip += 1
    if skip == len(paths):
        print(f"all {len(paths)} frames already done in {outdir}/", file=sys.stderr)
        return 0
    args.content = paths[skip]
    config, first, (style,), params, weights_record, settings = _prepare(args, [args.style])
    init = args.init
    if skip:
        init = load_image(outputs[skip - 1])
        if init.shape != first.shape:
            raise NstError(f"{outputs[skip - 1]}: size differs from the frames; remove it or "
                           "pass --overwrite")

    def frames():
        for path in paths[skip:]:
            frame = load_image(path, max_side=args.size, max_pixels=args.max_pixels)
            if frame.shape != first.shape:
                raise NstError(f"{path}: {frame.shape[1]}x{frame.shape[0]} px after resizing, "
                               f"the first frame is {first.shape[1]}x{first.shape[0]}; all "
                               "frames must have one size")
            yield frame

    results = stylize_frames(
        frames(), style, params=params, config=config, init=init,
        key=_jax_key(args.seed), content_weight=args.content_weight,
        style_weight=args.style_weight, tv_weight=args.tv_weight,
        style_layer_weights=args.style_layer_weights,
        content_layer_weights=args.content_layer_weights, iterations=args.iterations,
        tol=args.tol, patience=args.patience)
    start = time.perf_counter()
    for count, (path, out, result) in enumerate(zip(paths[skip:], outputs[skip:], results), 1):
        save_image(out, result.image, metadata={
            "weights": weights_record, "settings": settings, "frame": path.name,
            "iterations": result.iterations, "status": result.status,
            "loss": float(result.history["loss"][-1])})
        if not args.quiet:
            left = (time.perf_counter() - start) / count * (len(paths) - skip - count)
            print(f"frame {skip + count}/{len(paths)} {path.name}: {result.iterations} "
                  f"iterations, loss {result.history['loss'][-1]:.4g} ({result.status}); "
                  f"ETA {_clock(left)}", file=sys.stderr)
    print(f"wrote {len(paths) - skip} frames to {outdir}/", file=sys.stderr)
    return 0


def _jax_key(seed: int):
    import jax

    return jax.random.key(seed)


def _save_picture(path: Path, picture) -> None:
    import numpy as np

    save_image(path, np.asarray(picture.convert("RGB"), np.float32))


if __name__ == "__main__":
    sys.exit(main())
