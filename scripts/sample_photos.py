"""Write a few real sample photographs (shipped by scikit-image) as JPEGs for the demo."""

import sys
from pathlib import Path

from PIL import Image
from skimage import data

out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/photos")
out.mkdir(parents=True, exist_ok=True)
for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle"):
    array = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    Image.fromarray(array).convert("RGB").save(out / f"{name}.jpg", quality=92)
print(f"wrote sample photos to {out}/", file=sys.stderr)
