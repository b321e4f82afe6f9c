"""An unbalanced slice of CIFAR-10 as a folder of PNGs: 600 airplanes down to 60 trucks (10:1),
with a few exact duplicates, one unreadable file and a few images of another size."""
import pickle, shutil, sys
from pathlib import Path
import numpy as np
from PIL import Image
source, root = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(root, ignore_errors=True)
names = pickle.loads((source / "batches.meta").read_bytes())["label_names"]
batch = pickle.loads((source / "data_batch_1").read_bytes(), encoding="bytes")
pixels = np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
labels = np.asarray(batch[b"labels"])
for c, name in enumerate(names):
    want = round(600 * 10 ** (-c / 9))
    folder = root / name
    folder.mkdir(parents=True)
    for k, index in enumerate(np.flatnonzero(labels == c)[:want]):
        image = Image.fromarray(pixels[index])
        if c == 0 and k < 5:  # five photos of another size
            image = image.resize((64, 48))
        image.save(folder / f"{name}_{k:04d}.png")
# duplicates: three within a class, two across classes
for k in range(3):
    shutil.copy(root / "cat" / f"cat_{k:04d}.png", root / "cat" / f"cat_copy_{k}.png")
for k in range(2):
    shutil.copy(root / "dog" / f"dog_{k:04d}.png", root / "truck" / f"from_dog_{k}.png")
(root / "bird" / "broken.png").write_bytes(b"not a png")
print(sum(1 for _ in root.rglob("*.png")), "files in", root)
