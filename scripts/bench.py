"""Speed and memory of the Gatys objective, of the stylize loop and of batched sweeps.

Commands (from the repository root)::

    python scripts/bench.py                       # default (see runtimes below)
    python scripts/bench.py --json bench.json     # also write every number as JSON
    # quick check of every section (~5 min on the shared 2-core machine at load 5):
    python scripts/bench.py --sizes 64 --repeats 2 --variant-size 64 \
        --memory-sizes 64,128 --memory-plan-sizes 256 --no-e2e \
        --sweep-size 64 --sweep-batch 2 --sweep-iterations 2
    # memory at 2048 px measured for real, not only planned (adds ~10 min; XLA plans 10.4 GiB
    # for float32 there, more for the others: needs that much free RAM):
    python scripts/bench.py --memory-sizes 256,512,1024,2048
    # only some sections: --no-e2e, --no-memory, --no-sweep, --variant-size 0

Runtime of the default run on the 2-core CPU machine, estimated from small runs (not run in
full on a busy machine): about 30 minutes when quiet, ~50 minutes at a load average of 5.
Roughly: roofline and sizes 256, 512 ~1 min (a 512-px loss+gradient evaluation takes ~3-4 s,
a 256-px one ~1.1 s); variants at 512 ~2 min; memory ~5-6 min (16 fresh processes of 10-40 s:
startup, compile, one evaluation; 1024 px is the slowest); end to end ~4 min (100 L-BFGS
iterations at 256 px, ~2 s each, about half of it in the solver's own update); sweep ~20 min:
8 sequential 20-iteration runs ~9 min, then the batched call, which on this CPU is not
expected to finish: it is killed at ``--sweep-timeout`` (600 s) and the speed-up reported is an
upper bound. Trials at load 4-5: at 128 px, B=8, 4 iterations, the batch took 201 s against 81 s
for the 8 sequential runs (0.40x) while its vmapped objective alone took 0.76x the time of 8
single evaluations; at 256 px, B=8, one batched iteration had not finished after 15 minutes.

What it measures, for the chelsea example photo (content) and starry_night (style), each
resized so its longest side is the size (so "512" is 341x512, HxW):

1. per size (``--sizes``): lower+compile time of
   ``jax.jit(jax.value_and_grad(stylization_loss))``, the first call, then ms per
   loss+gradient evaluation (median, min, max of ``--repeats`` calls after it); ms per
   megapixel, to show how the cost scales with the image area, and a linearity line: ms/MP at
   the largest size over ms/MP at the smallest (1.00: cost proportional to the pixel count).
2. analytic FLOPs per evaluation and the GFLOP/s achieved at the median time. Counted: every
   VGG conv up to the deepest content/style layer, forward ``2*9*Cin*Cout*H*W`` at its own
   resolution (pooling floors the sizes), and its backward to the input, which costs the same
   (the params are constants, so no kernel gradient is computed; conv1_1's backward is counted
   too: the image is the variable); each style Gram ``F^T F`` forward ``2*N*N*M`` and backward
   ``2*N*N*M`` (one product, ``F (C + C^T)``: ``gram_matrix``'s own derivative).
   Elementwise work (ReLU, pooling, the losses) is not counted. The forward count is printed beside XLA's own
   ``cost_analysis()`` of the jitted forward loss, and the total beside XLA's count of the
   compiled loss+gradient. XLA leaves out the kernel taps that fall on the "SAME" zero padding
   ((3H-2)(3W-2) per channel pair instead of 9HW): the "no-pad" column counts that way and
   matches XLA within a fraction of a percent (the rest is elementwise work).
3. a dense-matmul roofline from the same run: float32 ``jnp.dot`` of two n x n matrices (n
   doubled from 1024 until one product takes over 50 ms); each evaluation's GFLOP/s is given
   as a fraction of it ("of matmul"), and for 512 px against the target of 75%. The machine's
   speed drifts (+-15% here), so every timed evaluation is preceded by one timed product and
   the fraction is the median of the per-pair ratios; the GFLOP/s of those products is shown.
4. variants (``--variant-size``, default 512): ms per evaluation of ``StyleConfig(remat=True)``,
   ``StyleConfig(dtype="bfloat16")`` and both, beside float32: their speed cost.
5. memory, in a fresh subprocess (this script with hidden flags) per (size, variant), variants
   float32, remat, bfloat16, remat+bfloat16: for ``--memory-sizes`` (default 256,512,1024) the
   process compiles and runs ONE evaluation and reports its RSS before compiling (params and
   targets built), the peak RSS while compiling and while evaluating (Linux VmHWM, reset in
   between through /proc/self/clear_refs, see :func:`reset_peak_rss`), on accelerators
   ``memory_stats()["peak_bytes_in_use"]``, and XLA's buffer plan (``memory_analysis()``:
   temp, arguments, output); for ``--memory-plan-sizes`` (default 2048) it only compiles from
   the shapes (``jax.eval_shape``; nothing is computed, ~10-20 s each) and reports the plan.
   Then per variant: MB per megapixel (slope of a linear fit of the peak against the pixel
   count over the run sizes; the intercept is the runtime, params and executable), the same
   slope of XLA's plan over all sizes, and the largest image that fits ``--memory-budget-gb``
   (default 8 GiB) by the fit: megapixels, side of a square, longest side at the example's
   aspect ratio. MB = MiB, GB = GiB. On XLA:CPU bfloat16 alone saves little (no native bf16
   convolution: XLA converts to float32 and keeps float32 kernel copies), and remat only works
   because ``nst_jax._model._remat`` ties the recomputation to the backward pass (``jax.checkpoint``'s
   barrier is dropped by XLA:CPU and CSE merged the recomputation away); check the measured
   columns rather than assume the savings.
6. end-to-end ``stylize(iterations=--e2e-iterations, tol=0)`` at ``--e2e-size``: a warm-up call
   with ``iterations=0`` compiles everything (its ``compile_seconds`` is reported), then the timed
   call: wall seconds, iterations, evaluations, evaluations/iteration, s/iteration and the
   overhead factor wall / (evaluations * median evaluation time at that size, which is added to
   the measured sizes when it is not among them). The wall time includes the target features
   (one forward pass of each image), which the factor thus counts as overhead.
7. sweep (``--sweep``, default on; ``--no-sweep``): ``--sweep-batch`` (8) style weights,
   logspace 1e2..1e4, ``--sweep-iterations`` (20) iterations each, tol=0, at ``--sweep-size``
   (256): ``--sweep-batch`` sequential ``stylize`` calls (after a warm-up call that compiles;
   each call's ``compile_seconds`` subtracted) against ONE ``stylize_batch`` call with all the
   weights, run in a subprocess (warm-up call with iterations=0, then the timed call) that is
   killed after ``--sweep-timeout`` seconds, compile included. Runs per minute for both, the
   speed-up (target >= 1.2x; said plainly when batched is slower; an upper bound when the
   batched call was killed), the iterations per compiled call of each, the largest relative
   difference of the final losses, and the objective alone: one vmapped loss+gradient of the
   B images against B single ones (below 1x: the objective gains from batching, so a slow
   batch is the solver's doing).

Output: the tables on stdout, with the load average at the start and at the end (other
processes may share the CPUs); with ``--json PATH`` every number plus jax version, backend,
device kind, CPU count, load averages, date and arguments. Weights: the pretrained VGG-19
(``--weights auto``, as the CLI finds or downloads it; the speed does not depend on the weights'
values, but every figure here is measured on them); the subprocesses read the same params from a
temporary .npz file.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import load_image, with_backward_kernels
from nst_jax._model import CONV_SPECS, LAYERS, canonical_layer
from nst_jax._objective import StyleConfig, loss_weights, make_targets, stylization_loss
from nst_jax.run import stylize, stylize_batch
from nst_jax.run._loop import chunk_size
from nst_jax.weights import load_vgg19_params, resolve_weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VARIANTS = {
    "float32": StyleConfig(),
    "remat": StyleConfig(remat=True),
    "bfloat16": StyleConfig(dtype="bfloat16"),
    "remat+bfloat16": StyleConfig(dtype="bfloat16", remat=True),
}
CONFIG = VARIANTS["float32"]


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int_list, default=[256, 512],
                        help="longest image sides to measure, comma separated (default 256,512)")
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluations per size")
    parser.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end stylize run")
    parser.add_argument("--e2e-size", type=int, default=256)
    parser.add_argument("--e2e-iterations", type=int, default=100)
    parser.add_argument("--variant-size", type=int, default=512,
                        help="size at which the remat/bfloat16 variants are timed (0: skip)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--memory-sizes", type=int_list, default=[256, 512, 1024],
                        help="sizes whose memory is measured by compiling and running one "
                             "evaluation per variant in a fresh process (default 256,512,1024)")
    parser.add_argument("--memory-plan-sizes", type=int_list, default=[2048],
                        help="sizes only compiled (XLA's memory plan, nothing run; default 2048)")
    parser.add_argument("--memory-budget-gb", type=float, default=8.0,
                        help="memory budget (GiB) for the largest-size estimate (default 8)")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                        help="time stylize_batch against sequential stylize calls (default on)")
    parser.add_argument("--sweep-size", type=int, default=256)
    parser.add_argument("--sweep-batch", type=int, default=8)
    parser.add_argument("--sweep-iterations", type=int, default=20)
    parser.add_argument("--sweep-timeout", type=float, default=600,
                        help="seconds after which the stylize_batch subprocess is killed "
                             "(compile included; default 600)")
    parser.add_argument("--weights", default="auto",
                        help="auto (default: the pretrained VGG-19, found or downloaded as the "
                        "CLI does), random, or a Keras-layout HDF5 file")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe-variant", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--probe-plan-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-params", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batched-probe", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_params(weights: str):
    """The params of ``--weights`` (the pretrained VGG-19 unless told otherwise; a
    subprocess gets an .npz path through --probe-params instead)."""
    if str(weights).endswith(".h5"):
        return load_vgg19_params(weights)
    return resolve_weights(str(weights)).params


def load_pair(size: int):
    """Content and style RGB 0-255 arrays, each resized so its longest side is ``size``."""
    return (load_image(EXAMPLES / "chelsea.jpg", max_side=size),
            load_image(EXAMPLES / "starry_night.jpg", max_side=size))


def loss_args(params, content, style, config: StyleConfig, *, abstract: bool = False):
    """Arguments of ``stylization_loss``: (image, params, targets, weights). ``abstract``: only
    their shapes and dtypes (``jax.eval_shape``: nothing is computed), enough to compile.
    The params carry their input-gradient kernels, as in :func:`nst_jax.stylize`."""
    params = with_backward_kernels(params, config.feature_layers)

    def build(content, style):
        targets = make_targets(params, content, style, config)
        return content, params, targets, loss_weights(config)

    content, style = jnp.asarray(content), jnp.asarray(style)
    return jax.eval_shape(build, content, style) if abstract else build(content, style)


def compiled_loss(params, content, style, *, grad: bool, config: StyleConfig = CONFIG,
                  abstract: bool = False):
    """(seconds to lower+compile, compiled function, its arguments)."""
    args = loss_args(params, content, style, config, abstract=abstract)
    fun = functools.partial(stylization_loss, config=config)
    if grad:
        fun = jax.value_and_grad(fun, has_aux=True)
    start = time.perf_counter()
    compiled = jax.jit(fun).lower(*args).compile()
    return time.perf_counter() - start, compiled, args


PLAN_FIELDS = ("temp", "argument", "output", "alias", "generated_code", "peak_memory")


def memory_plan(compiled) -> dict | None:
    """XLA's buffer plan of a compiled function, MiB (``memory_analysis()``; None where the
    backend gives none). ``total`` = temp + argument + output - alias."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        stats = None
    if stats is None:
        return None
    plan = {name: getattr(stats, f"{name}_size_in_bytes" if name != "peak_memory"
                          else "peak_memory_in_bytes", None) for name in PLAN_FIELDS}
    plan = {name: value / 2**20 for name, value in plan.items() if value is not None}
    if {"temp", "argument", "output"} <= plan.keys():
        plan["total"] = plan["temp"] + plan["argument"] + plan["output"] - plan.get("alias", 0.0)
    return plan


