"""VGG-19 feature extractor (Simonyan & Zisserman 2015) as a Flax module.

Image convention: the network sees one *preprocessed* image, shape (H, W, 3), float32, in the
Keras "caffe" convention of the canonical weights: BGR channel order, 0-255 scale, minus the
ImageNet mean ``[103.939, 116.779, 123.68]`` (see :func:`preprocess`). Outside the network every
image is RGB, float 0-255, HWC.

Layer names: ``convB_I`` (Caffe / Gatys) and ``blockB_convI`` (Keras) both name the ReLU-activated
output of conv I of block B. Submodules carry the Keras names, so a params pytree has the same
keys as the HDF5 file it came from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ._preprocessing import Preprocessing

# (block, index, output channels) of the 16 convolutions, in network order.
CONV_SPECS: tuple[tuple[int, int, int], ...] = tuple(
    (block, index, width)
    for block, (count, width) in enumerate(
        [(2, 64), (2, 128), (4, 256), (4, 512), (4, 512)], start=1
    )
    for index in range(1, count + 1)
)
#: Canonical names of every feature layer, in network order.
LAYERS: tuple[str, ...] = tuple(f"conv{b}_{i}" for b, i, _ in CONV_SPECS)
#: Keras / HDF5 names of the same layers.
KERAS_LAYERS: tuple[str, ...] = tuple(f"block{b}_conv{i}" for b, i, _ in CONV_SPECS)

_NAME = re.compile(r"^(?:conv(\d)_(\d)|block(\d)_conv(\d))$")


def canonical_layer(name: str) -> str:
    """Return the ``convB_I`` form of a layer name given as ``convB_I`` or ``blockB_convI``.

    Raises:
        ValueError: the name is not one of the 16 VGG-19 conv layers.
    """
    match = _NAME.match(name)
    if match:
        block, index = (int(g) for g in match.groups() if g is not None)
        canonical = f"conv{block}_{index}"
        if canonical in LAYERS:
            return canonical
    raise ValueError(
        f"unknown VGG-19 layer {name!r}; expected one of {', '.join(LAYERS)} "
        "(or the Keras form block1_conv1 ...)"
    )


def min_image_side(layers: Sequence[str]) -> int:
    """Smallest image side (px) that still gives every requested layer at least one position:
    2^(B-1) for the deepest block B (each pooling halves the size)."""
    deepest = max(LAYERS.index(canonical_layer(name)) for name in layers)
    return 2 ** (CONV_SPECS[deepest][0] - 1)


class VGGWeights(NamedTuple):
    """VGG-19 params with the input convention they expect and a record of where they came from
    (what :func:`~nst_jax.pretrained_vgg19` returns; :func:`~nst_jax.stylize` and the other
    drivers accept it wherever they take ``params`` and apply its preprocessing).

    Attributes:
        params: ``{"params": {"block1_conv1": {"kernel", "bias"}, ...}}`` for :class:`VGG19`.
        preprocessing: the :class:`~nst_jax.Preprocessing` the weights were trained with.
        source: JSON-serializable provenance: ``kind`` (``"exact"``, ``"quantized"``,
            ``"file"`` or ``"random"``), ``description``, ``path``, ``md5``, ...
    """

    params: dict[str, Any]
    preprocessing: Preprocessing
    source: dict[str, Any]


def unpack_weights(weights) -> tuple[Any, Preprocessing | None]:
    """(params pytree, recorded preprocessing or None) of a :class:`VGGWeights` or a plain
    params pytree."""
    if isinstance(weights, VGGWeights):
        return weights.params, weights.preprocessing
    return weights, None


class _ConvParams(nn.Module):
    """The kernel (3, 3, C_in, C_out) and bias (C_out,) of one conv layer, named as in the file,
    and its input-gradient kernel when the variables carry one (:func:`with_backward_kernels`),
    else None."""

    features: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, in_features: int):
        kernel = self.param("kernel", nn.initializers.he_normal(),
                            (3, 3, in_features, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        backward = (self.get_variable(BACKWARD, "kernel")
                    if self.has_variable(BACKWARD, "kernel") else None)
        return kernel, bias, backward


#: The variable collection of the precomputed input-gradient kernels.
BACKWARD = "backward"


def backward_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of a 3x3 "SAME" convolution's input gradient: ``dx = conv(g, K')`` with
    ``K'[i, j, o, c] = K[2 - i, 2 - j, c, o]`` (flipped in space, in/out channels swapped).

    Args:
        kernel: (3, 3, C_in, C_out) HWIO.

    Returns:
        (3, 3, C_out, C_in) HWIO.
    """
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def with_backward_kernels(variables, layers: Sequence[str] = LAYERS):
    """``variables`` plus, in a ``"backward"`` collection, the input-gradient kernel
    (:func:`backward_kernel`) of every conv up to the deepest of ``layers``.

    Why: the image gradient of a convolution convolves with this flipped, transposed kernel.
    Derived inside a compiled function from a kernel passed as an argument, it is rebuilt on
    every call (XLA:CPU re-lays out all the kernels each loss+gradient evaluation); computed
    once per run here, it is an argument like the kernel (docs/benchmarks/speed.md). Values
    and gradients are unchanged (the same convolutions); forward-mode differentiation
    (``jax.jvp``) of the network is not available with these variables. Adds only kernels
    that are missing (the same variables back when none is); a no-op for variables without
    ``"params"``.
    """
    if not isinstance(variables, Mapping) or "params" not in variables:
        return variables
    deepest = max(LAYERS.index(canonical_layer(name)) for name in layers)
    convs, done = variables["params"], variables.get(BACKWARD, {})
    missing = [name for name in KERAS_LAYERS[: deepest + 1] if name in convs and name not in done]
    if not missing:
        return variables
    backward = {**done, **{name: {"kernel": backward_kernel(jnp.asarray(convs[name]["kernel"]))}
                           for name in missing}}
    return {**variables, BACKWARD: backward}


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv(x: jax.Array, kernel: jax.Array, backward: jax.Array, precision) -> jax.Array:
    """``conv(x, kernel)`` (3x3, stride 1, "SAME", NHWC/HWIO) whose input gradient convolves
    with the precomputed ``backward = backward_kernel(kernel)``."""
    return _plain_conv(x, kernel, precision)


