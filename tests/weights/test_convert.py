"""Converting PyTorch and MatConvNet VGG-19 files (``nst-jax weights convert``).

Every source is built here from the seed-0 random params (HWIO) in the source's own layout
(OIHW state_dicts, MatConvNet structs written with scipy.io.savemat), converted, and read back
with the project's loaders. Golden features come from a NumPy cross-correlation in each source's
own convention (image preprocessed by hand as that framework would), never from the code under
test. torch is optional: without it, ``.pth`` files are stand-in zips whose reader is replaced by
the in-memory state_dict; the tests with real torch files skip.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import nst_jax.weights._convert as convert_module
from nst_jax import (
    CAFFE,
    TORCHVISION,
    Preprocessing,
    WeightsError,
    extract_features,
    load_vgg19_params,
    preprocess,
)
from nst_jax._model import KERAS_LAYERS, LAYERS
from nst_jax.cli import main
from nst_jax.weights import load_preprocessing
from nst_jax.weights._convert import (
    KNOWN_FILES,
    TORCHVISION_INDICES,
    convert_weights,
    detect_format,
    params_from_matconvnet,
    params_from_state_dict,
    read_torch_state_dict,
)

TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406])
TORCHVISION_STD = np.array([0.229, 0.224, 0.225])
# Gatys' PytorchNeuralStyleTransfer: ToTensor, RGB->BGR, Normalize(mean=these, std=1), x255.
GATYS_MEAN_BGR = np.array([0.40760392, 0.45795686, 0.48501961])
MATCONVNET_MEAN = np.array([123.68, 116.779, 103.939])
SHA_TORCHVISION = "dcbb9e9d" + "0" * 56
SHA_JCJOHNSON = "d01eb7cb" + "0" * 56


# --------------------------------------------------------------------------- sources


@pytest.fixture(scope="module")
def np_params(random_params):
    """The seed-0 random kernels with random (not zero) biases, so biases are checked too."""
    rng = np.random.default_rng(0)
    return {layer: {"kernel": np.asarray(leaves["kernel"]),
                    "bias": rng.normal(0, 0.1, leaves["bias"].shape).astype(np.float32)}
            for layer, leaves in random_params["params"].items()}


@pytest.fixture(scope="module")
def rgb():
    """A non-square RGB image, float 0-255, (12, 16, 3)."""
    return np.random.default_rng(1).uniform(0, 255, (12, 16, 3))


def _oihw(kernel_hwio):
    return np.einsum("hwio->oihw", kernel_hwio)


@pytest.fixture(scope="module")
def torchvision_state(np_params):
    state = {}
    for index, layer in zip(TORCHVISION_INDICES, KERAS_LAYERS):
        state[f"features.{index}.weight"] = _oihw(np_params[layer]["kernel"])
        state[f"features.{index}.bias"] = np_params[layer]["bias"]
    state["classifier.0.weight"] = np.ones((4, 3), np.float32)  # ignored
    state["classifier.0.bias"] = np.ones(4, np.float32)
    return state


@pytest.fixture(scope="module")
def gatys_state(torchvision_state):
    return {f"{name}.{role}": torchvision_state[f"features.{index}.{role}"]
            for index, name in zip(TORCHVISION_INDICES, LAYERS) for role in ("weight", "bias")}


def _fake_pth(path: Path) -> Path:
    """A zip shaped like torch.save's output; its reader is monkeypatched in these tests."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"not read")
    return path


@pytest.fixture
def pth(tmp_path, monkeypatch):
    """``pth(state)``: a .pth path whose reading yields ``state``."""
    def make(state, name="vgg19.pth"):
        monkeypatch.setattr(convert_module, "read_torch_state_dict", lambda path: state)
        return _fake_pth(tmp_path / name)

    return make


