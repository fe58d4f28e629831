"""``d2ft pretrain``: pre-train a small timm ViT on Fashion-MNIST, as the project's own backbone.

No model hub is reachable here, so the backbone D2FT fine-tunes is built by the project:
a timm VisionTransformer on 28 x 28 grey images (patch 4, width 96, 6 blocks, 4 heads, so
that every block has several subnets) trained with AdamW, linear warm-up and cosine decay
on the Fashion-MNIST training set (Xiao et al. 2017; IDX files, e.g. from Debian's
``dataset-fashion-mnist``), single process. It writes the weights as safetensors and a
manifest beside them: the command, model arguments, data files with their SHA-256, seed,
test accuracy, versions and the checkpoint's SHA-256.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from d2ft.rundir import sha256
from d2ft.serial import default_file_mode, write_json

from .data import ImageData, find_files, read_idx_images, read_idx_labels
from .optim import lr_at

MODEL = "vit_tiny_patch16_224"
MODEL_KWARGS = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=96, depth=6, num_heads=4, num_classes=10)


def evaluate(model, data: ImageData, mean, std, batch: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.images), batch):
            x = (data.images[start:start + batch].float() / 255 - mean[:, None, None]) / std[:, None, None]
            correct += int((model(x).argmax(1) == data.labels[start:start + batch]).sum())
    model.train()
    return correct / len(data.images)


def keep_classes(data: ImageData, classes: tuple[int, ...]) -> ImageData:
    """The samples whose label is in ``classes``, relabelled by position (``classes[i]`` becomes ``i``)."""
    lookup = torch.full((int(data.labels.max()) + 1,), -1, dtype=torch.int64)
    for i, c in enumerate(classes):
        if c < len(lookup):
            lookup[c] = i
    mask = lookup[data.labels] >= 0
    if not mask.any():
        raise ValueError(f"no sample has a label in {list(classes)}; labels run 0..{len(lookup) - 1}")
    return ImageData(data.images[mask], lookup[data.labels[mask]])


def pretrain(data_dir: str | Path, out: str | Path, epochs: int = 2, batch_size: int = 128, lr: float = 2e-3,
             seed: int = 0, threads: int = 2, limit: int | None = None, classes: tuple[int, ...] | None = None,
             progress: bool = True) -> dict:
    """Trains, evaluates and writes ``out`` (.safetensors) and ``out``.manifest.json; returns the manifest.

    ``classes`` keeps only those labels (train and test), relabelled ``0..len(classes)-1``, and sizes the
    classifier to them: a backbone pre-trained on some classes leaves the others as an unseen task."""
    import timm
    from safetensors.torch import save_file
    from tqdm import tqdm

    torch.set_num_threads(threads)
    files = find_files(Path(data_dir))
    train = ImageData(read_idx_images(files[0]), read_idx_labels(files[1]))
    test = ImageData(read_idx_images(files[2]), read_idx_labels(files[3]))
    if classes:
        train, test = keep_classes(train, classes), keep_classes(test, classes)
    if limit:
        train, test = ImageData(train.images[:limit], train.labels[:limit]), ImageData(test.images[:limit], test.labels[:limit])
    mean, std = train.stats()
    torch.manual_seed(seed)
    model_kwargs = dict(MODEL_KWARGS, num_classes=len(classes) if classes else MODEL_KWARGS["num_classes"])
    model = timm.create_model(MODEL, pretrained=False, **model_kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = len(train.images) // batch_size
    total = epochs * steps_per_epoch
    t0 = time.perf_counter()
    with tqdm(total=total, unit="step", file=sys.stderr, desc="pretrain", disable=not progress) as bar:
        for epoch in range(epochs):
            for i, (x, y) in enumerate(train.batches(batch_size, seed, epoch, mean, std, augment=True)):
                step = epoch * steps_per_epoch + i
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, warmup=max(total // 20, 1), peak=lr)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
    accuracy = evaluate(model, test, mean, std)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
              metadata={"model": MODEL, "model_kwargs": json.dumps(model_kwargs)})
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, out)
    manifest = {
        "command": " ".join(["d2ft", "pretrain"] + sys.argv[2:]) if sys.argv[1:2] == ["pretrain"] else "pretrain()",
        "model": MODEL, "model_kwargs": model_kwargs, "classes": list(classes) if classes else None, "params": sum(p.numel() for p in model.parameters()),
        "data": {p.name: sha256(p) for p in files}, "train_images": len(train.images), "test_images": len(test.images),
        "normalisation": {"mean": mean.tolist(), "std": std.tolist()},
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "test_top1": accuracy,
        "train_seconds": time.perf_counter() - t0, "torch": torch.__version__, "timm": timm.__version__,
        "sha256": sha256(out),
    }
    write_json(out.with_suffix(".manifest.json"), manifest)
    return manifest
