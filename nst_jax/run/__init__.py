"""Running the optimization: one image (:func:`stylize`), a batch or sweep in one compiled
program (:func:`stylize_batch`, sharded over devices and processes), coarse-to-fine
(:func:`stylize_multiscale`), video frames (:func:`stylize_frames`) and resumable checkpoints.
"""

from ._batch import CPU_VMAP_MAX_PIXELS, BatchResult, stylize_batch
from ._checkpoint import load_checkpoint, save_checkpoint, state_template
from ._loop import STATUS_NAMES, OptState, init_state, run_steps
from ._multiscale import (
    MIN_SIZE,
    SCALE_FACTOR,
    MultiscaleResult,
    pyramid_sizes,
    split_iterations,
    stylize_frames,
    stylize_multiscale,
)
from ._stylize import (
    DEFAULT_ITERATIONS,
    DEFAULT_PATIENCE,
    DEFAULT_TOL,
    INITS,
    StylizeResult,
    initial_image,
    stylize,
)

__all__ = [
    "CPU_VMAP_MAX_PIXELS",
    "DEFAULT_ITERATIONS",
    "DEFAULT_PATIENCE",
    "DEFAULT_TOL",
    "INITS",
    "MIN_SIZE",
    "SCALE_FACTOR",
    "STATUS_NAMES",
    "BatchResult",
    "MultiscaleResult",
    "OptState",
    "StylizeResult",
    "init_state",
    "initial_image",
    "load_checkpoint",
    "pyramid_sizes",
    "run_steps",
    "save_checkpoint",
    "split_iterations",
    "state_template",
    "stylize",
    "stylize_batch",
    "stylize_frames",
    "stylize_multiscale",
]