def _cell(*items):
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def write_matconvnet(path, params, *, old=False, average=MATCONVNET_MEAN, skip=(), layers=None):
    """A MatConvNet SimpleNN file of ``params`` (HWIO, as MatConvNet stores filters) with the
    relu/pool/fc layers around the convs. ``old``: pre-beta13 layout (``filters``/``biases``
    fields, a 4x4 mean image under the top-level ``normalization``)."""
    import scipy.io

    structs = []
    for name, keras in zip(LAYERS, KERAS_LAYERS):
        if name in skip:
            continue
        kernel, bias = (layers or params)[keras]["kernel"], (layers or params)[keras]["bias"]
        bias = np.reshape(bias, (1, -1))
        conv = {"name": name, "type": "conv", "stride": np.ones((1, 2)), "pad": np.ones((1, 4))}
        conv.update({"filters": kernel, "biases": bias} if old else
                    {"weights": _cell(kernel, bias)})
        structs += [conv, {"name": name.replace("conv", "relu"), "type": "relu"}]
        if name.endswith(("1_2", "2_2", "3_4", "4_4")):
            structs.append({"name": f"pool{name[4]}", "type": "pool", "method": "max"})
    fc = np.ones((1, 1, 2, 3), np.float32)  # the classifier, stored as convs: must be skipped
    structs.append({"name": "fc8", "type": "conv", "weights": _cell(fc, np.ones((1, 3)))})
    content = {"layers": _cell(*structs)}
    if old:
        image = np.broadcast_to(np.asarray(average, np.float32), (4, 4, 3)).copy()
        image[0, 0] += 2.0  # a mean image: its per-channel average is the mean
        image[1, 1] -= 2.0
        content["normalization"] = {"averageImage": image, "imageSize": np.array([224., 224, 3])}
    else:
        content["meta"] = {"normalization": {"averageImage": np.reshape(average, (1, 1, -1))}}
    scipy.io.savemat(path, content)
    return Path(path)


# --------------------------------------------------------------------------- golden features


def _correlate_chw(x, weight_oihw, bias):
    """PyTorch Conv2d(3, padding=1): y[o,r,c] = b[o] + sum w[o,i,dy,dx] x[i, r+dy-1, c+dx-1]."""
    _, height, width = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    y = np.zeros((weight_oihw.shape[0], height, width)) + bias[:, None, None]
    for dy in range(3):
        for dx in range(3):
            y += np.einsum("oi,ihw->ohw", weight_oihw[:, :, dy, dx],
                           padded[:, dy:dy + height, dx:dx + width])
    return y


def _correlate_hwc(x, filters, bias):
    """MatConvNet vl_nnconv, pad 1: y(r,c,k) = b(k) + sum W(dy,dx,i,k) x(r+dy-1, c+dx-1, i)."""
    height, width, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    y = np.zeros((height, width, filters.shape[3])) + bias
    for dy in range(3):
        for dx in range(3):
            y += np.einsum("hwi,io->hwo", padded[dy:dy + height, dx:dx + width], filters[dy, dx])
    return y


def _torch_features(state, prefixes, x_chw):
    """ReLU outputs of the first two convs, PyTorch layout, as (H, W, C) for comparison."""
    out = []
    for prefix in prefixes:
        x_chw = np.maximum(_correlate_chw(x_chw, state[f"{prefix}.weight"].astype(np.float64),
                                          state[f"{prefix}.bias"]), 0)
        out.append(x_chw.transpose(1, 2, 0))
    return out


def _converted_features(path, rgb):
    params = load_vgg19_params(path)
    x = preprocess(rgb, load_preprocessing(path))
    features = extract_features(params, x, ["conv1_1", "conv1_2"])
    return [np.asarray(features[name]) for name in ("conv1_1", "conv1_2")]


def _assert_close(actual, expected):
    for got, want in zip(actual, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _attrs(path):
    with h5py.File(path, "r") as handle:
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in handle.attrs.items()}


def _assert_params(loaded, expected):
    for layer in KERAS_LAYERS:
        for role in ("kernel", "bias"):
            np.testing.assert_array_equal(np.asarray(loaded["params"][layer][role]),
                                          expected[layer][role], err_msg=f"{layer} {role}")


# --------------------------------------------------------------------------- torchvision