def timed(fun, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fun(*args))
    return time.perf_counter() - start


def xla_flops(compiled) -> float | None:
    """XLA's FLOP estimate of a compiled function (``cost_analysis`` is a dict or a list)."""
    costs = compiled.cost_analysis()
    if isinstance(costs, (list, tuple)):
        costs = costs[0] if costs else None
    return costs.get("flops") if costs else None


def conv_layers(height: int, width: int, config: StyleConfig):
    """(name, H, W, Cin, Cout) of each conv computed for ``config``, at its own resolution."""
    deepest = max(LAYERS.index(name) for name in config.feature_layers)
    layers, channels = [], 3
    for name, (block, index, width_out) in zip(LAYERS, CONV_SPECS[: deepest + 1]):
        if index == 1 and block > 1:
            height, width = height // 2, width // 2
        layers.append((name, height, width, channels, width_out))
        channels = width_out
    return layers


def analytic_flops(height: int, width: int, config: StyleConfig) -> dict[str, float]:
    """FLOPs of one loss+gradient evaluation (see the module docstring for what is counted)."""
    layers = conv_layers(height, width, config)
    conv = sum(2 * 9 * cin * cout * h * w for _, h, w, cin, cout in layers)
    # Taps on the zero padding left out, as XLA counts: (3H-2)(3W-2) instead of 9HW.
    unpadded = sum(2 * cin * cout * (3 * h - 2) * (3 * w - 2) for _, h, w, cin, cout in layers)
    style = {canonical_layer(name) for name in config.style_layers}
    gram = sum(2 * cout * cout * h * w for name, h, w, _, cout in layers if name in style)
    return {"conv_forward": conv, "conv_forward_unpadded": unpadded, "gram_forward": gram,
            "forward": conv + gram, "forward_unpadded": unpadded + gram,
            "total": 2 * conv + 2 * gram}


