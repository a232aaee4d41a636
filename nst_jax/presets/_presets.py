"""Named presets: the settings of the main references, each value with its source.

The presets are data, ``presets.toml`` next to this module, read with the standard library and
validated on load: every objective setting must be a :class:`~nst_jax.StyleConfig` field, every
solver setting a :class:`~nst_jax.solvers.SolverConfig` field, every run setting a
:func:`~nst_jax.stylize` keyword, and the values must build valid configs. Pixel convention as
everywhere: RGB 0-255 outside the network, so weights a reference states in other pixel units
are converted in the file (and say so).

* ``gatys2016``: Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural
  Networks", CVPR 2016.
* ``neural-style``: the defaults of jcjohnson/neural-style (``neural_style.lua``, Torch7).
* ``pytorch-tutorial``: "Neural Transfer Using PyTorch" (pytorch/tutorials,
  ``advanced_source/neural_style_tutorial.py``), torchvision's VGG-19.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._objective import LossWeights, StyleConfig, loss_weights
from .._preprocessing import Preprocessing
from ..solvers import SolverConfig

_FILE = Path(__file__).with_name("presets.toml")
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(StyleConfig))
_SOLVER_FIELDS = tuple(f.name for f in dataclasses.fields(SolverConfig))
_RUN_KEYS = ("content_weight", "style_weight", "tv_weight", "content_layer_weights",
             "style_layer_weights", "init", "iterations", "tol")
_TOP_KEYS = {"description", "reference", "size", "differences", "objective", "solver", "run",
             "sources"}


@dataclasses.dataclass(frozen=True)
class Preset:
    """The settings of one reference implementation or paper.

    Attributes:
        name: the key in :data:`PRESETS` (the CLI's ``--preset`` value).
        description: one paragraph: what it reproduces and which weights it needs.
        reference: the paper or repository and file.
        config_kwargs: :class:`~nst_jax.StyleConfig` fields (read-only mapping). A preset that
            sets ``preprocessing`` (only ``neural-style``, whose x256 input scaling is part of
            its code, not of its weights) means it; otherwise it comes from the weights.
        solver_kwargs: :class:`~nst_jax.solvers.SolverConfig` fields.
        run_kwargs: :func:`~nst_jax.stylize` keyword arguments: ``content_weight``,
            ``style_weight``, ``tv_weight``, ``content_layer_weights`` and
            ``style_layer_weights`` (explicit tuples), ``init``, ``iterations``, ``tol``.
        size: longest side of the output image the reference uses by default, pixels.
        sources: setting name -> where the value comes from.
        differences: what nst_jax does not reproduce exactly.
    """

    name: str
    description: str
    reference: str
    config_kwargs: Mapping[str, Any]
    solver_kwargs: Mapping[str, Any]
    run_kwargs: Mapping[str, Any]
    size: int
    sources: Mapping[str, str]
    differences: tuple[str, ...] = ()

    def __post_init__(self):
        for what, given, allowed in (("objective", self.config_kwargs, _CONFIG_FIELDS),
                                     ("solver", self.solver_kwargs, _SOLVER_FIELDS),
                                     ("run", self.run_kwargs, _RUN_KEYS)):
            unknown = set(given) - set(allowed)
            if unknown:
                raise ValueError(f"preset {self.name!r}: unknown {what} settings "
                                 f"{sorted(unknown)}; expected some of {', '.join(allowed)}")
        # Read-only views: a preset is a constant shared by every caller.
        for name in ("config_kwargs", "solver_kwargs", "run_kwargs", "sources"):
            object.__setattr__(self, name, types.MappingProxyType(dict(getattr(self, name))))
        StyleConfig(**self.config_kwargs)  # raises on an invalid value
        SolverConfig(**self.solver_kwargs)

    def settings(self) -> dict[str, Any]:
        """Every setting of the preset in one flat mapping (objective, solver as
        ``optimizer``/``history_size``/..., run and ``size``), for reports and the CLI."""
        solver = {("optimizer" if key == "name" else key): value
                  for key, value in self.solver_kwargs.items()}
        return {**self.config_kwargs, **solver, **self.run_kwargs, "size": self.size}


def _value(value):
    """TOML lists become tuples (hashable, as StyleConfig fields must be); an inline table with
    a ``channel_order`` is a :class:`~nst_jax.Preprocessing`."""
    if isinstance(value, list):
        return tuple(_value(v) for v in value)
    if isinstance(value, dict) and "channel_order" in value:
        return Preprocessing(value["channel_order"], value["input_scale"], tuple(value["mean"]),
                             tuple(value["std"]))
    return value


def load_presets(path: str | Path = _FILE) -> dict[str, Preset]:
    """Read and validate a presets file (the format of ``presets.toml``).

    Raises:
        ValueError: naming the file, the preset and what is wrong.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"{path}: cannot read presets ({err})") from None
    presets = {}
    for name, entry in data.items():
        unknown = set(entry) - _TOP_KEYS
        missing = {"description", "reference", "size", "objective", "solver", "run",
                   "sources"} - set(entry)
        if unknown or missing:
            raise ValueError(f"{path}: preset {name!r}: unknown keys {sorted(unknown)}, "
                             f"missing keys {sorted(missing)}")
        try:
            presets[name] = Preset(
                name=name, description=entry["description"], reference=entry["reference"],
                config_kwargs={k: _value(v) for k, v in entry["objective"].items()},
                solver_kwargs=dict(entry["solver"]),
                run_kwargs={k: _value(v) for k, v in entry["run"].items()},
                size=int(entry["size"]), sources=dict(entry["sources"]),
                differences=tuple(entry.get("differences", ())))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
    return presets


