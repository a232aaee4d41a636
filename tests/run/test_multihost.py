"""``stylize_batch`` over the devices of several processes (multi-host JAX), run as two local
CPU processes joined by ``jax.distributed.initialize`` with gloo collectives.

This file is also the worker: ``python tests/run/test_multihost.py PROCESS_ID PORT PARAMS OUT``
joins the two-process job, owns one CPU device, loads the test's seed-0 random VGG-19 params from
``PARAMS`` (.npz; cheaper than 16 random-kernel compiles per worker), runs the shared tiny problem with
``devices=jax.devices()`` (two global devices: each process computes its own lanes) and writes
what it got back to ``OUT`` (.npz). The test compares the two processes with each other (equal
bit for bit: both hold the same gathered result) and with one single-process run of the same
problem (the same runs, vmapped differently, so equal to float32 rounding: small weights keep
the pixel gradients O(1), see tests/run/test_batch.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parents[1] / "data"  # not conftest's: this file also runs as a script
STARTED = "jax.distributed started"  # a worker's first line once it has joined the job
TIMEOUT = 180  # seconds for both workers: a hung collective fails the test, not the suite
LOSS_RTOL = 1e-4
PIXEL_ATOL = 0.05


def problem():
    """(content, styles, settings): 24x16 images, two shallow style layers, three runs (padded
    to four lanes on two devices, so process 1 holds run 2 and the pad lane), 3 iterations."""
    from nst_jax import StyleConfig
    from nst_jax.images import load_image

    content = load_image(DATA / "chelsea.png", max_side=24)
    styles = [load_image(DATA / "starry_night.png", max_side=24),
              load_image(DATA / "great_wave.png", max_side=24)]
    config = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))
    settings = {"config": config, "content_weight": 1e-4, "style_weight": [1e-2, 1e-1, 1.0],
                "style_index": [0, 1, 1], "seeds": [3, 4, 5], "init": "noise",
                "iterations": 3, "tol": 0.0}
    return content, styles, settings


def worker(process_id: int, port: int, params_file: str, out: str) -> None:
    import jax

    # CPU devices of different processes talk through a collectives library: gloo (the default
    # in JAX 0.10; older versions default to none).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A failure to connect aborts the process (a fatal C++ check) rather than raising, so the
    # test tells "did not start" from a failure by this line's absence.
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=process_id, initialization_timeout=30)
    print(STARTED, flush=True)
    # nst_jax only now: jax.distributed must start before anything touches a device.
    from nst_jax.run import stylize_batch

    content, styles, settings = problem()
    with np.load(params_file) as saved:
        params = {"params": {}}
        for key in saved.files:
            layer, name = key.split("/")
            params["params"].setdefault(layer, {})[name] = saved[key]
    # Committed to this process's device, as params a program moved there are: a plain
    # jax.device_put onto the two-process sharding refuses those.
    params = jax.device_put(params, jax.local_devices()[0])
    result = stylize_batch(content, styles, params=params, devices=jax.devices(), **settings)
    try:  # each process passing its own style weights is refused on both alike
        stylize_batch(content, styles, params=params, devices=jax.devices(),
                      **{**settings, "style_weight": [1.0 + process_id] * 3})
        mismatch = ""
    except ValueError as err:
        mismatch = str(err)
    np.savez(out, process_count=jax.process_count(), global_devices=jax.device_count(),
             local_devices=jax.local_device_count(), devices=result.devices,
             images=result.images, iterations=result.iterations, status=result.status,
             mismatch=mismatch, **{f"history_{k}": v for k, v in result.history.items()})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NST_JAX_") and k != "JAX_NUM_CPU_DEVICES"}
    # One device per process: a forced host device count would hide the cross-process case.
    env["XLA_FLAGS"] = " ".join(flag for flag in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in flag)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, random_params):
    import jax

    from nst_jax.run import stylize_batch

    params_file = tmp_path / "params.npz"
    np.savez(params_file, **{f"{layer}/{name}": np.asarray(value)
                             for layer, arrays in random_params["params"].items()
                             for name, value in arrays.items()})
    port, outs = _free_port(), [tmp_path / f"process{i}.npz" for i in range(2)]
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    workers = []
    try:
        for i in range(2):
            with open(logs[i], "w") as log:  # files, not pipes: a full pipe would stall a worker
                workers.append(subprocess.Popen(
                    [sys.executable, __file__, str(i), str(port), str(params_file), str(outs[i])], cwd=tmp_path,
                    env=_worker_env(), stdout=log, stderr=subprocess.STDOUT))
        # The single-process reference, computed while the workers start up.
        content, styles, settings = problem()
        reference = stylize_batch(content, styles, params=random_params,
                                  devices=jax.local_devices()[:1], **settings)
        deadline = time.monotonic() + TIMEOUT
        codes = [w.wait(timeout=max(1.0, deadline - time.monotonic())) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    output = [log.read_text() for log in logs]
    for text, code in zip(output, codes):
        if STARTED not in text:
            lines = text.splitlines() or ["no output"]
            reason = next((line for line in lines if "Status" in line or "Error" in line),
                          lines[-1])
            pytest.skip(f"jax.distributed did not start here (exit code {code}): {reason}")
    assert codes == [0, 0], "\n---\n".join(text[-3000:] for text in output)

    got = [dict(np.load(out)) for out in outs]
    for process in got:
        assert process["process_count"] == 2
        assert process["global_devices"] == 2 and process["local_devices"] == 1
        assert process["devices"] == 2
        # Exactly this argument named (the list is sorted, and ends with a colon).
        assert "different style_weight:" in str(process["mismatch"])
    for key in got[0]:
        if key not in ("history_seconds", "mismatch"):
            np.testing.assert_array_equal(got[0][key], got[1][key], err_msg=key)

    assert reference.devices == 1
    assert got[0]["images"].shape == reference.images.shape == (3, *content.shape)
    np.testing.assert_array_equal(got[0]["iterations"], [3, 3, 3])
    np.testing.assert_array_equal(got[0]["status"], reference.status)
    for name in ("loss", "content", "style", "evaluations"):
        assert got[0][f"history_{name}"].shape == reference.history[name].shape == (4, 3), name
        np.testing.assert_allclose(got[0][f"history_{name}"], reference.history[name],
                                   rtol=LOSS_RTOL, err_msg=name)
    np.testing.assert_allclose(got[0]["images"], reference.images, rtol=0, atol=PIXEL_ATOL)


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