def bench_size(params, size: int, repeats: int, matmul, config: StyleConfig = CONFIG,
               forward: bool = True) -> dict:
    """Compile, first call and ``repeats`` timed loss+gradient evaluations at ``size``, each
    right after one timed ``matmul()`` (GFLOP/s of the roofline product, see
    :func:`matmul_roofline`); ``forward``: also compile the forward loss alone for XLA's
    forward FLOP count."""
    content, style = load_pair(size)
    height, width = content.shape[:2]
    compile_s, compiled, args = compiled_loss(params, content, style, grad=True, config=config)
    first_s = timed(compiled, *args)
    times, matmul_gflops = [], []
    for _ in range(repeats):
        matmul_gflops.append(matmul())
        times.append(timed(compiled, *args))
    median = statistics.median(times)
    flops = analytic_flops(height, width, config)
    # Each evaluation against the product timed just before it: drift cancels.
    fraction = statistics.median(flops["total"] / t / 1e9 / g
                                 for t, g in zip(times, matmul_gflops))
    forward_compile_s, forward_flops = None, None
    if forward:
        forward_compile_s, compiled_forward, _ = compiled_loss(
            params, content, style, grad=False, config=config)
        forward_flops = xla_flops(compiled_forward)
    gflops = flops["total"] / median / 1e9
    megapixels = height * width / 1e6
    plan = memory_plan(compiled)
    return {
        "size": size, "height": height, "width": width, "megapixels": megapixels,
        "compile_s": compile_s, "first_call_s": first_s, "forward_compile_s": forward_compile_s,
        "eval_ms": {"median": median * 1e3, "min": min(times) * 1e3, "max": max(times) * 1e3,
                    "all": [t * 1e3 for t in times]},
        "ms_per_megapixel": median * 1e3 / megapixels,
        "flops": flops,
        "xla_flops": {"forward": forward_flops, "total": xla_flops(compiled)},
        "gflops_per_s": gflops,
        "matmul_gflops_per_s": statistics.median(matmul_gflops),
        "fraction_of_matmul": fraction,
        "xla_temp_mb": plan.get("temp") if plan else None,
    }


def matmul_roofline(repeats: int) -> tuple[dict, Callable[[], float]]:
    """GFLOP/s of a float32 n x n matmul, n doubled from 1024 until one takes over 50 ms; and
    a function that times one more such product and returns its GFLOP/s."""
    dot = jax.jit(functools.partial(jnp.dot, precision="highest"))
    n = 1024
    while True:
        a, b = jax.random.normal(jax.random.key(1), (2, n, n), jnp.float32)
        timed(dot, a, b)
        seconds = statistics.median(timed(dot, a, b) for _ in range(max(repeats, 3)))
        if seconds > 0.05 or n >= 8192:
            break
        n *= 2
    sample = lambda: 2 * n**3 / timed(dot, a, b) / 1e9
    return {"n": n, "median_ms": seconds * 1e3, "gflops_per_s": 2 * n**3 / seconds / 1e9}, sample


