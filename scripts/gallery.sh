#!/usr/bin/env bash
# Rebuild the README gallery (docs/gallery/*.png) from the bundled examples.
#   bash scripts/gallery.sh [WEIGHTS]      # WEIGHTS: auto (default), random, or a .h5 file
# About 10 minutes on 2 CPU cores at the sizes below. Every image records its command line
# settings and the weights that made it in its metadata (`python -c "from nst_jax._image import
# read_metadata; print(read_metadata('docs/gallery/plain.png'))"`).
set -euo pipefail
cd "$(dirname "$0")/.."
weights="${1:-auto}"
out=docs/gallery
mkdir -p "$out"
common=(--weights "$weights" --size 192 --iterations 80 --tol 0 --overwrite -q)
photo=examples/chelsea.jpg

# Left/right region masks at the photo's aspect ratio (white = the region of that style).
python - "$photo" "$out" <<'EOF'
import sys
import numpy as np
from PIL import Image
w, h = Image.open(sys.argv[1]).size
left = np.zeros((h, w), np.uint8)
left[:, : w // 2] = 255
Image.fromarray(left).save(f"{sys.argv[2]}/mask_left.png")
Image.fromarray(255 - left).save(f"{sys.argv[2]}/mask_right.png")
EOF

run() { echo "+ nst-jax $*"; nst-jax "$@"; }
run stylize "$photo" examples/starry_night.jpg -o "$out/plain.png" "${common[@]}"
run stylize "$photo" examples/starry_night.jpg -o "$out/luminance.png" \
    --preserve-colors luminance "${common[@]}"
run stylize "$photo" examples/starry_night.jpg -o "$out/histogram.png" \
    --preserve-colors histogram "${common[@]}"
run stylize "$photo" examples/starry_night.jpg:0.5 --style examples/great_wave.jpg:0.5 \
    -o "$out/blend.png" "${common[@]}"
run stylize "$photo" examples/starry_night.jpg --style examples/great_wave.jpg \
    --mask "$out/mask_left.png" --mask "$out/mask_right.png" -o "$out/regions.png" "${common[@]}"
run stylize "$photo" examples/starry_night.jpg -o "$out/multiscale.png" \
    --weights "$weights" --size 384 --scales 192 --scale-iterations 80,30 --tol 0 --overwrite -q
