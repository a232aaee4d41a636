"""Checkpoints: the complete optimizer state of a run in one file, so a run can be resumed.

A checkpoint is an uncompressed NumPy ``.npz`` (a zip archive; every member carries a CRC-32, so
a damaged file is detected on load) holding:

* ``state<path>``: every leaf of the :class:`~nst_jax.OptState` pytree, named by its
  ``jax.tree_util.keystr`` path (``state.image``, ``state.solver.s_history``,
  ``state.solver[0][0].mu``, ...): the image, the solver's own state (jaxopt's L-BFGS-B state
  with its s/y history, or the optax state), counters, stall count and status. Typed PRNG keys
  are stored as their ``jax.random.key_data``.
* ``history/<name>``: the loss history so far (``loss``, ``content``, ``style``, ``tv``,
  ``evaluations``, ``seconds``; one row per iteration, row 0 the initial image).
* ``meta``: UTF-8 JSON: ``format``, ``format_version``, ``nst_jax`` version, ``iteration``,
  ``evaluations`` (lists for a batch), ``leaves`` (the key paths in tree order: the tree
  structure, checked on load), ``key_impls``, plus the caller's settings (for the CLI: input
  files with their SHA-256, size, :class:`~nst_jax.StyleConfig`, loss weights, seed, weights).

Files are written to a temporary file in the same folder and renamed into place, so a reader
(or a run killed mid-write) only ever sees a complete old or a complete new checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import NstError
from .._files import atomic_file, file_digest
from .._objective import StyleConfig, loss_weights, make_targets, with_weights
from .._version import __version__
from ..solvers import SolverConfig
from ._loop import OptState, init_state

FORMAT = "nst_jax checkpoint"
#: 2: the solver state of nst_jax.solvers (version 1 held jaxopt's L-BFGS-B state).
FORMAT_VERSION = 2
_RESERVED = ("format", "format_version", "nst_jax", "iteration", "evaluations", "leaves",
             "key_impls")


def _is_key(leaf) -> bool:
    return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def default_checkpoint_path(output: str | os.PathLike) -> Path:
    """``out.png`` -> ``out.ckpt.npz``: the checkpoint that belongs to an output image."""
    return Path(output).with_suffix(".ckpt.npz")


def save_checkpoint(path: str | os.PathLike, state: OptState, *,
                    history: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``state``, ``history`` and ``meta`` to ``path`` atomically (see module docstring).

    Args:
        state: an :class:`~nst_jax.OptState` (e.g. ``StylizeResult.state``); any pytree works.
        history: named 1-D arrays (the loss history so far).
        meta: JSON-serializable settings; keys ``format``, ``format_version``, ``nst_jax``,
            ``iteration``, ``evaluations``, ``leaves``, ``key_impls`` are filled in here.

    Raises:
        NstError: the file cannot be written (the old checkpoint, if any, is left intact).
    """
    path = Path(path)
    reserved = [key for key in meta if key in _RESERVED]
    if reserved:
        raise ValueError(f"meta keys {reserved} are reserved for the checkpoint format")
    arrays: dict[str, np.ndarray] = {}
    leaves, key_impls = [], {}
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(state):
        name = jax.tree_util.keystr(key_path)
        if _is_key(leaf):
            key_impls[name] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        arrays["state" + name] = np.asarray(jax.device_get(leaf))
        leaves.append(name)
    for name, values in history.items():
        arrays[f"history/{name}"] = np.asarray(values)
    full_meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "nst_jax": __version__,
        # One number, or one per lane for the (B, ...) state of a batch.
        "iteration": np.asarray(getattr(state, "iteration", -1)).tolist(),
        "evaluations": np.asarray(getattr(state, "evaluations", -1)).tolist(),
        "leaves": leaves,
        "key_impls": key_impls, **meta,
    }
    arrays["meta"] = np.frombuffer(json.dumps(full_meta).encode(), np.uint8)
    with atomic_file(path, NstError, "checkpoint") as handle:
        np.savez(handle, **arrays)
    return path


# zipfile and np.load report damage with any of these.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError)