def peak_rss_mb(field: str = "VmHWM") -> float:
    """Peak resident memory of this process, MiB: Linux's VmHWM when available (``field``:
    another /proc/self/status line, e.g. VmRSS for the current size).

    Not ``ru_maxrss`` on Linux: it survives fork+exec, so a fresh subprocess would report its
    parent's peak (checked: a child of a 513 MB parent reads 513 MB, its VmHWM 13 MB).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # macOS: bytes


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs), so the
    next reading is the peak of what follows; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def save_params(params, path: Path) -> None:
    """Write the VGG variables to an .npz file, so that the memory probes need not rebuild them
    (seeded random params take 5-10 s of op-by-op work per process)."""
    np.savez(path, **{f"{layer}/{name}": np.asarray(value)
                      for layer, leaves in params["params"].items()
                      for name, value in leaves.items()})


def read_params(path: Path):
    params = {}
    with np.load(path) as data:
        for key in data.files:
            layer, name = key.split("/")
            params.setdefault(layer, {})[name] = jnp.asarray(data[key])
    return {"params": params}


def memory_probe(params, size: int, variant: str, plan_only: bool) -> dict:
    """Run in a fresh process: compile one loss+gradient evaluation of ``variant`` and run it
    once (``plan_only``: compile from shapes alone, run nothing); report memory, MiB.

    The peak RSS is reset (see :func:`reset_peak_rss`) after the inputs (params, target
    features) are built and again after compiling, so ``peak_rss_compile_mb`` is the peak while
    compiling and ``peak_rss_mb`` the peak while evaluating, both absolute (everything resident
    counts: runtime, params, targets, the executable, XLA's buffers).
    """
    content, style = load_pair(size)
    config = VARIANTS[variant]
    args = jax.block_until_ready(loss_args(params, content, style, config, abstract=plan_only))
    reset = reset_peak_rss()
    before = peak_rss_mb("VmRSS")
    fun = jax.value_and_grad(functools.partial(stylization_loss, config=config), has_aux=True)
    start = time.perf_counter()
    compiled = jax.jit(fun).lower(*args).compile()
    compile_s = time.perf_counter() - start
    compile_peak, after_compile = peak_rss_mb(), peak_rss_mb("VmRSS")
    eval_s = peak = None
    if not plan_only:
        reset = reset_peak_rss() and reset
        eval_s = timed(compiled, *args)
        peak = peak_rss_mb()
    stats = jax.devices()[0].memory_stats() or {}
    device_peak = stats.get("peak_bytes_in_use")
    return {"size": size, "variant": variant, "ran": not plan_only,
            "height": content.shape[0], "width": content.shape[1],
            "megapixels": content.shape[0] * content.shape[1] / 1e6,
            "compile_s": compile_s, "eval_s": eval_s, "peak_reset": reset,
            "rss_before_compile_mb": before, "peak_rss_compile_mb": compile_peak,
            "rss_after_compile_mb": after_compile, "peak_rss_mb": peak,
            "device_peak_mb": None if device_peak is None else device_peak / 2**20,
            "xla_plan_mb": memory_plan(compiled)}


def measure_memory(size: int, variant: str, plan_only: bool, params_file: Path) -> dict:
    """:func:`memory_probe` in a fresh subprocess (this script with hidden flags); a failed
    probe (e.g. killed for memory) is recorded with its exit code and stderr tail."""
    command = [sys.executable, __file__, "--memory-probe", str(size), "--probe-variant", variant,
               "--probe-params", str(params_file)]
    command += ["--probe-plan-only"] if plan_only else []
    print(f"memory: {size} px {variant}{' (plan only)' if plan_only else ''} ...",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        return {"size": size, "variant": variant, "ran": not plan_only,
                "error": f"exit code {done.returncode}: {done.stderr.strip()[-500:]}",
                "wall_s": time.perf_counter() - start}
    return {**json.loads(done.stdout.strip().splitlines()[-1]),
            "wall_s": time.perf_counter() - start}


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of y = slope * x + intercept; None under 2 x values."""
    if len(set(xs)) < 2:
        return None
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(slope), float(intercept)


def peak_mb(row: dict) -> float:
    """The measured peak of a memory probe: the device's own count where it has one, else RSS."""
    return row["device_peak_mb"] if row.get("device_peak_mb") is not None else row["peak_rss_mb"]


def memory_summary(rows: list[dict], budget_gb: float) -> dict:
    """Per variant: MB per megapixel from the linear fit of peak memory against pixels (run
    probes), the same fit of XLA's planned total (every probe), and the largest image that fits
    the budget by the peak fit: megapixels, the side of a square, the longest side at the
    example's aspect ratio."""
    good = [r for r in rows if "error" not in r]
    aspect = (max(good, key=lambda r: r["megapixels"])["height"]
              / max(good, key=lambda r: r["megapixels"])["width"]) if good else 1.0
    summary = {}
    for variant in VARIANTS:
        ran = [r for r in good if r["variant"] == variant and r["ran"]]
        planned = [r for r in good if r["variant"] == variant and (r["xla_plan_mb"] or {})
                   .get("total") is not None]
        fit = linear_fit([r["megapixels"] for r in ran], [peak_mb(r) for r in ran])
        plan_fit = linear_fit([r["megapixels"] for r in planned],
                              [r["xla_plan_mb"]["total"] for r in planned])
        entry = {"peak_mb_per_mp": None, "peak_intercept_mb": None,
                 "plan_mb_per_mp": plan_fit[0] if plan_fit else None,
                 "budget_gb": budget_gb, "max_megapixels": None, "max_square_side": None,
                 "max_longest_side": None, "aspect_h_over_w": aspect}
        if fit:
            slope, intercept = fit
            entry.update(peak_mb_per_mp=slope, peak_intercept_mb=intercept)
            if slope > 0:
                pixels = max((budget_gb * 1024 - intercept) / slope, 0.0) * 1e6
                entry.update(max_megapixels=pixels / 1e6, max_square_side=int(math.sqrt(pixels)),
                             max_longest_side=int(math.sqrt(pixels / min(aspect, 1 / aspect))))
        summary[variant] = entry
    return summary


def end_to_end(params, size: int, iterations: int) -> dict:
    content, style = load_pair(size)
    start = time.perf_counter()
    warm = stylize(content, style, params=params, iterations=0, tol=0.0)
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    result = stylize(content, style, params=params, iterations=iterations, tol=0.0)
    wall = time.perf_counter() - start
    return {
        "size": size, "height": content.shape[0], "width": content.shape[1],
        "warmup_wall_s": warm_s, "compile_seconds": warm.compile_seconds,
        "timed_compile_seconds": result.compile_seconds, "wall_s": wall,
        "iterations": result.iterations, "evaluations": result.evaluations,
        "evaluations_per_iteration": result.evaluations / max(result.iterations, 1),
        "s_per_iteration": wall / max(result.iterations, 1), "status": result.status,
        "loss_first": float(result.history["loss"][0]),
        "loss_last": float(result.history["loss"][-1]),
    }


def objective_batching(params, content, style, weights) -> dict:
    """The objective alone: one ``vmap``-ped loss+gradient evaluation of ``len(weights)`` images
    (one style weight each) against as many single evaluations, each after a warm-up call."""
    _, single, (image, params, targets, base) = compiled_loss(params, content, style, grad=True)
    lanes = [base._replace(style=jnp.float32(weight)) for weight in weights]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *lanes)
    images = jnp.stack([image] * len(weights))
    fun = jax.value_and_grad(functools.partial(stylization_loss, config=CONFIG), has_aux=True)
    batched = jax.jit(jax.vmap(fun, in_axes=(0, None, None, 0))).lower(
        images, params, targets, stacked).compile()
    timed(batched, images, params, targets, stacked)
    batched_s = timed(batched, images, params, targets, stacked)
    timed(single, image, params, targets, lanes[0])
    single_s = sum(timed(single, image, params, targets, lane) for lane in lanes)
    return {"batched_ms": batched_s * 1e3, "singles_ms": single_s * 1e3,
            "ratio": batched_s / single_s}


