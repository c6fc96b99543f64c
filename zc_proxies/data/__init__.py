"""The one image-data layer: real datasets in their official layouts, seeded minibatches, stand-ins.

``images``     CIFAR, ImageNet16 and ImageNet-style folders (ImageFolder or ``labels.csv``); the data root
``minibatch``  seeded minibatches (uniform or class-balanced, with training augmentation)
``sources``    which images feed a benchmark dataset, and the named stand-ins when they are absent
``training``   holdout splits and epoch batches for training runs
``coco``       COCO instance annotations and detection minibatches

Evaluations, BlockSwap searches and training all read images through here.
"""

from .images import DATA_ENV, ImageSet, data_root, find_folder, load_cifar, load_image_folder, load_imagenet16
from .minibatch import SAMPLINGS, balanced_indices, minibatch
from .sources import MinibatchSource, StandInWarning, source_for

__all__ = [
    "DATA_ENV", "ImageSet", "MinibatchSource", "SAMPLINGS", "StandInWarning", "balanced_indices", "data_root",
    "find_folder", "load_cifar", "load_image_folder", "load_imagenet16", "minibatch", "source_for",
]