def test_torchvision_params_are_the_hwio_kernels(torchvision_state, np_params):
    result = params_from_state_dict(torchvision_state, sha256=SHA_TORCHVISION)
    params = result.params["params"]
    assert set(params) == set(KERAS_LAYERS)
    for layer in KERAS_LAYERS:
        np.testing.assert_array_equal(params[layer]["kernel"], np_params[layer]["kernel"])
        np.testing.assert_array_equal(params[layer]["bias"], np_params[layer]["bias"])
        assert params[layer]["kernel"].dtype == np.float32
    # One element by hand: OIHW [o, i, h, w] is HWIO [h, w, i, o].
    assert (params["block2_conv1"]["kernel"][0, 2, 17, 5]
            == torchvision_state["features.5.weight"][5, 17, 0, 2])
    assert result.preprocessing == TORCHVISION
    assert result.known.sha256 == "dcbb9e9d" and "recognized" in result.description


def test_torchvision_file_gives_torchvisions_features(pth, torchvision_state, rgb, tmp_path):
    dst = tmp_path / "tv.h5"
    result = convert_weights(pth(torchvision_state), dst, preprocessing="torchvision")
    assert load_preprocessing(dst) == TORCHVISION
    # torchvision's transforms: ToTensor (RGB / 255, CHW), Normalize(mean, std).
    x = ((rgb / 255.0 - TORCHVISION_MEAN) / TORCHVISION_STD).transpose(2, 0, 1)
    expected = _torch_features(torchvision_state, ["features.0", "features.2"], x)
    _assert_close(_converted_features(dst, rgb), expected)
    attrs = _attrs(dst)
    assert attrs["source_format"] == "torchvision" and attrs["converted_from"] == "vgg19.pth"
    assert attrs["source_sha256"] == result.attrs["source_sha256"]
    assert len(attrs["source_sha256"]) == 64


@pytest.mark.parametrize("sha256, requested, expected", [
    (SHA_TORCHVISION, None, TORCHVISION),
    (SHA_TORCHVISION, "torchvision", TORCHVISION),
    (SHA_JCJOHNSON, None, CAFFE),
    (SHA_JCJOHNSON, "caffe", CAFFE),
    (None, "caffe", CAFFE),
    ("ab" * 32, "torchvision", TORCHVISION),
])
def test_torchvision_layout_preprocessing_from_checksum_or_option(
        torchvision_state, sha256, requested, expected):
    result = params_from_state_dict(torchvision_state, sha256=sha256, preprocessing=requested)
    assert result.preprocessing == expected
    assert (result.known is not None) == (sha256 in (SHA_TORCHVISION, SHA_JCJOHNSON))


@pytest.mark.parametrize("sha256, requested, needle", [
    (None, None, "--preprocessing torchvision"),
    ("ab" * 32, None, "not a known file"),
    (SHA_TORCHVISION, "caffe", "--preprocessing caffe contradicts"),
    (SHA_JCJOHNSON, "torchvision", "--preprocessing torchvision contradicts"),
    (None, "rgb", "--preprocessing must be one of"),
])
def test_torchvision_layout_never_guesses(torchvision_state, sha256, requested, needle):
    with pytest.raises(WeightsError, match="my.pth") as err:
        params_from_state_dict(torchvision_state, source="my.pth", sha256=sha256,
                               preprocessing=requested)
    assert needle in str(err.value)


# --------------------------------------------------------------------------- Gatys


def test_gatys_vgg_conv_is_caffe_input_and_marked_normalized(pth, gatys_state, np_params, rgb,
                                                            tmp_path):
    dst = tmp_path / "gatys.h5"
    convert_weights(pth(gatys_state, "vgg_conv.pth"), dst)
    _assert_params(load_vgg19_params(dst), np_params)
    assert load_preprocessing(dst) == CAFFE
    attrs = _attrs(dst)
    assert attrs["normalized"] == "gatys" and attrs["source_format"] == "gatys"
    # Gatys' prep: RGB / 255 -> BGR -> minus his mean -> x 255.
    x = ((rgb / 255.0)[..., ::-1] - GATYS_MEAN_BGR) * 255.0
    expected = _torch_features(gatys_state, ["conv1_1", "conv1_2"], x.transpose(2, 0, 1))
    _assert_close(_converted_features(dst, rgb), expected)