def _conv_forward(x, kernel, backward, precision):
    return _plain_conv(x, kernel, precision), (x, kernel, backward)


def _conv_backward(precision, saved, g):
    x, kernel, backward = saved
    # The kernel's own gradient, exact; XLA drops it when only the image is differentiated.
    _, kernel_vjp = jax.vjp(lambda k: _plain_conv(x, k, precision), kernel)
    return _plain_conv(g, backward, precision), kernel_vjp(g)[0], jnp.zeros_like(backward)


_conv.defvjp(_conv_forward, _conv_backward)


def _plain_conv(x, kernel, precision):
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


def _pool_windows(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, H // 2, 2, W // 2, 2, C): the 2x2/2 windows (odd sizes floored)."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_jvp
def _max_pool(x: jax.Array) -> jax.Array:
    """2x2/2 max pooling of a (N, H, W, C) batch, "valid" (sizes floored), as ``nn.max_pool``.

    Same values and the same derivative as ``nn.max_pool`` (the tangent/gradient goes to the
    first maximum of each window in row-major order, like XLA's select-and-scatter), but the
    derivative is elementwise. XLA:CPU expands the select-and-scatter of ``nn.max_pool``'s
    gradient into index arrays and a scatter: s32 iotas of the pool input's size and the
    scatter's (N, 4) indices, 4 of the 7 largest buffers at 512 px. This formulation cut XLA's
    buffer plan of one float32 loss+gradient evaluation there from 698 to 435 MiB.
    """
    return jnp.max(_pool_windows(x), axis=(2, 4))


@_max_pool.defjvp
def _max_pool_jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    windows = _pool_windows(x)
    pooled = jnp.max(windows, axis=(2, 4))
    # One element per window: the first equal to the maximum in row-major order; the last
    # takes whatever is left, so no window's derivative is ever dropped.
    taken = jnp.zeros(pooled.shape, bool)
    firsts = []
    for dy, dx in ((0, 0), (0, 1), (1, 0)):
        first = (windows[:, :, dy, :, dx] == pooled) & ~taken
        taken = taken | first
        firsts.append(first)
    firsts.append(~taken)
    n, h2, w2, channels = pooled.shape
    mask = jnp.stack(firsts, axis=2).reshape(n, h2, 2, 2, w2, channels)
    mask = mask.transpose(0, 1, 2, 4, 3, 5)
    return pooled, jnp.sum(jnp.where(mask, _pool_windows(tangent), 0), axis=(2, 4))


def _zero_after(tree) -> jax.Array:
    """A float32 0.0 computed from every leaf of ``tree``, so XLA can neither fold it nor
    compute anything that uses it before all of ``tree`` exists. ``x > inf`` is False for every
    float, NaN included."""
    firsts = [leaf.reshape(-1)[0].astype(jnp.float32) for leaf in jax.tree.leaves(tree)]
    return (jnp.max(jnp.stack(firsts)) > np.float32(np.inf)).astype(jnp.float32)


def _remat(block_fn):
    """``block_fn(h, convs)`` that stores only its inputs for the backward pass and recomputes
    the block there (``jax.checkpoint``'s purpose, made to work on XLA:CPU).

    ``jax.checkpoint`` keeps its recomputation apart from the forward pass with an
    optimization barrier; XLA:CPU deletes barriers (OptimizationBarrierExpander) and its CSE
    then merges the recomputed convolutions with the forward ones (measured: 39 convolutions
    before optimization, 26 after, the same buffers as without remat). Here the recomputation's
    inputs are offset by :func:`_zero_after` of the block's output cotangents, which exist
    only once the deeper blocks' backward passes have run. Reverse mode only (no ``jax.jvp``).
    """

    @jax.custom_vjp
    def remat_block(h, convs):
        return block_fn(h, convs)

    def forward(h, convs):
        return block_fn(h, convs), (h, convs)

    def backward(saved, cotangents):
        zero = _zero_after(cotangents)
        h, convs = jax.tree.map(lambda x: x + zero.astype(x.dtype), saved)
        return jax.vjp(block_fn, h, convs)[1](cotangents)

    remat_block.defvjp(forward, backward)
    return remat_block


def _block(h, convs, *, pool: str | None, dtype, precision, outputs: str = "relu"):
    """One VGG block on a (1, H, W, C) batch: optional 2x2/2 pooling, then conv+ReLU for each
    (kernel, bias, input-gradient kernel or None). Returns (per-conv outputs, the block's last
    ReLU output); the outputs are the ReLU activations, or the convolutions before it for
    ``outputs="conv"``. Pure, so it can be rematerialized (:func:`_remat`)."""
    if pool == "max":
        h = _max_pool(h)
    elif pool == "avg":
        h = nn.avg_pool(h, window_shape=(2, 2), strides=(2, 2), padding="VALID")
    results = []
    for kernel, bias, backward in convs:
        if backward is None:
            pre = _plain_conv(h, kernel.astype(dtype), precision)
        else:
            pre = _conv(h, kernel.astype(dtype), backward.astype(dtype), precision)
        pre = pre + bias.astype(dtype)
        h = nn.relu(pre)
        results.append(pre if outputs == "conv" else h)
    return results, h


class VGG19(nn.Module):
    """The 16 conv layers of VGG-19 with 2x2/2 pooling after each block; no classifier.

    Attributes:
        pooling: ``"max"`` (the trained network) or ``"avg"`` (Gatys et al. 2016 report smoother
            results with average pooling).
        dtype: dtype of the convolutions (``jnp.bfloat16`` halves activation memory; losses
            still accumulate in float32).
        param_dtype: dtype of the parameters.
        precision: ``lax`` precision of the convolutions. ``"highest"`` by default so that GPU/TPU
            results match float32 CPU results; pass ``None`` for the backend's fast default.
        remat: recompute each block's activations in the backward pass instead of storing them
            (per block; only the block inputs are kept): less memory, about one more forward
            pass of compute. Reverse-mode differentiation only.
        outputs: ``"relu"`` returns each layer's ReLU activation (Caffe's ``reluB_I``, Gatys);
            ``"conv"`` returns the convolution before the ReLU (the PyTorch tutorial's
            ``conv_N`` taps).
    """

    pooling: str = "max"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = "highest"
    remat: bool = False
    outputs: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, layers: Sequence[str] = LAYERS) -> dict[str, jax.Array]:
        """Features of one preprocessed image.

        Args:
            x: (H, W, 3) preprocessed image (see module docstring).
            layers: names of the layers to return; only the network up to the deepest of them is
                computed.

        Returns:
            dict canonical name (``convB_I``) -> (H / 2^(B-1), W / 2^(B-1), C_B) ReLU activation
            (sizes floored at each pooling, as Keras' "valid" pooling does).
        """
        if self.pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {self.pooling!r}")
        if self.outputs not in ("relu", "conv"):
            raise ValueError(f"outputs must be 'relu' or 'conv', got {self.outputs!r}")
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"expected one (H, W, 3) image, got shape {x.shape}")
        wanted = {canonical_layer(name) for name in layers}
        if not wanted:
            raise ValueError("no layers requested")
        deepest = max(LAYERS.index(name) for name in wanted)
        factor = min_image_side(wanted)
        if x.shape[0] < factor or x.shape[1] < factor:
            raise ValueError(
                f"image of {x.shape[0]}x{x.shape[1]} pixels is too small for layer "
                f"{LAYERS[deepest]}: it needs at least {factor}x{factor} (each block halves it)"
            )
        h = x[None].astype(self.dtype)
        in_features = 3
        features = {}
        for block in range(1, CONV_SPECS[deepest][0] + 1):
            positions = [p for p, spec in enumerate(CONV_SPECS[: deepest + 1]) if spec[0] == block]
            convs = []
            for position in positions:
                width = CONV_SPECS[position][2]
                convs.append(_ConvParams(width, self.param_dtype, name=KERAS_LAYERS[position])(
                    in_features))
                in_features = width
            block_fn = functools.partial(_block, pool=self.pooling if block > 1 else None,
                                         dtype=self.dtype, precision=self.precision,
                                         outputs=self.outputs)
            if self.remat:
                block_fn = _remat(block_fn)
            outputs, h = block_fn(h, convs)
            for position, output in zip(positions, outputs):
                if LAYERS[position] in wanted:
                    features[LAYERS[position]] = output[0]
        return features


