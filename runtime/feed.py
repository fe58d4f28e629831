"""The coordinator's training batches and test chunks for a job.

Step s always gets the same batch, whatever came before: the order and augmentation of
an epoch depend only on (seed, epoch) (``ImageData.batches``), which is what an exact
resume needs. ``synthetic`` data is a seeded stream of random images and labels shaped
for the model (timing runs: nothing to learn).
"""

from __future__ import annotations

import torch

from .data import load_dataset


def synthetic_batches(job, model):
    """Seeded random images and labels, the same on every rank: an endless stream of (images, labels)."""
    g = torch.Generator().manual_seed(job.seed + 1)
    size = model.patch_embed.img_size
    chans = model.patch_embed.proj.in_channels
    b = job.batch_size
    while True:
        yield torch.randn(b, chans, *size, generator=g), torch.randint(0, model.num_classes, (b,), generator=g)


class Feed:
    """The coordinator's batches: step s always gets the same batch, whatever came before."""

    def __init__(self, job, model) -> None:
        self.job, self.batch_size, self.seed = job, job.batch_size, job.seed
        self.synthetic = job.data == "synthetic"
        if self.synthetic:
            self._stream, self._next, self.test = synthetic_batches(job, model), 0, None
            return
        data = load_dataset(job.data)
        self.train, self.test, self.flip = data.train, data.test, data.flip
        self.mean, self.std = self.train.stats()
        self.per_epoch = len(self.train.images) // self.batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train.images)} images, fewer than one batch of "
                             f"{self.batch_size}")
        self._epoch, self._iter, self._next = None, None, 0

    @property
    def test_size(self) -> int:
        """Images in the test split (0 for synthetic data)."""
        return 0 if self.test is None else len(self.test.images)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of ``step``, normalised (and augmented when the job says so)."""
        if self.synthetic:
            if step < self._next:
                raise ValueError("synthetic batches are drawn in order; a step cannot be revisited")
            for _ in range(step - self._next):
                next(self._stream)
            self._next = step + 1
            return next(self._stream)
        epoch, i = divmod(step, self.per_epoch)
        if (epoch, i) != (self._epoch, self._next):
            self._iter = self.train.batches(self.batch_size, self.seed, epoch, self.mean, self.std,
                                            augment=self.job.augment, flip=self.flip, start=i)
            self._epoch = epoch
        self._next = i + 1
        return next(self._iter)

    def test_chunks(self, size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The test images, normalised like the training split, in chunks of ``size``; and the labels."""
        x = (self.test.images.float() / 255 - self.mean[:, None, None]) / self.std[:, None, None]
        return list(x.split(size)), self.test.labels