def sweep_weights(batch: int) -> np.ndarray:
    return np.logspace(2, 4, batch)


def emit(event: str, **values) -> None:
    print(json.dumps({"event": event, **values}), flush=True)


def batched_probe(params, size: int, batch: int, iterations: int) -> None:
    """Run in a fresh process: compile ``stylize_batch`` (a warm-up call with iterations=0),
    then the timed call, printing a JSON line when compiled, after each compiled chunk and at
    the end. Times are ``time.monotonic()`` stamps (one system-wide clock on Linux and macOS),
    so the parent can tell how long the loop had run if it has to kill this process."""
    content, style = load_pair(size)
    weights = sweep_weights(batch)
    # vmap explicitly: mode="auto" would turn large CPU sweeps into the sequential loop.
    common = {"params": params, "style_weight": weights, "tol": 0.0, "mode": "vmap"}
    warm = stylize_batch(content, [style], iterations=0, **common)
    loop_start = time.monotonic()
    emit("compiled", compile_s=warm.compile_seconds, loop_start=loop_start)

    def progress(state, records):
        emit("chunk", seconds=time.monotonic() - loop_start,
             iterations=int(np.min(np.asarray(state.iteration))))

    result = stylize_batch(content, [style], iterations=iterations, callback=progress, **common)
    emit("done", seconds=time.monotonic() - loop_start - result.compile_seconds,
         evaluations=[int(e) for e in result.evaluations], devices=result.devices,
         final_loss=np.asarray(result.history["loss"][-1]).tolist())


def run_batched(size: int, batch: int, iterations: int, params_file: Path,
                timeout: float) -> dict:
    """:func:`batched_probe` in a subprocess, killed after ``timeout`` seconds (compile
    included). Returns its last events; ``loop_s``: seconds its timed loop ran (at the kill, a
    lower bound of what the whole call would take)."""
    command = [sys.executable, __file__, "--batched-probe", "--sweep-size", str(size),
               "--sweep-batch", str(batch), "--sweep-iterations", str(iterations),
               "--probe-params", str(params_file)]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True,
                              timeout=timeout)
        output, timed_out = done.stdout, False
    except subprocess.TimeoutExpired as error:
        output, timed_out = error.stdout or "", True
        done = None
    if isinstance(output, bytes):
        output = output.decode()
    events = {}
    for line in output.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            events[event["event"]] = event
    if done is not None and done.returncode != 0:
        return {"error": f"exit code {done.returncode}: {done.stderr.strip()[-500:]}"}
    compiled, chunk = events.get("compiled"), events.get("chunk")
    return {
        "timed_out": timed_out, "timeout_s": timeout, "done": events.get("done"),
        "compile_s": compiled["compile_s"] if compiled else None,
        "iterations_done": (iterations if "done" in events
                            else chunk["iterations"] if chunk else 0),
        "loop_s": (events["done"]["seconds"] if "done" in events
                   else time.monotonic() - compiled["loop_start"] if compiled else None),
    }