#: name -> :class:`Preset`, read-only.
PRESETS: Mapping[str, Preset] = types.MappingProxyType(load_presets())


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``.

    Raises:
        ValueError: unknown name; the message lists the presets.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str, **overrides) -> StyleConfig:
    """The :class:`~nst_jax.StyleConfig` of preset ``name``, with ``overrides`` (StyleConfig
    fields) replacing its values, e.g. ``preset_config("gatys2016", pooling="max")``.

    Raises:
        ValueError: unknown preset, or an override that is not a StyleConfig field (or an
            invalid value, from StyleConfig's own checks).
    """
    preset = get_preset(name)
    unknown = set(overrides) - set(_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"not StyleConfig fields: {', '.join(sorted(unknown))}; expected "
                         f"some of {', '.join(_CONFIG_FIELDS)}")
    return StyleConfig(**{**preset.config_kwargs, **overrides})


def preset_solver(name: str, **overrides) -> SolverConfig:
    """The :class:`~nst_jax.solvers.SolverConfig` of preset ``name`` with ``overrides``."""
    return SolverConfig(**{**get_preset(name).solver_kwargs, **overrides})


def preset_loss_weights(name: str, config: StyleConfig | None = None, **overrides) -> LossWeights:
    """The traced :class:`~nst_jax.LossWeights` of preset ``name`` for ``config`` (default
    :func:`preset_config` ``(name)``).

    Args:
        overrides: replace run settings: ``content_weight``, ``style_weight``, ``tv_weight``,
            ``content_layer_weights``, ``style_layer_weights``.

    Raises:
        ValueError: unknown preset or override, or per-layer weights whose number does not
            match ``config``'s layers (a config with other layers needs its own per-layer
            weights).
    """
    preset = get_preset(name)
    weight_keys = ("content_weight", "style_weight", "tv_weight", "content_layer_weights",
                   "style_layer_weights")
    unknown = set(overrides) - set(weight_keys)
    if unknown:
        raise ValueError(f"not loss weights: {', '.join(sorted(unknown))}; expected some of "
                         f"{', '.join(weight_keys)}")
    config = config or preset_config(name)
    run = {**preset.run_kwargs, **overrides}
    for key, layers in (("content_layer_weights", config.content_layers),
                        ("style_layer_weights", config.style_layers)):
        if len(run[key]) != len(layers):
            raise ValueError(f"preset {name!r}: {key} has {len(run[key])} values but the config "
                             f"has {len(layers)} layers; pass {key} for {', '.join(layers)}")
    return loss_weights(
        config, content=run["content_weight"], style=run["style_weight"], tv=run["tv_weight"],
        content_layers=run["content_layer_weights"], style_layers=run["style_layer_weights"],
    )


# ------------------------------------------------------------------------ docs/presets.md table

_ROWS = (
    ("content layers", "content_layers"),
    ("style layers", "style_layers"),
    ("layer output", "layer_output"),
    ("pooling", "pooling"),
    ("content loss", "content_norm"),
    ("style loss", "style_norm"),
    ("TV form", "tv_form"),
    ("input preprocessing", "preprocessing"),
    ("optimizer", "optimizer"),
    ("L-BFGS history", "history_size"),
    ("line search", "linesearch"),
    ("content weight (alpha)", "content_weight"),
    ("style weight (beta)", "style_weight"),
    ("TV weight (gamma)", "tv_weight"),
    ("style layer weights w_l", "style_layer_weights"),
    ("init", "init"),
    ("iterations", "iterations"),
    ("early stopping tol", "tol"),
    ("size (longest side, px)", "size"),
)


def _format(value) -> str:
    if isinstance(value, Preprocessing):
        mean = ", ".join(f"{m:g}" for m in value.mean)
        return f"{value.channel_order} 0-{value.input_scale:g}, minus ({mean})"
    if isinstance(value, tuple):
        if len(set(value)) == 1 and isinstance(value[0], float):
            return f"{_format(value[0])} each"
        return ", ".join(_format(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return str(value)


def _lookup(preset: Preset, key: str):
    return preset.settings().get(key)


def preset_table(*, differences: bool = True) -> str:
    """Markdown for docs/presets.md: one row per setting, one column per preset, each value with a
    numbered footnote giving its source (listed per preset below the table), then what each
    preset does not reproduce exactly (``differences=True``).
    """
    names = list(PRESETS)
    cells: dict[tuple[str, str], str] = {}
    notes: dict[str, list[str]] = {name: [] for name in names}
    number = 0
    for name in names:  # column by column, so each preset's footnotes are consecutive
        preset = PRESETS[name]
        seen: dict[str, int] = {}
        for _, key in _ROWS:
            value = _lookup(preset, key)
            if value is None:
                cells[name, key] = "from the weights file" if key == "preprocessing" else ""
                continue
            cell = _format(value)
            source = preset.sources.get(key)
            if source:
                if source not in seen:
                    number += 1
                    seen[source] = number
                    notes[name].append(f"[{number}] {source}")
                cell += f" [{seen[source]}]"
            cells[name, key] = cell.replace("|", "\\|")
    lines = ["| setting | " + " | ".join(f"`{name}`" for name in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for label, key in _ROWS:
        lines.append(f"| {label} | " + " | ".join(cells[name, key] for name in names) + " |")
    for name in names:
        lines += ["", f"Sources, `{name}` ({PRESETS[name].reference}):", ""]
        lines += [f"* {note}" for note in notes[name]]
    if differences:
        for name in names:
            lines += ["", f"Not reproduced exactly by `{name}`:", ""]
            lines += [f"* {text}" for text in PRESETS[name].differences]
    return "\n".join(lines) + "\n"