@contextlib.contextmanager
def _open(path: Path):
    """The checkpoint as an open ``NpzFile``; the file is closed afterwards whatever happens
    (``np.load`` leaks its own handle when the archive is unreadable, so it gets ours)."""
    if not path.is_file():
        raise NstError(f"{path}: checkpoint not found")
    with open(path, "rb") as handle:
        try:
            npz = np.load(handle, allow_pickle=False)
        except _READ_ERRORS as err:
            raise NstError(f"{path}: not a readable checkpoint ({err}); the file is damaged or "
                           "is not an nst_jax checkpoint") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise NstError(f"{path}: not an nst_jax checkpoint (a single array, not an archive)")
        with npz:
            yield npz


def _read_meta(npz, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(npz["meta"].tobytes().decode())
    except (*_READ_ERRORS, json.JSONDecodeError) as err:
        raise NstError(f"{path}: damaged checkpoint, cannot read its settings ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NstError(f"{path}: not an nst_jax checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise NstError(f"{path}: checkpoint format version {meta.get('format_version')}, this "
                       f"nst_jax reads version {FORMAT_VERSION}; start the run again")
    return meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` dict of a checkpoint, without reading its arrays (to check settings first).

    Raises:
        NstError: missing, damaged or not an nst_jax checkpoint.
    """
    path = Path(path)
    with _open(path) as npz:
        return _read_meta(npz, path)


def load_checkpoint(path: str | os.PathLike, template: OptState
                    ) -> tuple[OptState, dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        template: an :class:`~nst_jax.OptState` with the structure, shapes and dtypes this run
            needs: a freshly initialised state, or :func:`state_template` (``jax.eval_shape``).

    Returns:
        (state, history, meta): ``state`` has the template's structure, with ``jax.Array``
        leaves of the template's dtypes (weak types of scalar leaves kept, so a resumed run
        traces exactly as the original did); pass it as ``stylize(..., state=state)``.

    Raises:
        NstError: naming the file, for a missing, truncated or damaged file, or one written for
            a different run (other optimizer or settings: different leaves; other image size:
            different shapes).
    """
    path = Path(path)
    with _open(path) as npz:
        meta = _read_meta(npz, path)
        paths_and_leaves = jax.tree_util.tree_leaves_with_path(template)
        wanted = [jax.tree_util.keystr(key_path) for key_path, _ in paths_and_leaves]
        stored = meta.get("leaves")
        if stored != wanted:
            stored = stored if isinstance(stored, list) else []
            only_file = [n for n in stored if n not in wanted]
            only_run = [n for n in wanted if n not in stored]
            raise NstError(
                f"{path}: checkpoint of a different optimizer state (in file only: "
                f"{', '.join(only_file[:4]) or '-'}; needed by this run only: "
                f"{', '.join(only_run[:4]) or '-'}); was it written with another --optimizer "
                "or --history-size?")
        try:
            leaves = [_leaf(npz["state" + name], like, name, meta, path)
                      for name, (_, like) in zip(wanted, paths_and_leaves)]
            history = {name[len("history/"):]: npz[name] for name in npz.files
                       if name.startswith("history/")}
        except _READ_ERRORS as err:
            raise NstError(f"{path}: damaged checkpoint ({err}); start the run again or use an "
                           "older copy") from None
    state = jax.tree.unflatten(jax.tree.structure(template), leaves)
    return state, history, meta


def _leaf(data: np.ndarray, like, name: str, meta: dict[str, Any], path: Path):
    """One stored array -> a jax.Array shaped and typed like the template leaf ``like``."""
    if _is_key(like):
        impl = meta.get("key_impls", {}).get(name)
        if impl is None:
            raise NstError(f"{path}: {name} should hold a PRNG key but holds plain numbers")
        key = jax.random.wrap_key_data(jnp.asarray(data), impl=impl)
        if key.shape != tuple(like.shape) or key.dtype != like.dtype:
            raise NstError(f"{path}: {name} is a {key.dtype} key of shape {key.shape}, this run "
                           f"needs {like.dtype} of shape {tuple(like.shape)}")
        return key
    if data.shape != tuple(like.shape) or data.dtype != np.dtype(like.dtype):
        raise NstError(
            f"{path}: {name} has shape {data.shape} and dtype {data.dtype}, this run needs "
            f"{tuple(like.shape)} {np.dtype(like.dtype)} (written for another --size, content "
            "image, --optimizer or --history-size?)")
    if getattr(like, "weak_type", False) and data.shape == ():
        # A Python scalar becomes a weakly typed array of the default dtype, as in the original.
        value = jnp.asarray(data.item())
        if value.dtype == data.dtype:
            return value
    return jnp.asarray(data)


def state_template(shape: tuple[int, int, int], *, params, config: StyleConfig | None = None,
                   solver: SolverConfig | None = None) -> OptState:
    """The :class:`~nst_jax.OptState` structure of a run on an ``shape`` = (H, W, 3) image, as
    ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape``: nothing is computed); a template for
    :func:`load_checkpoint`. The state depends only on the image shape, ``config`` and
    ``solver`` (default :class:`~nst_jax.solvers.SolverConfig`)."""
    config, params = with_weights(config or StyleConfig(), params)
    solver = solver or SolverConfig()
    image = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    weights = loss_weights(config)
    targets = jax.eval_shape(lambda x: make_targets(params, x, x, config), image)
    return jax.eval_shape(lambda x, t: init_state(x, params, t, weights, config, solver), image,
                          targets)


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of an input file, to recognise it when resuming."""
    path = Path(path)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size,
            "sha256": file_digest(path, "sha256")}


def config_dict(config) -> dict[str, Any]:
    """A :class:`~nst_jax.StyleConfig` or :class:`~nst_jax.solvers.SolverConfig` as plain JSON
    values (tuples become lists; unset deprecated fields left out)."""
    return {key: value for key, value in json.loads(json.dumps(dataclasses.asdict(config))).items()
            if value is not None}


def meta_differences(saved: dict[str, Any], current: dict[str, Any], *,
                     ignore: tuple[str, ...] = ("path",)) -> list[str]:
    """Settings of ``current`` that differ from a checkpoint's ``saved`` meta, one readable
    line each; nested keys named in ``ignore`` (file paths: a moved input is the same input)
    are not compared."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ignore}
        return value

    lines = []
    for key, now in current.items():
        before = saved.get(key)
        if strip(json.loads(json.dumps(before))) != strip(json.loads(json.dumps(now))):
            lines.append(f"{key}: checkpoint {_short(before)}, now {_short(now)}")
    return lines


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def remove_stray_temporaries(*paths: str | os.PathLike) -> list[Path]:
    """Delete temporary files (``.NAME.*.tmp``) that a killed writer of ``paths`` left behind
    (an orderly exit removes its own; SIGKILL or power loss cannot). Returns what was removed."""
    removed = []
    for path in map(Path, paths):
        folder = path.parent if str(path.parent) else Path(".")
        for stray in folder.glob(f".{glob.escape(path.name)}.*.tmp"):
            try:
                stray.unlink()
            except FileNotFoundError:
                continue
            removed.append(stray)
    return removed


def append_records(history: dict[str, np.ndarray], records: dict[str, np.ndarray],
                   seconds: float) -> dict[str, np.ndarray]:
    """``history`` extended by the iterations of one compiled chunk, as ``stylize`` builds it.

    Args:
        history: ``loss``, ``content``, ``style``, ``tv``, ``evaluations``, ``seconds``, (T,).
        records: the chunk records a ``stylize`` callback receives: ``loss``, ``evaluations``,
            ``active`` (steps,) and ``terms`` (steps, 3); rows of a finished run are skipped.
        seconds: wall-clock seconds at the end of the chunk (spread evenly over its rows).
    """
    rows = np.asarray(records["active"], bool)
    terms = np.asarray(records["terms"])[rows]
    previous = float(history["seconds"][-1])
    new = {"loss": np.asarray(records["loss"])[rows], "content": terms[:, 0],
           "style": terms[:, 1], "tv": terms[:, 2],
           "evaluations": np.asarray(records["evaluations"])[rows],
           "seconds": previous + (seconds - previous) * np.arange(1, rows.sum() + 1)
           / max(int(rows.sum()), 1)}
    return {name: np.concatenate([np.asarray(history[name]), np.asarray(new[name]).astype(
        np.asarray(history[name]).dtype)]) for name in history}
