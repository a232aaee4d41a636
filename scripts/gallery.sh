#!/usr/bin/env bash
# Rebuild the gallery (docs/gallery/) from the bundled examples, on the pretrained VGG-19.
#   bash scripts/gallery.sh [WEIGHTS]      # WEIGHTS: auto (default), quantized, or a .h5 file
# About 25 minutes on 2 CPU cores at the sizes below (the 512-px strength row is 15 of them).
# Every image records its settings and the weights that made it in its metadata
# (`python -c "from nst_jax.images import read_metadata; print(read_metadata('docs/gallery/plain.png'))"`).
set -euo pipefail
cd "$(dirname "$0")/.."
weights="${1:-auto}"
out=docs/gallery
mkdir -p "$out"
common=(--weights "$weights" --size 256 --iterations 300 --overwrite -q)
photo=examples/chelsea.jpg

# One compiled, vmapped job over 5 style weights x 2 paintings (128 px keeps the 10 lanes in
# one program on a CPU; sweep/sweep.json holds every loss history).
run() { echo "+ nst-jax $*"; nst-jax "$@"; }
run sweep "$photo" examples/starry_night.jpg examples/great_wave.jpg \
    --style-weight 1,3,10,30,100 --size 128 --iterations 300 --weights "$weights" \
    --overwrite -q -o "$out/sweep"
cp "$out/sweep/contact_sheet.png" "$out/sweep.png"

# The README's picture: the default command at 512 px (what users get) with the style
# weight 1, 3, 10 (the default), 30 and 100.
mkdir -p "$out/strength"
for w in 1 3 10 30 100; do
    run stylize "$photo" examples/starry_night.jpg -o "$out/strength/sw$w.png" \
        --style-weight "$w" --weights "$weights" --overwrite -q
done
python - "$photo" "$out" <<'EOF'
import sys
import nst_jax
from nst_jax.quality import contact_sheet
photo, out = sys.argv[1], sys.argv[2]
weights = ["1", "3", "10", "30", "100"]
row = [nst_jax.load_image(photo, max_side=512),
       *(nst_jax.load_image(f"{out}/strength/sw{w}.png") for w in weights),
       nst_jax.load_image("examples/starry_night.jpg", max_side=512)]
labels = ["photo", *(f"style weight {w}" + (" (default)" if w == "10" else "") for w in weights),
          "painting"]
contact_sheet([row], None, labels, font_size=20).save(f"{out}/strength.jpg", quality=90)
EOF

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

run stylize "$photo" examples/starry_night.jpg -o "$out/plain.png" "${common[@]}"
run stylize "$photo" examples/starry_night.jpg -o "$out/luminance.png" \
    --preserve-colors luminance "${common[@]}"
run stylize "$photo" examples/starry_night.jpg -o "$out/histogram.png" \
    --preserve-colors histogram "${common[@]}"
run stylize "$photo" examples/starry_night.jpg:0.5 --style examples/great_wave.jpg:0.5 \
    -o "$out/blend.png" "${common[@]}"
run stylize "$photo" examples/starry_night.jpg --style examples/great_wave.jpg \
    --mask "$out/mask_left.png" --mask "$out/mask_right.png" -o "$out/regions.png" "${common[@]}"
run stylize "$photo" examples/starry_night.jpg -o "$out/single_scale.png" \
    --scale-factor 1 "${common[@]}"
