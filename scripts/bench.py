"""Speed and memory of the Gatys objective and of the stylize loop.

Commands (from the repository root)::

    PYTHONPATH=. python scripts/bench.py                       # default: sizes 256,512
    PYTHONPATH=. python scripts/bench.py --json bench.json     # also write every number as JSON
    PYTHONPATH=. python scripts/bench.py --sizes 64,128 --e2e-size 64 --e2e-iterations 10  # quick

Expected runtime of the default run on the shared 2-core CPU machine: about 7 minutes. A 512-px
loss+gradient evaluation takes ~3-4 s, a 256-px one ~1.1 s; most of the time is the
100-iteration end-to-end run at 256 px (~5 min: each L-BFGS-B iteration costs ~3 s, about 2 s of
it in the solver's own update with its 100-pair history, not in the objective).

What it measures, for the chelsea example photo (content) and starry_night (style), each
resized so its longest side is the size (so "512" is 341x512, HxW):

1. per size: lower+compile time of ``jax.jit(jax.value_and_grad(stylization_loss))``, the first
   call, then ms per loss+gradient evaluation (median, min, max of ``--repeats`` calls after it);
   ms per megapixel, to show how the cost scales with the image area.
2. analytic FLOPs per evaluation and the GFLOP/s achieved at the median time. Counted: every
   VGG conv up to the deepest content/style layer, forward ``2*9*Cin*Cout*H*W`` at its own
   resolution (pooling floors the sizes), and its backward to the input, which costs the same
   (the params are constants, so no kernel gradient is computed; conv1_1's backward is counted
   too: the image is the variable); each style Gram ``F^T F`` forward ``2*N*N*M`` and backward
   ``2 * 2*N*N*M`` (autodiff transposes the product once per operand). Elementwise work (ReLU,
   pooling, the losses) is not counted. The forward count is printed beside XLA's own
   ``cost_analysis()`` of the jitted forward loss, and the total beside XLA's count of the
   compiled loss+gradient. XLA leaves out the kernel taps that fall on the "SAME" zero padding
   ((3H-2)(3W-2) per channel pair instead of 9HW): the "no-pad" column counts that way and
   matches XLA within a fraction of a percent (the rest is elementwise work).
3. a dense-matmul roofline from the same run: float32 ``jnp.dot`` of two n x n matrices (n
   doubled from 1024 until one product takes over 50 ms); each evaluation's GFLOP/s is also
   given as a fraction of it.
4. memory, per size in a fresh subprocess (this script with a hidden flag): peak RSS of the
   process after compiling and running one evaluation (Linux VmHWM, see :func:`peak_rss_mb`),
   the peak before compiling (imports, params, images), and on accelerators
   ``peak_bytes_in_use``; plus XLA's planned temporary buffer size of the compiled evaluation.
5. end-to-end ``stylize(iterations=--e2e-iterations, tol=0)`` at ``--e2e-size``: a warm-up call
   with ``iterations=0`` compiles everything (its ``compile_seconds`` is reported), then the timed
   call: wall seconds, iterations, evaluations, evaluations/iteration, s/iteration and the
   overhead factor wall / (evaluations * median evaluation time at that size, which is added to
   the measured sizes when it is not among them). The wall time includes the target features
   (one forward pass of each image), which the factor thus counts as overhead.

Output: the tables on stdout; with ``--json PATH`` every number plus jax version, backend, device
kind, CPU count, load average and date. Weights: seeded random VGG-19 unless ``--weights PATH``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from nst_jax import load_image, load_vgg19_params, random_vgg19_params
from nst_jax._optimize import StyleConfig, loss_weights, make_targets, stylization_loss, stylize
from nst_jax._vgg import CONV_SPECS, LAYERS, canonical_layer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIG = StyleConfig()


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int_list, default=[256, 512],
                        help="longest image sides to measure, comma separated (default 256,512)")
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluations per size")
    parser.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end stylize run")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--e2e-size", type=int, default=256)
    parser.add_argument("--e2e-iterations", type=int, default=100)
    parser.add_argument("--weights", type=Path,
                        help="Keras VGG-19 HDF5 file (default: seeded random weights)")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_params(weights: Path | None):
    if weights is None:
        return random_vgg19_params(jax.random.key(0))
    return load_vgg19_params(weights)


def load_pair(size: int):
    """Content and style RGB 0-255 arrays, each resized so its longest side is ``size``."""
    return (load_image(EXAMPLES / "chelsea.jpg", max_side=size),
            load_image(EXAMPLES / "starry_night.jpg", max_side=size))


def compiled_loss(params, content, style, *, grad: bool):
    """(seconds to lower+compile, compiled function, its arguments)."""
    targets = make_targets(params, content, style, CONFIG)
    args = (jnp.asarray(content), params, targets, loss_weights(CONFIG))
    fun = functools.partial(stylization_loss, config=CONFIG)
    if grad:
        fun = jax.value_and_grad(fun, has_aux=True)
    start = time.perf_counter()
    compiled = jax.jit(fun).lower(*args).compile()
    return time.perf_counter() - start, compiled, args


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
            "total": 2 * conv + 3 * gram}


def bench_size(params, size: int, repeats: int, matmul_gflops: float) -> dict:
    content, style = load_pair(size)
    height, width = content.shape[:2]
    compile_s, compiled, args = compiled_loss(params, content, style, grad=True)
    first_s = timed(compiled, *args)
    times = [timed(compiled, *args) for _ in range(repeats)]
    median = statistics.median(times)
    flops = analytic_flops(height, width, CONFIG)
    forward_compile_s, forward, _ = compiled_loss(params, content, style, grad=False)
    gflops = flops["total"] / median / 1e9
    megapixels = height * width / 1e6
    return {
        "size": size, "height": height, "width": width, "megapixels": megapixels,
        "compile_s": compile_s, "first_call_s": first_s, "forward_compile_s": forward_compile_s,
        "eval_ms": {"median": median * 1e3, "min": min(times) * 1e3, "max": max(times) * 1e3,
                    "all": [t * 1e3 for t in times]},
        "ms_per_megapixel": median * 1e3 / megapixels,
        "flops": flops,
        "xla_flops": {"forward": xla_flops(forward), "total": xla_flops(compiled)},
        "gflops_per_s": gflops,
        "fraction_of_matmul": gflops / matmul_gflops,
        "xla_temp_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20,
    }


def matmul_roofline(repeats: int) -> dict:
    """GFLOP/s of a float32 n x n matmul, n doubled from 1024 until one takes over 50 ms."""
    dot = jax.jit(functools.partial(jnp.dot, precision="highest"))
    n = 1024
    while True:
        a, b = jax.random.normal(jax.random.key(1), (2, n, n), jnp.float32)
        timed(dot, a, b)
        seconds = statistics.median(timed(dot, a, b) for _ in range(max(repeats, 3)))
        if seconds > 0.05 or n >= 8192:
            return {"n": n, "median_ms": seconds * 1e3, "gflops_per_s": 2 * n**3 / seconds / 1e9}
        n *= 2


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB: Linux's VmHWM when available.

    Not ``ru_maxrss`` on Linux: it survives fork+exec, so a fresh subprocess would report its
    parent's peak (checked: a child of a 513 MB parent reads 513 MB, its VmHWM 13 MB).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # macOS: bytes


def memory_probe(params, size: int) -> dict:
    """Run in a fresh process: compile and run one evaluation, report peak memory."""
    content, style = load_pair(size)
    before = peak_rss_mb()
    _, compiled, args = compiled_loss(params, content, style, grad=True)
    jax.block_until_ready(compiled(*args))
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {"rss_before_compile_mb": before, "peak_rss_mb": peak_rss_mb(),
            "device_peak_mb": None if peak is None else peak / 2**20}


def measure_memory(size: int, weights: Path | None) -> dict:
    command = [sys.executable, __file__, "--memory-probe", str(size)]
    if weights is not None:
        command += ["--weights", str(weights)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"memory probe at {size} px failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def environment(args) -> dict:
    return {
        "jax_version": jax.__version__, "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": str(args.weights) if args.weights else "random (seeded He-normal, key 0)",
        "config": {"content_layers": CONFIG.content_layers, "style_layers": CONFIG.style_layers,
                   "pooling": CONFIG.pooling, "optimizer": CONFIG.optimizer,
                   "history_size": CONFIG.history_size, "linesearch": CONFIG.linesearch},
        "repeats": args.repeats,
    }


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def gflop(flops: float | None) -> str:
    return fmt(None if flops is None else flops / 1e9, ".2f")


def report(results: dict) -> str:
    env, matmul = results["environment"], results["matmul"]
    out = [(f"jax {env['jax_version']}, backend {env['backend']} ({env['device_kind']}), "
            f"{env['cpu_count']} CPUs, load average {env['load_average'][0]:.2f}, {env['date']}"),
           f"weights: {env['weights']}",
           (f"matmul roofline: float32 {matmul['n']}x{matmul['n']} dot "
            f"{matmul['median_ms']:.1f} ms = {matmul['gflops_per_s']:.1f} GFLOP/s"), ""]
    sizes = results["sizes"]
    out.append(f"loss+gradient evaluation (repeats={env['repeats']})")
    out.append(table(
        ["size", "HxW", "MP", "compile s", "1st call s", "median ms", "min ms", "max ms",
         "ms/MP"],
        [[str(r["size"]), f"{r['height']}x{r['width']}", f"{r['megapixels']:.3f}",
          f"{r['compile_s']:.2f}", f"{r['first_call_s']:.2f}", f"{r['eval_ms']['median']:.1f}",
          f"{r['eval_ms']['min']:.1f}", f"{r['eval_ms']['max']:.1f}",
          f"{r['ms_per_megapixel']:.0f}"] for r in sizes]))
    out += ["", ("GFLOP per evaluation (ours: analytic; no-pad: padding taps left out; "
                 "XLA: cost_analysis)")]
    out.append(table(
        ["size", "fwd ours", "fwd no-pad", "fwd XLA", "fwd+bwd ours", "fwd+bwd XLA",
         "GFLOP/s", "of matmul"],
        [[str(r["size"]), gflop(r["flops"]["forward"]), gflop(r["flops"]["forward_unpadded"]),
          gflop(r["xla_flops"]["forward"]), gflop(r["flops"]["total"]),
          gflop(r["xla_flops"]["total"]), f"{r['gflops_per_s']:.1f}",
          f"{r['fraction_of_matmul']:.0%}"] for r in sizes]))
    out += ["", "memory (peak RSS of a fresh process per size; XLA temp = planned buffers)"]
    out.append(table(
        ["size", "RSS before compile MB", "peak RSS MB", "device peak MB", "XLA temp MB"],
        [[str(r["size"]), fmt(m.get("rss_before_compile_mb"), ".0f"),
          fmt(m.get("peak_rss_mb"), ".0f"), fmt(m.get("device_peak_mb"), ".0f"),
          f"{r['xla_temp_mb']:.0f}"]
         for r in sizes for m in [results["memory"].get(str(r["size"]), {})]]))
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
    return "\n".join(out)


def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.weights)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(params, args.memory_probe)))
        return
    results = {"environment": environment(args), "matmul": matmul_roofline(args.repeats)}
    sizes = sorted(set(args.sizes) | (set() if args.no_e2e else {args.e2e_size}))
    results["sizes"] = []
    for size in sizes:
        print(f"measuring {size} px ...", file=sys.stderr, flush=True)
        results["sizes"].append(
            bench_size(params, size, args.repeats, results["matmul"]["gflops_per_s"]))
    results["memory"] = {} if args.no_memory else {
        str(size): measure_memory(size, args.weights) for size in sizes}
    if not args.no_e2e:
        print(f"end to end at {args.e2e_size} px ...", file=sys.stderr, flush=True)
        e2e = end_to_end(params, args.e2e_size, args.e2e_iterations)
        eval_ms = next(r["eval_ms"]["median"] for r in results["sizes"]
                       if r["size"] == args.e2e_size)
        e2e["overhead_factor"] = e2e["wall_s"] / (e2e["evaluations"] * eval_ms / 1e3)
        results["e2e"] = e2e
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
