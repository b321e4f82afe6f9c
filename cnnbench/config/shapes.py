"""The shape of a dataset's images and its class count, known from its config alone (no file read)."""

from omegaconf import DictConfig

# Datasets whose shape is fixed: (in_channels, height, width, classes).
KNOWN_SHAPES = {"mnist": (1, 28, 28, 10), "fashion_mnist": (1, 28, 28, 10), "cifar10": (3, 32, 32, 10)}
# An image folder's classes are known only by reading it; this stands in for their count (only
# the model's last layer depends on it).
FOLDER_CLASSES = 10
# The training images of the datasets whose size is fixed (a batch never holds more).
KNOWN_TRAINING_IMAGES = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}
# Every dataset whose shape input_shape knows.
SHAPED_DATASETS = (*KNOWN_SHAPES, "fake", "imagefolder")


def input_shape(data: DictConfig) -> tuple[int, int, int, int]:
    """(channels, height, width, classes) the model will see, from the data config alone."""
    if data.name == "fake":
        channels, classes = data.in_channels, data.num_classes
        height = width = data.image_size
    elif data.name == "imagefolder":
        size = data.image_size
        height, width = (size, size) if isinstance(size, int) else size
        channels, classes = (1 if data.grayscale else 3), FOLDER_CLASSES
    else:
        channels, height, width, classes = KNOWN_SHAPES[data.name]
    if data.get("resize"):
        height, width = (data.resize, data.resize) if isinstance(data.resize, int) else data.resize
    return channels, height, width, classes


def training_images(data: DictConfig) -> int | None:
    """How many images the training split holds, from the data config alone; None for an image
    folder, whose files are only counted when it is read (data.train_limit: at most that many)."""
    count = data.num_train if data.name == "fake" else KNOWN_TRAINING_IMAGES.get(data.name)
    limit = data.get("train_limit")
    return min(count, limit) if count and limit else count or limit