def extract_features(
    params: Any,
    image: jax.Array,
    layers: Sequence[str],
    *,
    pooling: str = "max",
    dtype: Any = jnp.float32,
    remat: bool = False,
    outputs: str = "relu",
) -> dict[str, jax.Array]:
    """Activations of one preprocessed image at the requested layers.

    Args:
        params: variables pytree ``{"params": {"block1_conv1": {"kernel", "bias"}, ...}}`` as
            returned by :func:`load_vgg19_params` / :func:`random_vgg19_params`, or a
            :class:`VGGWeights`.
        image: (H, W, 3) preprocessed image (BGR, mean subtracted; see :func:`preprocess`).
        layers: layer names, ``conv4_2`` or ``block4_conv2`` style.
        pooling: ``"max"`` or ``"avg"``.
        dtype: computation dtype of the convolutions (bfloat16 halves activation memory).
        remat: recompute activations per block in the backward pass (see :class:`VGG19`).
        outputs: ``"relu"`` (default) or ``"conv"`` (pre-activation; see :class:`VGG19`).

    Returns:
        dict keyed by the names exactly as given in ``layers`` -> (h, w, c) float activations.
    """
    layers = tuple(layers)
    params, _ = unpack_weights(params)
    model = VGG19(pooling=pooling, dtype=dtype, remat=remat, outputs=outputs)
    features = model.apply(params, jnp.asarray(image), layers)
    return {name: features[canonical_layer(name)] for name in layers}


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Expected parameter shapes, ``{"block1_conv1": {"kernel": (3,3,3,64), "bias": (64,)}, ...}``.

    Derived from the module itself (``jax.eval_shape`` of ``init``), so the loader's strict check
    can never drift from the model.
    """
    abstract = jax.eval_shape(
        lambda key, image: VGG19().init(key, image, LAYERS),
        jax.random.key(0),
        jnp.zeros((32, 32, 3), jnp.float32),
    )
    return jax.tree.map(lambda leaf: tuple(leaf.shape), abstract["params"])


def random_vgg19_params(key: jax.Array) -> dict[str, Any]:
    """Deterministic untrained VGG-19: He-normal kernels (std sqrt(2 / (9 C_in))), zero biases.

    "Untrained features" in the sense of He, Wang & Hopcroft (NeurIPS 2016): random conv nets
    still produce usable Gram statistics, so everything runs without the pretrained file.

    Args:
        key: ``jax.random.key``; the same key gives the same params.

    Returns:
        variables pytree with the structure of :func:`load_vgg19_params`.
    """
    params = {}
    for position, (name, shapes) in enumerate(
        sorted(param_shapes().items(), key=lambda item: KERAS_LAYERS.index(item[0]))
    ):
        kernel_shape = shapes["kernel"]
        fan_in = kernel_shape[0] * kernel_shape[1] * kernel_shape[2]
        kernel = jax.random.normal(jax.random.fold_in(key, position), kernel_shape, jnp.float32)
        params[name] = {
            "kernel": kernel * np.float32(np.sqrt(2.0 / fan_in)),
            "bias": jnp.zeros(shapes["bias"], jnp.float32),
        }
    return {"params": params}
