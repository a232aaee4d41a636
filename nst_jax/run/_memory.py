"""How much memory a run needs, how much there is, and a refusal before compute if it won't fit.

The estimate is a linear cost model fitted to measurements, not a promise: an image that does
not fit is refused with the largest size that would, instead of swapping the machine to a halt or
dying in XLA's allocator minutes into the compile. Sizes are in bytes; messages use GB (1e9).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .._errors import NstError

# Peak process RSS of one loss+gradient evaluation (README "Benchmarks", scripts/bench.py memory
# probes: XLA:CPU, float32, default layers conv1_1..conv5_1 + conv4_2, 2026-11-27, after the
# elementwise max-pool derivative of _vgg._max_pool and the one-product Gram derivative of
# _losses.gram_matrix): 884 MiB at 256 px (170x256) and 1,173 MiB at 512 px (341x512). XLA's
# own plan (1.4 GB at 1024 px, 5.2 GB at 2048 px) grows linearly with a lower slope (1.8 GiB
# per megapixel), so the line extrapolates safely.
_MEASURED = ((170 * 256, 884 * 2**20), (341 * 512, 1173 * 2**20))  # (pixels, peak bytes)
#: Bytes per image pixel of one evaluation: the slope between the two measurements (2,312, i.e.
#: 2,205 MiB per megapixel, the README's "2.2 GB"): VGG activations, gradients, temporaries.
BYTES_PER_PIXEL = (_MEASURED[1][1] - _MEASURED[0][1]) / (_MEASURED[1][0] - _MEASURED[0][0])
#: Bytes that do not grow with the image (~0.77 GiB): the JAX runtime, VGG-19 weights, code.
BASE_BYTES = _MEASURED[0][1] - BYTES_PER_PIXEL * _MEASURED[0][0]

_FLOAT32 = 4


def estimate_bytes(height: int, width: int, solver, *, batch: int = 1) -> int:
    """Peak bytes of one loss+gradient evaluation plus the optimizer state, for ``batch`` runs
    of an ``height`` x ``width`` image held at once (a sweep vmaps them on one device).

    ``BASE_BYTES + batch * pixels * (BYTES_PER_PIXEL + state)``, where the optimizer state per
    pixel is L-BFGS's ``2 * history_size`` float32 RGB vectors (the s and y histories) or
    Adam's two moments. ``StyleConfig.dtype`` and ``remat`` are deliberately not credited:
    on XLA:CPU at 512 px remat lowered the measured peak by 4% (1,125 vs 1,173 MiB) and
    bfloat16 raised it (1,301), and on GPUs they are not measured yet; shallower
    ``StyleConfig.feature_layers`` would need less, so for them the estimate errs on the safe
    side.
    Accelerators get the same (CPU-measured) model.

    Args:
        height, width: image size in pixels, after resizing.
        solver: a :class:`nst_jax.solvers.SolverConfig` (``name``, ``history_size`` are read).
        batch: runs that share the memory.
    """
    return math.ceil(BASE_BYTES + batch * height * width * _bytes_per_pixel(solver))


def _bytes_per_pixel(solver) -> float:
    vectors = 2 if solver.name == "adam" else 2 * solver.history_size
    return BYTES_PER_PIXEL + vectors * 3 * _FLOAT32


def available_bytes() -> int | None:
    """Memory the run may use now: on an accelerator, the first device's ``bytes_limit`` minus
    ``bytes_in_use``; on CPU, Linux's MemAvailable (free memory plus reclaimable caches), else
    the free physical pages from ``os.sysconf``. None where neither can be read."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def largest_side(height: int, width: int, solver, budget: int, *, batch: int = 1) -> int:
    """Longest side (px) of the largest image with this aspect ratio that fits ``budget``
    bytes by :func:`estimate_bytes`; 0 when not even the fixed cost fits."""
    pixels = (budget - BASE_BYTES) / (batch * _bytes_per_pixel(solver))
    if pixels <= 0:
        return 0
    longest, shortest = max(height, width), min(height, width)
    return math.floor(math.sqrt(pixels * longest / shortest))


def check_fits(height: int, width: int, solver, *, budget: int | None = None,
               batch: int = 1) -> None:
    """Refuse, before any compute, a run that would not fit in memory.

    Args:
        height, width: the content image after resizing (the optimized image has its size).
        solver: a :class:`nst_jax.solvers.SolverConfig`.
        budget: bytes the run may use; None means :func:`available_bytes` (and no check when
            that is unknown).
        batch: runs held at once (a sweep's grid size).

    Raises:
        NstError: the estimate exceeds the budget; the message gives both, in GB, and the
            largest longest side that fits at this aspect ratio.
    """
    if budget is None:
        budget = available_bytes()
        if budget is None:
            return
    need = estimate_bytes(height, width, solver, batch=batch)
    if need <= budget:
        return
    runs = f"{batch} runs of a {width}x{height} image need" if batch > 1 else \
        f"a {width}x{height} image needs"
    start = (f"{runs} about {need / 1e9:.1f} GB (estimate), but "
             f"only {budget / 1e9:.1f} GB is available")
    side = largest_side(height, width, solver, budget, batch=batch)
    if side < 1:
        raise NstError(f"{start}, less than the {BASE_BYTES / 1e9:.1f} GB needed at any size "
                       "(free memory, or raise --max-memory if the estimate is too cautious)")
    fewer = ", fewer runs" if batch > 1 else ""
    raise NstError(f"{start}; the largest that fits is about {side} px on the longest side at "
                   f"this aspect ratio (use --size {side}{fewer}, or raise --max-memory if "
                   "the estimate is too cautious)")