def sequential_runs(params, content, style, weights, iterations: int) -> dict:
    """``stylize`` once per weight after a warm-up call (iterations=0) that compiles the loop;
    each call's own ``compile_seconds`` (0 when the loop is reused) is subtracted."""
    common = {"params": params, "tol": 0.0}
    warm = stylize(content, style, style_weight=float(weights[0]), iterations=0, **common)
    seconds, runs = 0.0, []
    for weight in weights:
        start = time.perf_counter()
        run = stylize(content, style, style_weight=float(weight), iterations=iterations, **common)
        seconds += time.perf_counter() - start - run.compile_seconds
        runs.append(run)
    return {"compile_s": warm.compile_seconds, "seconds": seconds,
            "evaluations": [r.evaluations for r in runs],
            "final_loss": [float(r.history["loss"][-1]) for r in runs]}


def sweep(params, size: int, batch: int, iterations: int, params_file: Path,
          timeout: float) -> dict:
    """One ``stylize_batch`` of ``batch`` style weights (logspace 1e2..1e4) against a loop of
    ``stylize`` calls with the same weights, ``iterations`` each, tol=0, compilation left out
    of both. The batched call runs in a subprocess killed after ``timeout`` seconds: then its
    speed-up is an upper bound (it had run ``loop_s`` seconds without finishing)."""
    content, style = load_pair(size)
    weights = sweep_weights(batch)
    print(f"sweep: {batch} sequential stylize calls at {size} px ...", file=sys.stderr, flush=True)
    sequential = sequential_runs(params, content, style, weights, iterations)
    print(f"sweep: objective batching at {size} px ...", file=sys.stderr, flush=True)
    objective = objective_batching(params, content, style, weights)
    print(f"sweep: stylize_batch at {size} px (subprocess, timeout {timeout:.0f} s) ...",
          file=sys.stderr, flush=True)
    batched = run_batched(size, batch, iterations, params_file, timeout)
    # Iterations per compiled call at most (the library's choice, from the pixels per device).
    pixels = content.shape[0] * content.shape[1]
    lanes = -(-batch // jax.local_device_count())
    batched_chunk, sequential_chunk = chunk_size(pixels * lanes, None), chunk_size(pixels, None)
    result = {
        "size": size, "height": content.shape[0], "width": content.shape[1], "batch": batch,
        "iterations": iterations, "style_weights": weights.tolist(),
        "sequential": sequential, "batched": batched, "objective": objective,
        "sequential_runs_per_minute": batch / sequential["seconds"] * 60,
        "batched_chunk": batched_chunk, "sequential_chunk": sequential_chunk,
        "batched_finished": bool(batched.get("done")),
        "batched_runs_per_minute": None, "speedup": None, "final_loss_max_rel_diff": None,
    }
    if batched.get("loop_s"):
        # Not finished: the whole call would take longer than loop_s, so these are upper bounds.
        result["batched_runs_per_minute"] = batch / batched["loop_s"] * 60
        result["speedup"] = sequential["seconds"] / batched["loop_s"]
    if batched.get("done"):
        ours, theirs = np.array(batched["done"]["final_loss"]), np.array(sequential["final_loss"])
        result["final_loss_max_rel_diff"] = float(
            np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-30)))
    return result


def environment(args) -> dict:
    return {
        "jax_version": jax.__version__, "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": str(args.weights),
        "config": {"content_layers": CONFIG.content_layers, "style_layers": CONFIG.style_layers,
                   "pooling": CONFIG.pooling, "optimizer": CONFIG.optimizer,
                   "history_size": CONFIG.history_size, "linesearch": CONFIG.linesearch,
                   "dtype": CONFIG.dtype, "remat": CONFIG.remat},
        "variants": {name: {"dtype": c.dtype, "remat": c.remat} for name, c in VARIANTS.items()},
        "repeats": args.repeats, "argv": sys.argv[1:],
    }


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def gflop(flops: float | None) -> str:
    return fmt(None if flops is None else flops / 1e9, ".2f")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def memory_row(m: dict) -> list[str]:
    if "error" in m:
        return [str(m["size"]), m["variant"], "failed", *[""] * 9, m["error"].splitlines()[0][:40]]
    plan = m["xla_plan_mb"] or {}
    return [str(m["size"]), m["variant"], f"{m['height']}x{m['width']}",
            "yes" if m["ran"] else "plan only", f"{m['compile_s']:.1f}", fmt(m["eval_s"], ".2f"),
            f"{m['rss_before_compile_mb']:.0f}", f"{m['peak_rss_compile_mb']:.0f}",
            fmt(m["peak_rss_mb"], ".0f"), fmt(m["device_peak_mb"], ".0f"),
            fmt(plan.get("temp"), ".0f"), fmt(plan.get("total"), ".0f"),
            f"{peak_mb(m) / m['megapixels']:.0f}" if m["ran"] else "n/a"]