def test_gatys_refuses_torchvision_preprocessing(gatys_state):
    with pytest.raises(WeightsError, match="contradicts"):
        params_from_state_dict(gatys_state, preprocessing="torchvision")


# --------------------------------------------------------------------------- state_dict errors


def _edited(state, drop=(), **replace):
    edited = {k: v for k, v in state.items() if k not in drop}
    edited.update({k.replace("__", "."): v for k, v in replace.items()})
    return edited


def _nan_kernel(state, key):
    kernel = state[key].copy()
    kernel[1, 2, 0, 1] = np.nan
    return kernel


@pytest.mark.parametrize("edit, needle", [
    (lambda s: _edited(s, drop=["features.34.bias"]), "missing features.34.bias"),
    (lambda s: _edited(s, features__36__weight=np.ones(3)), "unexpected features.36.weight"),
    (lambda s: _edited(s, features__1__running_mean=np.ones(64)), "batch-norm"),
    (lambda s: _edited(s, features__0__weight=np.ones((64, 3, 3, 2))),
     "features.0 (conv1_1) weight has shape (64, 3, 3, 2), expected (64, 3, 3, 3)"),
    (lambda s: _edited(s, features__30__bias=np.ones(256)),
     "features.30 (conv5_2) bias has shape (256,), expected (512,)"),
    (lambda s: _edited(s, features__7__weight=_nan_kernel(s, "features.7.weight")),
     "features.7 (conv2_2) weight contains NaN"),
    (lambda s: {"fc.weight": np.ones(3)}, "unknown state_dict layout"),
])
def test_bad_state_dict_one_clear_error(torchvision_state, edit, needle):
    with pytest.raises(WeightsError) as err:
        params_from_state_dict(edit(torchvision_state), source="my.pth", preprocessing="caffe")
    assert str(err.value).startswith("my.pth: ") and needle in str(err.value), str(err.value)


def test_gatys_missing_layer(gatys_state):
    with pytest.raises(WeightsError, match="missing conv5_4.weight, conv5_4.bias"):
        params_from_state_dict(_edited(gatys_state, drop=["conv5_4.weight", "conv5_4.bias"]))


# --------------------------------------------------------------------------- MatConvNet


@pytest.fixture(scope="module")
def mat_file(tmp_path_factory, np_params):
    pytest.importorskip("scipy")
    return write_matconvnet(tmp_path_factory.mktemp("mat") / "verydeep.mat", np_params)


def test_matconvnet_gives_matconvnets_features(mat_file, np_params, rgb, tmp_path):
    dst = tmp_path / "mcn.h5"
    result = convert_weights(mat_file, dst)
    assert result.known is None and "MatConvNet" in result.description
    _assert_params(load_vgg19_params(dst), np_params)
    assert load_preprocessing(dst) == Preprocessing("RGB", 255.0, MATCONVNET_MEAN, (1, 1, 1))
    # MatConvNet: im = single(rgb) - averageImage; vl_nnconv + vl_nnrelu, H x W x C throughout.
    x = rgb - MATCONVNET_MEAN
    expected = []
    for layer in ("block1_conv1", "block1_conv2"):
        x = np.maximum(_correlate_hwc(x, np_params[layer]["kernel"].astype(np.float64),
                                      np_params[layer]["bias"]), 0)
        expected.append(x)
    _assert_close(_converted_features(dst, rgb), expected)


def test_matconvnet_old_layout_mean_image(np_params, tmp_path):
    pytest.importorskip("scipy")
    src = write_matconvnet(tmp_path / "old.mat", np_params, old=True, average=[120.0, 110, 100])
    convert_weights(src, tmp_path / "old.h5")
    _assert_params(load_vgg19_params(tmp_path / "old.h5"), np_params)
    # The 4x4 mean image's +2 and -2 cancel: its per-channel average is the mean.
    np.testing.assert_allclose(load_preprocessing(tmp_path / "old.h5").mean, [120, 110, 100],
                               rtol=1e-6)


