"""An independent PyTorch reference for nst_jax: the Gatys objective under the Lua/PyTorch
L-BFGS schedule, and a scorer of stylized images.

Runs in a PyTorch environment (imports only torch, numpy, PIL, h5py and the standard library;
nothing from nst_jax), e.g.::

    python -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 numpy pillow h5py

Commands (from the repository root)::

    # L-BFGS on nst_jax's default objective: 300 loss+gradient evaluations at 128 px
    .venv-torch/bin/python scripts/torch_reference.py lbfgs examples/chelsea.jpg \\
        examples/starry_night.jpg --weights vgg19.h5 --size 128 --evaluations 300 \\
        --content-weight 1 --style-weight 1e3 --json lbfgs.json --out lbfgs.png

    # quality figures of one or more stylized images (photo and painting as given to the run)
    .venv-torch/bin/python scripts/torch_reference.py score out.png examples/chelsea.jpg \\
        examples/starry_night.jpg [more.png ...] --weights vgg19.h5 --json scores.json

``lbfgs`` builds the objective as nst_jax defines its default (``StyleConfig()``):

* images read as RGB (EXIF orientation applied) and resized with PIL's Lanczos filter so the
  longest side is ``--size`` (the painting too: its longest side is ``--size``), 0-255 float;
* VGG-19 from a Keras-layout HDF5 file (root attribute ``layer_names``, per layer group
  ``weight_names`` = [kernel (3, 3, Cin, Cout), bias]); kernels transposed to PyTorch's OIHW;
  input convention from the file's ``channel_order``/``input_scale``/``mean``/``std``
  attributes, else Keras "caffe" (RGB->BGR, 0-255, minus [103.939, 116.779, 123.68]);
  3x3 convolutions with 1-pixel zero padding, 2x2/2 max pooling (floored);
* content: conv4_2 (ReLU output), ``L_c = 1/2 sum (X - P)^2``;
* style: conv1_1 ... conv5_1 (ReLU outputs) with weights ``w_l`` (``--style-layer-weights``,
  default 0.2 each), ``E_l = 1/(4 N^2) sum (G/M - A/M')^2`` = ``0.25 sum ((G/M - A/M') / N)^2``,
  G the Gram matrix of the image (M positions, N channels), A the painting's over its own M';
* total ``alpha L_c + beta sum_l w_l E_l`` (``--content-weight``, ``--style-weight``);
* initialised with the photo (or ``--init IMAGE``, of the resized photo's size) and
  optimized as RGB 0-255 pixels, unconstrained, by
  ``torch.optim.LBFGS(lr=1, history_size=100, line_search_fn=None, max_iter=E, max_eval=E,
  tolerance_grad=-1, tolerance_change=-1)``: the schedule of the Lua ``optim.lbfgs`` that
  jcjohnson/neural-style uses (first step ``min(1, 1/|g|_1)``, then step 1, no line search):
  exactly E loss+gradient evaluations, one per iteration, the last at the final image.

It records each evaluation's loss (and unweighted content and style terms) and the seconds
since the optimizer started (model loading and target features are timed separately as
``setup_seconds``), and writes them as JSON (``--json``) with the settings, the final loss, the
loss of the final image clipped to 0..255 (one extra evaluation, not counted) and seconds per
evaluation. ``--out`` saves the final image, clipped to 0..255 and rounded.

``score OUTPUT PHOTO STYLE [OUTPUT ...]`` prints, and writes as JSON, per output image:

* ``style_distance``: the Gatys style loss of the output (``E_l`` as above) averaged over
  conv1_1 ... conv5_1, divided by the same loss of the photo resized (Lanczos) to the output's
  size; the painting is resized so its longest side equals the output's. 1 = no closer to the
  painting's style than the photo, 0 = the painting's Gram matrices exactly;
* ``change``: mean |output - photo| over pixels and channels, 0-255 units (photo resized to
  the output's size);
* ``grid``: block artefacts. For each axis and k = 2..5, the mean absolute pixel step (mean
  over channels and the other axis) across borders at multiples of 2^k (between i and i+1
  where (i+1) % 2^k == 0) divided by the mean step elsewhere; the largest ratio, minus the same
  figure for the photo (about 0 for a clean image; a checkerboard or tiling shows as > 0);
* ``saturation``: the fraction of pixels with any channel <= 0.5 or >= 254.5.

Runtime on 2 CPU cores at 128 px: ``lbfgs`` 0.058 s per evaluation on a quiet machine (300
evaluations in 17 s plus ~1 s setup); when other processes take a core, 2 threads spin on each
other (0.68 s per evaluation measured) and ``--threads 1`` is faster (0.15 s). ``score``: ~0.1 s
per image plus ~2 s to load the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

# VGG-19 convolutions in network order; pooling after the last conv of each block.
CONVS = (
    ("conv1_1", "block1_conv1"), ("conv1_2", "block1_conv2"),
    ("conv2_1", "block2_conv1"), ("conv2_2", "block2_conv2"),
    ("conv3_1", "block3_conv1"), ("conv3_2", "block3_conv2"),
    ("conv3_3", "block3_conv3"), ("conv3_4", "block3_conv4"),
    ("conv4_1", "block4_conv1"), ("conv4_2", "block4_conv2"),
    ("conv4_3", "block4_conv3"), ("conv4_4", "block4_conv4"),
    ("conv5_1", "block5_conv1"), ("conv5_2", "block5_conv2"),
    ("conv5_3", "block5_conv3"), ("conv5_4", "block5_conv4"),
)
POOL_AFTER = {"conv1_2", "conv2_2", "conv3_4", "conv4_4"}
CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CAFFE = {"channel_order": "BGR", "input_scale": 255.0, "mean": (103.939, 116.779, 123.68),
         "std": (1.0, 1.0, 1.0)}


# ------------------------------------------------------------------------------------------
# Weights, network, images


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _text(value.ravel()[0])
    return str(value)


class Vgg19:
    """VGG-19 convolutions from a Keras-layout HDF5 file, as PyTorch tensors (float32)."""

    def __init__(self, path: str | Path):
        self.weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with h5py.File(path, "r") as handle:
            root = handle
            if "layer_names" not in handle.attrs and "model_weights" in handle:
                root = handle["model_weights"]
            names = [_text(n) for n in root.attrs["layer_names"]]
            for ours, keras in CONVS:
                if keras not in names:
                    raise SystemExit(f"{path}: no layer {keras}")
                group = root[keras]
                kernel_name, bias_name = [_text(n) for n in group.attrs["weight_names"]]
                kernel = np.asarray(group[kernel_name], np.float32)  # (3, 3, Cin, Cout) HWIO
                bias = np.asarray(group[bias_name], np.float32)
                if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or bias.shape != kernel.shape[3:]:
                    raise SystemExit(f"{path}: {keras}: unexpected shapes {kernel.shape}, "
                                     f"{bias.shape}")
                self.weights[ours] = (torch.from_numpy(np.ascontiguousarray(
                    kernel.transpose(3, 2, 0, 1))), torch.from_numpy(bias))
            attrs = dict(handle.attrs)
        self.preprocessing = dict(CAFFE)
        if "channel_order" in attrs:
            self.preprocessing = {
                "channel_order": _text(attrs["channel_order"]),
                "input_scale": float(np.asarray(attrs["input_scale"])),
                "mean": tuple(float(v) for v in np.asarray(attrs["mean"]).ravel()),
                "std": tuple(float(v) for v in np.asarray(attrs["std"]).ravel()),
            }
        p = self.preprocessing
        if p["channel_order"] not in ("RGB", "BGR"):
            raise SystemExit(f"{path}: unknown channel_order {p['channel_order']!r}")
        order = [2, 1, 0] if p["channel_order"] == "BGR" else [0, 1, 2]
        self._order = torch.tensor(order)
        self._scale = p["input_scale"] / 255.0
        self._mean = torch.tensor(p["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(p["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) RGB 0-255 -> (1, 3, H, W) network input."""
        x = rgb.permute(2, 0, 1).unsqueeze(0)[:, self._order]
        return (x * self._scale - self._mean) / self._std

    def features(self, rgb: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """ReLU outputs of ``layers`` for one (H, W, 3) RGB 0-255 image, each (C, H_l, W_l)."""
        wanted = set(layers)
        out: dict[str, torch.Tensor] = {}
        x = self.preprocess(rgb)
        for name, _ in CONVS:
            kernel, bias = self.weights[name]
            x = F.relu(F.conv2d(x, kernel, bias, padding=1))
            if name in wanted:
                out[name] = x[0]
                if len(out) == len(wanted):
                    break
            if name in POOL_AFTER:
                x = F.max_pool2d(x, kernel_size=2, stride=2)  # floored (ceil_mode=False)
        return out


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as img:
        img.seek(0)
        return ImageOps.exif_transpose(img).convert("RGB")


def resize_longest(img: Image.Image, side: int) -> Image.Image:
    """Lanczos resize so the longer side is ``side`` (sizes rounded as nst_jax rounds them)."""
    scale = side / max(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


def resize_to(img: Image.Image, width: int, height: int) -> Image.Image:
    return img if img.size == (width, height) else img.resize((width, height),
                                                             Image.Resampling.LANCZOS)


def as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy())


# ------------------------------------------------------------------------------------------
# Losses


def gram_per_position(f: torch.Tensor) -> torch.Tensor:
    """(N, H, W) features -> G / M, the (N, N) Gram matrix divided by M = H * W."""
    flat = f.reshape(f.shape[0], -1)
    return flat @ flat.T / flat.shape[1]


def style_layer_error(f: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
    """``E_l = 0.25 * sum(((G/M - A/M') / N)^2)``."""
    n = f.shape[0]
    return 0.25 * torch.sum(torch.square((gram_per_position(f) - a_hat) / n))


class Objective:
    """nst_jax's default Gatys objective for one photo/painting pair."""

    def __init__(self, net: Vgg19, content: torch.Tensor, style: torch.Tensor, *,
                 content_weight: float, style_weight: float, style_layer_weights):
        self.net = net
        self.alpha = content_weight
        self.beta = style_weight
        self.w = [float(v) for v in style_layer_weights]
        with torch.no_grad():
            self.p = net.features(content, [CONTENT_LAYER])[CONTENT_LAYER]
            style_f = net.features(style, STYLE_LAYERS)
            self.a_hat = [gram_per_position(style_f[name]) for name in STYLE_LAYERS]
        self.layers = (CONTENT_LAYER, *STYLE_LAYERS)

    def __call__(self, image: torch.Tensor):
        f = self.net.features(image, self.layers)
        content = 0.5 * torch.sum(torch.square(f[CONTENT_LAYER] - self.p))
        style = sum(w * style_layer_error(f[name], a)
                    for w, name, a in zip(self.w, STYLE_LAYERS, self.a_hat))
        return self.alpha * content + self.beta * style, content, style


# ------------------------------------------------------------------------------------------
# lbfgs


def cmd_lbfgs(args) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weights = [float(v) for v in args.style_layer_weights.split(",")]
    if len(weights) != len(STYLE_LAYERS):
        raise SystemExit(f"--style-layer-weights: expected {len(STYLE_LAYERS)} values")
    setup_start = time.perf_counter()
    net = Vgg19(args.weights)
    content_img = resize_longest(load_rgb(args.content), args.size)
    style_img = resize_longest(load_rgb(args.style), args.size)
    content = as_tensor(content_img)
    objective = Objective(net, content, as_tensor(style_img), content_weight=args.content_weight,
                          style_weight=args.style_weight, style_layer_weights=weights)
    if args.init is not None:
        init = load_rgb(args.init)
        if init.size != content_img.size:
            raise SystemExit(f"--init {args.init}: {init.size[0]}x{init.size[1]}, expected the "
                             f"resized photo's {content_img.size[0]}x{content_img.size[1]}")
        image = as_tensor(init).requires_grad_(True)
    else:
        image = content.clone().requires_grad_(True)
    evaluations = args.evaluations
    optimizer = torch.optim.LBFGS(
        [image], lr=1.0, history_size=100, line_search_fn=None, max_iter=evaluations,
        max_eval=evaluations, tolerance_grad=-1.0, tolerance_change=-1.0)
    setup_seconds = time.perf_counter() - setup_start

    record = {"loss": [], "content": [], "style": [], "seconds": []}
    start = time.perf_counter()

    def closure():
        optimizer.zero_grad()
        total, c, s = objective(image)
        total.backward()
        record["loss"].append(float(total.detach()))
        record["content"].append(float(c.detach()))
        record["style"].append(float(s.detach()))
        record["seconds"].append(time.perf_counter() - start)
        if args.verbose and len(record["loss"]) % args.verbose == 0:
            print(f"{len(record['loss']):5d} {record['seconds'][-1]:8.2f}s "
                  f"loss {record['loss'][-1]:.6g}", file=sys.stderr)
        return total

    optimizer.step(closure)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        clipped = image.detach().clamp(0.0, 255.0)
        clipped_loss = float(objective(clipped)[0])
    done = len(record["loss"])
    summary = {
        "settings": {
            "content": str(args.content), "style": str(args.style), "weights": str(args.weights),
            "init": str(args.init) if args.init else "content",
            "size": args.size, "image_shape": list(content.shape),
            "style_shape": list(np.asarray(style_img).shape),
            "content_weight": args.content_weight, "style_weight": args.style_weight,
            "style_layer_weights": weights, "content_layer": CONTENT_LAYER,
            "style_layers": list(STYLE_LAYERS), "pooling": "max",
            "preprocessing": net.preprocessing, "evaluations": evaluations,
            "optimizer": "torch.optim.LBFGS(lr=1, history_size=100, line_search_fn=None, "
                         "max_iter=E, max_eval=E, tolerance_grad=-1, tolerance_change=-1)",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
        },
        "setup_seconds": setup_seconds,
        "evaluations": done,
        "seconds": seconds,
        "seconds_per_evaluation": seconds / max(done, 1),
        "initial_loss": record["loss"][0],
        "final_loss": record["loss"][-1],
        "best_loss": min(record["loss"]),
        "final_clipped_loss": clipped_loss,
        "history": record,
    }
    print(f"evaluations {done}, setup {setup_seconds:.2f} s, optimization {seconds:.2f} s "
          f"({summary['seconds_per_evaluation']:.3f} s/evaluation)")
    print(f"loss {record['loss'][0]:.6g} -> {record['loss'][-1]:.6g} (best "
          f"{summary['best_loss']:.6g}; final image clipped to 0..255: {clipped_loss:.6g})")
    print(f"evaluation 0: content {record['content'][0]:.8g}, style {record['style'][0]:.8g}, "
          f"total {record['loss'][0]:.8g}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.out:
        pixels = np.clip(np.rint(clipped.numpy()), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(args.out)
    return 0


# ------------------------------------------------------------------------------------------
# score


def grid_ratio(pixels: np.ndarray) -> float:
    """Largest border-to-elsewhere ratio of mean |pixel step| over k = 2..5 and both axes."""
    x = pixels.astype(np.float64)
    best = 0.0
    for axis in (0, 1):
        steps = np.abs(np.diff(x, axis=axis))  # between i and i+1 along ``axis``
        steps = steps.mean(axis=(2, 1 - axis))  # mean over channels and the other axis
        index = np.arange(steps.shape[0])
        for k in range(2, 6):
            border = (index + 1) % (2 ** k) == 0
            if border.sum() == 0 or (~border).sum() == 0:
                continue
            elsewhere = steps[~border].mean()
            ratio = steps[border].mean() / elsewhere if elsewhere > 0 else float("inf")
            best = max(best, float(ratio))
    return best


def saturation(pixels: np.ndarray) -> float:
    x = pixels.astype(np.float64)
    return float(np.mean(np.any((x <= 0.5) | (x >= 254.5), axis=-1)))


class Scorer:
    def __init__(self, net: Vgg19, photo: Image.Image, style: Image.Image):
        self.net = net
        self.photo = photo
        self.style = style
        self._cache: dict[tuple[int, int], dict] = {}

    def _reference(self, width: int, height: int) -> dict:
        key = (width, height)
        if key not in self._cache:
            photo = resize_to(self.photo, width, height)
            style = resize_longest(self.style, max(width, height))
            with torch.no_grad():
                style_f = self.net.features(as_tensor(style), STYLE_LAYERS)
                a_hat = [gram_per_position(style_f[name]) for name in STYLE_LAYERS]
            photo_px = np.asarray(photo, np.float32)
            ref = {"photo": photo_px, "a_hat": a_hat, "style_size": list(style.size)}
            ref["photo_style_loss"] = self._style_loss(photo_px, a_hat)
            ref["photo_grid"] = grid_ratio(photo_px)
            self._cache[key] = ref
        return self._cache[key]

    def _style_loss(self, pixels: np.ndarray, a_hat) -> float:
        with torch.no_grad():
            f = self.net.features(torch.from_numpy(np.asarray(pixels, np.float32).copy()),
                                  STYLE_LAYERS)
            errors = [float(style_layer_error(f[name], a)) for name, a in zip(STYLE_LAYERS, a_hat)]
        return sum(errors) / len(errors)

    def score(self, path: str | Path) -> dict:
        out = load_rgb(path)
        pixels = np.asarray(out, np.float32)
        ref = self._reference(out.width, out.height)
        loss = self._style_loss(pixels, ref["a_hat"])
        return {
            "image": str(path), "size": [out.width, out.height],
            "style_distance": loss / ref["photo_style_loss"],
            "style_loss": loss, "photo_style_loss": ref["photo_style_loss"],
            "change": float(np.mean(np.abs(pixels.astype(np.float64) - ref["photo"]))),
            "grid": grid_ratio(pixels) - ref["photo_grid"],
            "grid_ratio": grid_ratio(pixels), "photo_grid_ratio": ref["photo_grid"],
            "saturation": saturation(pixels),
        }


def cmd_score(args) -> int:
    torch.set_num_threads(args.threads)
    net = Vgg19(args.weights)
    # Positional order: OUTPUT PHOTO STYLE [OUTPUT ...]
    outputs = [args.images[0], *args.images[3:]]
    scorer = Scorer(net, load_rgb(args.images[1]), load_rgb(args.images[2]))
    results = []
    for path in outputs:
        r = scorer.score(path)
        results.append(r)
        print(f"{path}: style_distance {r['style_distance']:.4f}  change {r['change']:.2f}  "
              f"grid {r['grid']:+.3f}  saturation {r['saturation']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "photo": str(args.images[1]), "style": str(args.images[2]),
            "weights": str(args.weights), "scores": results}, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="torch_reference.py", description="An independent "
                                     "PyTorch reference for nst_jax: L-BFGS on its objective, and "
                                     "a scorer of stylized images (see the module docstring).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    lb = sub.add_parser("lbfgs", help="L-BFGS (Lua/PyTorch schedule) on nst_jax's objective",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    lb.add_argument("content", type=Path)
    lb.add_argument("style", type=Path)
    lb.add_argument("--weights", type=Path, required=True,
                    help="Keras-layout VGG-19 HDF5 (e.g. nst-jax's quantized download)")
    lb.add_argument("--size", type=int, default=128, help="longest side of both images")
    lb.add_argument("--evaluations", type=int, default=300,
                    help="loss+gradient evaluations (max_iter = max_eval)")
    lb.add_argument("--content-weight", type=float, default=1.0, help="alpha")
    lb.add_argument("--style-weight", type=float, default=1e3, help="beta")
    lb.add_argument("--style-layer-weights", default="0.2,0.2,0.2,0.2,0.2",
                    help="w_l for conv1_1..conv5_1, comma-separated")
    lb.add_argument("--init", type=Path, default=None,
                    help="start from this image (the resized photo's size) instead of the photo")
    lb.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    lb.add_argument("--json", type=Path, help="write settings, per-evaluation history, totals")
    lb.add_argument("--out", type=Path, help="save the final image (clipped to 0..255)")
    lb.add_argument("--verbose", type=int, default=0, metavar="N",
                    help="print progress every N evaluations (0: never)")
    lb.set_defaults(func=cmd_lbfgs)

    sc = sub.add_parser("score", help="style distance, change, grid, saturation of outputs",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sc.add_argument("images", nargs="+", metavar="IMAGE",
                    help="OUTPUT PHOTO STYLE [OUTPUT ...]")
    sc.add_argument("--weights", type=Path, required=True,
                    help="Keras-layout VGG-19 HDF5 (e.g. nst-jax's quantized download)")
    sc.add_argument("--threads", type=int, default=2)
    sc.add_argument("--json", type=Path)
    sc.set_defaults(func=cmd_score)

    args = parser.parse_args(argv)
    if args.command == "score" and len(args.images) < 3:
        parser.error("score: expected OUTPUT PHOTO STYLE [OUTPUT ...]")
    if args.command == "lbfgs" and args.evaluations < 1:
        parser.error("--evaluations must be at least 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
