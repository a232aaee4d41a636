"""Named presets: the settings of reference implementations (Gatys et al. 2016, neural-style,
the PyTorch tutorial), each value with its source; data in ``presets.toml``."""

from ._presets import (
    PRESETS,
    Preset,
    get_preset,
    load_presets,
    preset_config,
    preset_loss_weights,
    preset_solver,
    preset_table,
)

__all__ = [
    "PRESETS",
    "Preset",
    "get_preset",
    "load_presets",
    "preset_config",
    "preset_loss_weights",
    "preset_solver",
    "preset_table",
]