def test_matconvnet_known_checksum_and_no_preprocessing_override(np_params):
    layers = {name: (np_params[k]["kernel"], np_params[k]["bias"])
              for name, k in zip(LAYERS, KERAS_LAYERS)}
    verydeep = next(known for known in KNOWN_FILES if known.layout == "matconvnet")
    result = params_from_matconvnet(layers, MATCONVNET_MEAN, sha256=verydeep.sha256)
    assert result.known == verydeep and "recognized" in result.description
    with pytest.raises(WeightsError, match="contradicts"):
        params_from_matconvnet(layers, MATCONVNET_MEAN, preprocessing="caffe")


def _tiny(np_params, **overrides):
    """Params with 1x1x1x1 kernels (quick to write), except the given layers."""
    params = {k: {"kernel": np.ones((1, 1, 1, 1), np.float32), "bias": np.ones(1, np.float32)}
              for k in KERAS_LAYERS}
    params.update(overrides)
    return params


@pytest.mark.parametrize("case, needle", [
    ("missing", "missing conv5_4"),
    ("shape", "conv1_1 filters has shape (1, 1, 1, 1), expected (3, 3, 3, 64)"),
    ("nan", "conv1_1 filters contains NaN"),
    ("mean", "averageImage of shape (1, 1, 2) is not an RGB mean"),
    ("no_layers", "no 'layers' variable"),
])
def test_bad_matconvnet_one_clear_error(np_params, tmp_path, case, needle):
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path / "bad.mat"
    nan_kernel = np_params["block1_conv1"]["kernel"].copy()
    nan_kernel[0, 0, 0, 0] = np.nan
    if case == "missing":
        write_matconvnet(path, _tiny(np_params), skip=("conv5_4",))
    elif case == "shape":
        write_matconvnet(path, _tiny(np_params))
    elif case == "nan":
        write_matconvnet(path, _tiny(np_params, block1_conv1={
            "kernel": nan_kernel, "bias": np.ones(64, np.float32)}))
    elif case == "mean":
        write_matconvnet(path, _tiny(np_params), average=[1.0, 2.0])
    else:
        scipy_io.savemat(path, {"net": np.ones(3)})
    with pytest.raises(WeightsError) as err:
        convert_weights(path, tmp_path / "out.h5")
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value), str(err.value)
    assert not (tmp_path / "out.h5").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.mat"]  # no temporary file left


# --------------------------------------------------------------------------- formats, output


@pytest.mark.parametrize("name, content, needle", [
    ("w.bin", b"\x00garbage" * 10, "unknown format"),
    ("w.mat", b"\x00garbage" * 10, "not a matlab file"),
    ("w.pth", b"MATLAB 5.0 MAT-file" + b" " * 200, "the extension says pytorch, the content is matlab"),
    ("w.mat", b"MATLAB 7.3 MAT-file" + b" " * 600, "MATLAB v7.3"),
    ("w.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "already an HDF5 file"),
])
def test_unknown_or_mislabelled_format(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError) as err:
        detect_format(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value), str(err.value)


def test_zip_without_pickle_is_not_pytorch(tmp_path):
    path = tmp_path / "w.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.npy", b"")
    with pytest.raises(WeightsError, match="not a pytorch file"):
        detect_format(path)
    assert detect_format(_fake_pth(tmp_path / "real.pth")) == "pytorch"


