"""Real image data from files in standard formats, as tensors, with splits and augmentation.

Readers (each returns uint8 images (N, C, H, W) and int64 labels (N,)):
- ``read_idx_images`` / ``read_idx_labels``: the IDX format of MNIST and Fashion-MNIST
  (``train-images-idx3-ubyte[.gz]``), gzipped or not (LeCun et al., "THE MNIST DATABASE",
  file-format section: a 4-byte magic 0x0000 TT DD, DD big-endian int32 sizes, then data);
- ``read_cifar``: the CIFAR-10/100 python-pickle batches (``data_batch_1`` .. ``test_batch``,
  or ``train`` / ``test`` for CIFAR-100), each a dict with b"data" (N x 3072, R then G then
  B planes) and b"labels" or b"fine_labels" (Krizhevsky 2009, the dataset's web page);
- ``read_image_folder``: one sub-folder per class (sorted names are the classes), images
  decoded with Pillow, resized to a square side.

``ImageData`` normalises (per-channel mean and std of the training split), splits
deterministically by seed, and applies light augmentation in plain torch (random crop
after zero padding, horizontal flip) to training batches only.

Every reader raises ValueError or FileNotFoundError naming the file and what is wrong
with it; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file as a numpy array of its declared type and shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    try:
        with _open(path) as f:
            header = f.read(4)
            if len(header) != 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_TYPES:
                raise ValueError(f"{path}: not an IDX file (magic bytes {header.hex() or 'missing'})")
            ndim = header[3]
            dims = struct.unpack(f">{ndim}i", f.read(4 * ndim))
            dtype = np.dtype(_IDX_TYPES[header[2]])
            data = f.read()
    except (OSError, EOFError, struct.error) as e:
        raise ValueError(f"{path}: cannot read IDX data ({e})") from None
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes of data) but the file holds {len(data)} bytes; "
                         "the file is truncated or corrupt")
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def read_idx_images(path: str | Path) -> torch.Tensor:
    """IDX images (N, H, W) as uint8 (N, 1, H, W)."""
    arr = read_idx(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 images of shape (N, H, W), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.copy()).unsqueeze(1)


def read_idx_labels(path: str | Path) -> torch.Tensor:
    """IDX labels (N,) as int64."""
    arr = read_idx(path)
    if arr.ndim != 1:
        raise ValueError(f"{path}: expected labels of shape (N,), got {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def read_cifar(files: list[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10/100 python-pickle batches, concatenated: uint8 (N, 3, 32, 32) and int64 labels."""
    images, labels = [], []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR batch {str(path)!r} does not exist")
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
            raise ValueError(f"{path}: not a CIFAR python batch ({e})") from None
        key = next((k for k in (b"labels", b"fine_labels") if isinstance(batch, dict) and k in batch), None)
        if key is None or b"data" not in batch:
            raise ValueError(f"{path}: a CIFAR batch needs b'data' and b'labels' (or b'fine_labels')")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch[key]) != len(data):
            raise ValueError(f"{path}: b'data' must be N x 3072 with N labels, got {data.shape}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch[key], dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def read_image_folder(root: str | Path, size: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A class-per-folder tree: uint8 (N, C, size, size), labels, and the class names (sorted)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: expected one sub-folder per class, found none")
    mode = {1: "L", 3: "RGB"}[channels]
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if not path.is_file():
                continue
            try:
                with Image.open(path) as img:
                    pixels = np.asarray(img.convert(mode).resize((size, size)), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"{path}: not an image Pillow can read ({e})") from None
            images.append(torch.from_numpy(pixels.reshape(size, size, channels).copy()).permute(2, 0, 1))
            labels.append(label)
    if not images:
        raise ValueError(f"{root}: the class folders hold no images")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes


@dataclass
class ImageData:
    """Images and labels with a deterministic split, normalisation and light augmentation."""

    images: torch.Tensor
    """uint8 (N, C, H, W)."""
    labels: torch.Tensor
    """int64 (N,)."""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def split(self, fraction: float, seed: int) -> tuple["ImageData", "ImageData"]:
        """(first, rest): a seeded random ``fraction`` of the samples, and the others."""
        if not 0 < fraction < 1:
            raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        cut = int(round(fraction * len(order)))
        a, b = order[:cut].sort().values, order[cut:].sort().values
        return ImageData(self.images[a], self.labels[a]), ImageData(self.images[b], self.labels[b])

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the pixels scaled to [0, 1]."""
        x = self.images.float().div_(255)
        return x.mean((0, 2, 3)), x.std((0, 2, 3)).clamp_min(1e-6)

    def batches(self, batch_size: int, seed: int, epoch: int, mean: torch.Tensor, std: torch.Tensor,
                augment: bool = False, pad: int = 2):
        """Normalised float batches in a seeded order per epoch; the last partial batch is dropped."""
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(self.images), generator=g)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            x = self.images[idx].float().div_(255)
            if augment:
                x = _augment(x, g, pad)
            yield (x - mean[:, None, None]) / std[:, None, None], self.labels[idx]


def _augment(x: torch.Tensor, g: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, and a random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out
