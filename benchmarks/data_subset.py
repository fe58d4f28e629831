"""Builds the shipped downstream task: a class-balanced subset of Fashion-MNIST classes 5-9.

The in-domain backbone (``data/pretrained/vit-fmnist0-4.safetensors``) is pre-trained on the
Fashion-MNIST training images of classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat);
its downstream task is classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot), which it
never saw, as ImageNet-pretrained ViTs meet CIFAR. This script draws, with a fixed seed,
``--train-per-class`` training images of each of those classes from the Fashion-MNIST
training split and ``--test-per-class`` test images from its test split, relabels them
0-4 in that order, and writes them as gzipped IDX files (the format ``--data idx:DIR``
reads) with ``PROVENANCE.json``: the source files and their SHA-256, the seed, the
counts, the label map and the SHA-256 of every file written.

Usage (Fashion-MNIST from Debian's dataset-fashion-mnist)::

    .venv/bin/python benchmarks/data_subset.py --source /usr/share/datasets/fashion-mnist \
        --out data/fashion-mnist-5to9
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = (5, 6, 7, 8, 9)
NAMES = ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # Xiao et al. 2017, Table 1


def _write_idx(path: Path, arr) -> None:
    """An IDX file (LeCun et al., "THE MNIST DATABASE", file format): magic 0x0000 08 ndim, sizes, bytes."""
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: the same bytes on every rebuild
        f.write(payload)


def build(source: Path, out: Path, train_per_class: int, test_per_class: int, seed: int) -> dict:
    import numpy as np

    from d2ft.rundir import sha256
    from d2ft.serial import write_json
    from runtime.data import IDX_FILES, find_files, read_idx

    files = find_files(source)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, (images_file, labels_file), per_class in (("train", files[:2], train_per_class),
                                                         ("test", files[2:], test_per_class)):
        images, labels = read_idx(images_file), read_idx(labels_file)
        chosen = []
        for c in CLASSES:
            idx = np.flatnonzero(labels == c)
            if len(idx) < per_class:
                raise ValueError(f"{labels_file}: class {c} has {len(idx)} images, fewer than {per_class}")
            chosen.append(np.sort(rng.choice(idx, per_class, replace=False)))
        idx = np.sort(np.concatenate(chosen))
        relabelled = np.searchsorted(np.array(CLASSES), labels[idx]).astype(np.uint8)
        names = IDX_FILES[:2] if split == "train" else IDX_FILES[2:]
        _write_idx(out / f"{names[0]}.gz", np.ascontiguousarray(images[idx]))
        _write_idx(out / f"{names[1]}.gz", relabelled)
        counts[split] = {"images": int(len(idx)), "per_class": per_class, "source_indices_sha256":
                         __import__("hashlib").sha256(idx.astype("<i8").tobytes()).hexdigest()}
    provenance = {
        "what": "Fashion-MNIST classes 5-9, a seeded class-balanced subset, relabelled 0-4",
        "source": "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747; MIT licence), the IDX files of "
                  "Debian's dataset-fashion-mnist",
        "source_files": {p.name: sha256(p) for p in files},
        "command": "benchmarks/data_subset.py " + " ".join(sys.argv[1:]),
        "seed": seed, "classes": {str(i): f"{c} {n}" for i, (c, n) in enumerate(zip(CLASSES, NAMES))},
        "splits": counts,
        "files": {p.name: sha256(p) for p in sorted(out.glob("*.gz"))},
    }
    write_json(out / "PROVENANCE.json", provenance)
    return provenance


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="/usr/share/datasets/fashion-mnist", help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--out", default=str(ROOT / "data" / "fashion-mnist-5to9"), help="folder to write")
    p.add_argument("--train-per-class", type=int, default=1000, help="training images per class (default: 1000)")
    p.add_argument("--test-per-class", type=int, default=200, help="test images per class (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    args = p.parse_args(argv)
    prov = build(Path(args.source), Path(args.out), args.train_per_class, args.test_per_class, args.seed)
    print(f"{prov['splits']['train']['images']} train and {prov['splits']['test']['images']} test images in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