def report(results: dict) -> str:
    env, matmul = results["environment"], results["matmul"]
    out = [(f"jax {env['jax_version']}, backend {env['backend']} ({env['device_kind']}), "
            f"{env['cpu_count']} CPUs, {env['date']}"),
           f"load average at start (1, 5, 15 min): {load(env['load_average'])}",
           f"weights: {env['weights']}",
           (f"matmul roofline: float32 {matmul['n']}x{matmul['n']} dot "
            f"{matmul['median_ms']:.1f} ms = {matmul['gflops_per_s']:.1f} GFLOP/s"), ""]
    sizes = results["sizes"]
    out.append(f"loss+gradient evaluation, float32 (repeats={env['repeats']})")
    out.append(table(
        ["size", "HxW", "MP", "compile s", "1st call s", "median ms", "min ms", "max ms",
         "ms/MP"],
        [[str(r["size"]), f"{r['height']}x{r['width']}", f"{r['megapixels']:.3f}",
          f"{r['compile_s']:.2f}", f"{r['first_call_s']:.2f}", f"{r['eval_ms']['median']:.1f}",
          f"{r['eval_ms']['min']:.1f}", f"{r['eval_ms']['max']:.1f}",
          f"{r['ms_per_megapixel']:.0f}"] for r in sizes]))
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        out.append(f"linearity: ms/MP at {large['size']} px / ms/MP at {small['size']} px = "
                   f"{results['linearity']:.2f} (1.00: cost proportional to the pixel count)")
    out += ["", ("GFLOP per evaluation (ours: analytic; no-pad: padding taps left out; "
                 "XLA: cost_analysis)")]
    out.append(table(
        ["size", "fwd ours", "fwd no-pad", "fwd XLA", "fwd+bwd ours", "fwd+bwd XLA",
         "GFLOP/s", "matmul GFLOP/s", "of matmul"],
        [[str(r["size"]), gflop(r["flops"]["forward"]), gflop(r["flops"]["forward_unpadded"]),
          gflop(r["xla_flops"]["forward"]), gflop(r["flops"]["total"]),
          gflop(r["xla_flops"]["total"]), f"{r['gflops_per_s']:.1f}",
          f"{r['matmul_gflops_per_s']:.1f}", f"{r['fraction_of_matmul']:.0%}"] for r in sizes]))
    for r in sizes:
        if r["size"] == 512:
            out.append(f"512 px: {r['fraction_of_matmul']:.0%} of the matmul roofline "
                       f"(target >= 75%: {verdict(r['fraction_of_matmul'] >= 0.75)})")
    variants = results.get("variants")
    if variants:
        base = variants["float32"]["eval_ms"]["median"]
        out += ["", (f"variants at {variants['float32']['size']} px "
                     f"({variants['float32']['height']}x{variants['float32']['width']}): speed "
                     "(GFLOP/s: the float32 FLOP count over the time; remat recomputes more)")]
        out.append(table(
            ["variant", "compile s", "median ms", "min ms", "x float32", "GFLOP/s", "of matmul"],
            [[name, f"{r['compile_s']:.2f}", f"{r['eval_ms']['median']:.1f}",
              f"{r['eval_ms']['min']:.1f}", f"{r['eval_ms']['median'] / base:.2f}",
              f"{r['gflops_per_s']:.1f}", f"{r['fraction_of_matmul']:.0%}"]
             for name, r in variants.items()]))
    memory = results.get("memory")
    if memory:
        out += ["", ("memory of one loss+gradient evaluation, a fresh process per row: RSS "
                     "before compiling (params and targets built), peak RSS (VmHWM) while "
                     "compiling and while evaluating; device peak_bytes_in_use where the backend "
                     "has it; XLA's plan (memory_analysis: total = temp+arguments+output); "
                     "plan-only rows were compiled, not run. MB = MiB; MB/MP: the peak (device, "
                     "else evaluation RSS) per megapixel")]
        out.append(table(
            ["size", "variant", "HxW", "run", "compile s", "eval s", "RSS before MB",
             "compile peak MB", "eval peak MB", "device peak MB", "plan temp MB",
             "plan total MB", "peak MB/MP"],
            [memory_row(m) for m in memory["probes"]]))
        summary = memory["summary"]
        aspect = next(iter(summary.values()))["aspect_h_over_w"]
        out += ["", (f"memory per megapixel (slope of the linear fit over the run sizes) and the "
                     f"largest image in {memory['budget_gb']:g} GiB by that fit (square side; "
                     f"longest side at the example's {aspect:.3f} H/W)")]
        out.append(table(
            ["variant", "peak MB/MP", "intercept MB", "plan MB/MP", "max MP", "square px",
             "longest px"],
            [[name, fmt(e["peak_mb_per_mp"], ".0f"), fmt(e["peak_intercept_mb"], ".0f"),
              fmt(e["plan_mb_per_mp"], ".0f"), fmt(e["max_megapixels"], ".2f"),
              fmt(e["max_square_side"], "d"), fmt(e["max_longest_side"], "d")]
             for name, e in summary.items()]))
    e2e = results.get("e2e")
    if e2e:
        out += ["", (f"end to end: stylize(iterations={e2e['iterations']}, tol=0) at "
                     f"{e2e['height']}x{e2e['width']} ({e2e['status']})")]
        out.append(table(
            ["compile s", "wall s", "iterations", "evaluations", "evals/iter", "s/iter",
             "overhead x"],
            [[f"{e2e['compile_seconds']:.2f}", f"{e2e['wall_s']:.2f}", str(e2e["iterations"]),
              str(e2e["evaluations"]), f"{e2e['evaluations_per_iteration']:.2f}",
              f"{e2e['s_per_iteration']:.3f}", f"{e2e['overhead_factor']:.2f}"]]))
    if results.get("sweep"):
        out += ["", *sweep_report(results["sweep"])]
    out += ["", f"load average at end (1, 5, 15 min): {load(results['load_average_end'])}"]
    return "\n".join(out)


