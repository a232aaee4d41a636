"""File helpers (``nst_jax._files``): ``check_output`` refuses, before any compute, an output
that must not or cannot be written, and never lets an output replace an input."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import nst_jax._files as files_module
from nst_jax import NstError, WeightsError
from nst_jax._files import check_output, file_digest


def _existing(tmp_path):
    path = tmp_path / "exists.png"
    path.write_bytes(b"x")
    return path


def _directory(tmp_path):
    path = tmp_path / "out_dir.png"
    path.mkdir()
    return path


def _input_under_another_name(tmp_path, how):
    """(source, output path naming the same file some other way)."""
    source = tmp_path / "in.h5"
    source.write_bytes(b"input")
    if how == "dot":
        return source, tmp_path / "." / "in.h5"
    if how == "relative":
        return source, Path(os.path.relpath(source))
    other = tmp_path / f"{how}.h5"
    if how == "hardlink":
        os.link(source, other)
    else:
        other.symlink_to(source)
    return source, other


@pytest.mark.parametrize("how", ["same", "dot", "relative", "hardlink", "symlink"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_check_output_never_replaces_an_input(tmp_path, how, overwrite):
    if how == "same":
        source = tmp_path / "in.h5"
        source.write_bytes(b"input")
        path = source
    else:
        source, path = _input_under_another_name(tmp_path, how)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(WeightsError) as info:
        check_output(path, overwrite=overwrite, error=WeightsError,
                     sources=[tmp_path / "other.png", source])
    assert str(info.value) == f"{path}: the output would overwrite the input {source}"
    assert source.read_bytes() == b"input"
    assert sorted(os.listdir(tmp_path)) == before


def test_check_output_errors_use_the_given_class(tmp_path):
    existing = _existing(tmp_path)
    folder = _directory(tmp_path)
    missing = tmp_path / "no" / "x.npz"
    cases = [
        (existing, False, f"{existing}: already exists; pass --overwrite to replace it"),
        (folder, True, f"{folder}: is a folder; expected a file name for the checkpoint"),
        (missing, True, f"{missing}: folder {missing.parent} does not exist"),
    ]
    for path, overwrite, message in cases:
        with pytest.raises(NstError) as info:
            check_output(path, overwrite=overwrite, error=NstError, what="checkpoint")
        assert type(info.value) is NstError and str(info.value) == message


def test_check_output_probe_failure(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files_module.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(WeightsError) as info:
        check_output(tmp_path / "out.h5", overwrite=False, error=WeightsError)
    assert str(info.value) == (f"{tmp_path / 'out.h5'}: folder {tmp_path} is not writable "
                               "(Permission denied)")


def test_check_output_passes(tmp_path, monkeypatch):
    source = tmp_path / "in.h5"
    source.write_bytes(b"input")
    existing = _existing(tmp_path)
    assert check_output(existing, overwrite=True, sources=[source]) == existing
    assert check_output(str(tmp_path / "new.h5"), overwrite=False, sources=[source]) == (
        tmp_path / "new.h5")
    monkeypatch.chdir(tmp_path)
    assert check_output("log.json", overwrite=False, sources=["in.h5"]) == Path("log.json")
    assert sorted(os.listdir(tmp_path)) == ["exists.png", "in.h5"]  # no probe left behind
    assert existing.read_bytes() == b"x"


def test_file_digest_is_hashlibs_digest_of_the_bytes(tmp_path):
    data = bytes(range(256)) * 5000  # over 1 MiB: more than one read
    (tmp_path / "f").write_bytes(data)
    assert file_digest(tmp_path / "f", "sha256") == hashlib.sha256(data).hexdigest()
    assert file_digest(tmp_path / "f") == hashlib.md5(data).hexdigest()