def test_missing_torch_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    src = _fake_pth(tmp_path / "vgg19.pth")
    with pytest.raises(WeightsError, match=r'vgg19\.pth: .*pip install "nst_jax\[convert\]"'):
        read_torch_state_dict(src)
    with pytest.raises(WeightsError, match="needs torch"):
        convert_weights(src, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_output_never_overwritten_without_flag(pth, torchvision_state, tmp_path):
    src = pth(torchvision_state)
    dst = tmp_path / "out.h5"
    dst.write_bytes(b"keep me")
    with pytest.raises(WeightsError, match="already exists; pass --overwrite"):
        convert_weights(src, dst, preprocessing="caffe")
    assert dst.read_bytes() == b"keep me"
    convert_weights(src, dst, preprocessing="caffe", overwrite=True)
    assert load_preprocessing(dst) == CAFFE
    source_bytes = src.read_bytes()
    with pytest.raises(WeightsError, match="would overwrite the input"):
        convert_weights(src, tmp_path / "." / "vgg19.pth", preprocessing="caffe", overwrite=True)
    assert src.read_bytes() == source_bytes
    with pytest.raises(WeightsError, match="is a folder"):
        convert_weights(src, tmp_path, preprocessing="caffe")
    with pytest.raises(WeightsError, match="does not exist"):
        convert_weights(src, tmp_path / "nowhere" / "out.h5", preprocessing="caffe")
    with pytest.raises(WeightsError, match="no such file"):
        convert_weights(tmp_path / "missing.pth", tmp_path / "x.h5")


# --------------------------------------------------------------------------- CLI


def test_cli_convert_mat_then_info(mat_file, tmp_path, capsys):
    dst = tmp_path / "vgg.h5"
    assert main(["weights", "convert", str(mat_file), "-o", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "MatConvNet SimpleNN model; not a known file" in out
    assert "input convention recorded: RGB 0-255, minus mean (123.68, 116.779, 103.939)" in out
    assert f"wrote {dst}" in out
    assert main(["weights", "info", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "preprocessing: RGB 0-255, minus mean (123.68, 116.779, 103.939)" in out
    assert "\nweights: file: a user-supplied VGG-19 file\n" in out  # the kind of weights
    assert main(["weights", "convert", str(mat_file), "-o", str(dst)]) == 1
    assert "nst-jax: error: " in capsys.readouterr().err
    assert main(["weights", "convert", str(mat_file), "-o", str(dst), "--overwrite"]) == 0


def test_cli_torchvision_needs_preprocessing(pth, torchvision_state, tmp_path, capsys):
    src, dst = pth(torchvision_state), tmp_path / "tv.h5"
    assert main(["weights", "convert", str(src), "-o", str(dst)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nst-jax: error: {src}: ") and "--preprocessing" in err
    assert len(err.splitlines()) == 1 and not dst.exists()
    assert main(["weights", "convert", str(src), "-o", str(dst),
                 "--preprocessing", "torchvision"]) == 0
    assert "from --preprocessing torchvision" in capsys.readouterr().out
    assert main(["weights", "info", str(dst)]) == 0
    assert ("preprocessing: RGB 0-1, minus mean (0.485, 0.456, 0.406), divided by std "
            "(0.229, 0.224, 0.225)") in capsys.readouterr().out


def test_cli_bad_file_one_line(tmp_path, capsys):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"<html>not found</html>")
    assert main(["weights", "convert", str(bad), "-o", str(tmp_path / "out.h5")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"nst-jax: error: {bad}: not a pytorch file; convert reads PyTorch .pth "
                   "files (torchvision layout or Gatys' vgg_conv.pth) and MatConvNet .mat files")


# --------------------------------------------------------------------------- real torch files


@pytest.mark.parametrize("zipped", [True, False])
def test_real_torch_file(torchvision_state, np_params, tmp_path, zipped):
    torch = pytest.importorskip("torch")
    src = tmp_path / "vgg19.pth"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
                torchvision_state.items()}, src, _use_new_zipfile_serialization=zipped)
    assert detect_format(src) == "pytorch"
    convert_weights(src, tmp_path / "out.h5", preprocessing="torchvision")
    loaded = load_vgg19_params(tmp_path / "out.h5")
    for layer in KERAS_LAYERS:
        np.testing.assert_array_equal(np.asarray(loaded["params"][layer]["kernel"]),
                                      np_params[layer]["kernel"])