def sweep_report(sw: dict) -> list[str]:
    seq, bat, obj = sw["sequential"], sw["batched"], sw["objective"]
    out = [(f"sweep: {sw['batch']} style weights (logspace 1e2..1e4), {sw['iterations']} "
            f"iterations each, tol=0, at {sw['height']}x{sw['width']}; compile excluded")]
    if "error" in bat:
        bat_row = ["failed", "", "", ""]
    elif bat["loop_s"] is None:
        bat_row = [f"> {bat['timeout_s']:.0f}", "n/a", "n/a", "n/a"]
    else:
        bound = "" if sw["batched_finished"] else "> "
        bat_row = [fmt(bat["compile_s"], ".1f"), f"{bound}{bat['loop_s']:.2f}",
                   f"{'< ' if bound else ''}{sw['batched_runs_per_minute']:.2f}",
                   str(sum(bat["done"]["evaluations"])) if bat["done"] else "n/a"]
    out.append(table(
        ["mode", "compile s", "wall s", "runs/min", "evaluations (sum)"],
        [["stylize_batch (1 call)", *bat_row],
         [f"stylize x {sw['batch']} (sequential)", f"{seq['compile_s']:.1f}",
          f"{seq['seconds']:.2f}", f"{sw['sequential_runs_per_minute']:.2f}",
          str(sum(seq["evaluations"]))]]))
    out.append(f"iterations per compiled call (at most): batched {sw['batched_chunk']}, "
               f"sequential {sw['sequential_chunk']}")
    out.append(f"objective alone: one vmapped loss+gradient of {sw['batch']} images "
               f"{obj['batched_ms']:.0f} ms vs {sw['batch']} single evaluations "
               f"{obj['singles_ms']:.0f} ms ({obj['ratio']:.2f}x the time; below 1: the "
               "objective itself gains from batching)")
    if "error" in bat:
        return [*out, f"stylize_batch FAILED: {bat['error']}"]
    if not sw["batched_finished"]:
        out.append(f"stylize_batch did NOT finish: killed after the --sweep-timeout of "
                   f"{bat['timeout_s']:.0f} s (compile included), "
                   + ("still compiling" if bat["loop_s"] is None else
                      f"{bat['loop_s']:.0f} s into its loop, {bat['iterations_done']} of "
                      f"{sw['iterations']} iterations done"))
    if sw["speedup"] is not None:
        bound = "" if sw["batched_finished"] else "< "
        out.append(f"batched speed-up: {bound}{sw['speedup']:.2f}x (target >= 1.2x: "
                   f"{verdict(sw['speedup'] >= 1.2 and sw['batched_finished'])})"
                   + (f"; final losses differ by at most {sw['final_loss_max_rel_diff']:.1e} "
                      "(relative)" if sw["final_loss_max_rel_diff"] is not None else ""))
        if sw["speedup"] < 1:
            out.append(f"batched is SLOWER than sequential on this machine: "
                       f"{'over ' if bound else ''}{1 / sw['speedup']:.2f}x the time for the "
                       "same runs")
    return out


def load(averages) -> str:
    return ", ".join(f"{a:.2f}" for a in averages)


def measure_variants(params, size: int, repeats: int, matmul,
                     measured: list[dict]) -> dict:
    """Speed of every variant at ``size`` (float32 taken from ``measured`` when it is there)."""
    by_size = {r["size"]: r for r in measured}
    results = {}
    for name, config in VARIANTS.items():
        print(f"variant {name} at {size} px ...", file=sys.stderr, flush=True)
        results[name] = (by_size[size] if name == "float32" and size in by_size else
                         bench_size(params, size, repeats, matmul, config, forward=False))
    return results


def measure_memory_all(args, params_file: Path) -> dict:
    """Every variant at every --memory-sizes (run) and --memory-plan-sizes (compiled only)."""
    runs = [(size, False) for size in args.memory_sizes]
    runs += [(size, True) for size in args.memory_plan_sizes if size not in args.memory_sizes]
    probes = [measure_memory(size, variant, plan_only, params_file)
              for size, plan_only in runs for variant in VARIANTS]
    return {"budget_gb": args.memory_budget_gb, "probes": probes,
            "summary": memory_summary(probes, args.memory_budget_gb)}


def main(argv=None) -> None:
    args = parse_args(argv)
    params = read_params(args.probe_params) if args.probe_params else load_params(args.weights)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(params, args.memory_probe, args.probe_variant,
                                      args.probe_plan_only)))
        return
    if args.batched_probe:
        batched_probe(params, args.sweep_size, args.sweep_batch, args.sweep_iterations)
        return
    results = {"environment": environment(args)}
    print(f"load average at start: {load(results['environment']['load_average'])}",
          file=sys.stderr, flush=True)
    results["matmul"], matmul = matmul_roofline(args.repeats)
    sizes = sorted(set(args.sizes) | (set() if args.no_e2e else {args.e2e_size}))
    results["sizes"] = []
    for size in sizes:
        print(f"measuring {size} px ...", file=sys.stderr, flush=True)
        results["sizes"].append(bench_size(params, size, args.repeats, matmul))
    results["linearity"] = (results["sizes"][-1]["ms_per_megapixel"]
                            / results["sizes"][0]["ms_per_megapixel"])
    if args.variant_size:
        results["variants"] = measure_variants(params, args.variant_size, args.repeats,
                                               matmul, results["sizes"])
    with tempfile.TemporaryDirectory() as tmp:
        # The subprocesses read the params from here instead of rebuilding them.
        params_file = Path(tmp) / "params.npz"
        save_params(params, params_file)
        if not args.no_memory:
            results["memory"] = measure_memory_all(args, params_file)
        if not args.no_e2e:
            print(f"end to end at {args.e2e_size} px ...", file=sys.stderr, flush=True)
            e2e = end_to_end(params, args.e2e_size, args.e2e_iterations)
            eval_ms = next(r["eval_ms"]["median"] for r in results["sizes"]
                           if r["size"] == args.e2e_size)
            e2e["overhead_factor"] = e2e["wall_s"] / (e2e["evaluations"] * eval_ms / 1e3)
            results["e2e"] = e2e
        if args.sweep:
            results["sweep"] = sweep(params, args.sweep_size, args.sweep_batch,
                                     args.sweep_iterations, params_file, args.sweep_timeout)
    results["load_average_end"] = os.getloadavg()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
