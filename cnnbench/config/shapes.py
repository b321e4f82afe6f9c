"""The shape of a dataset's images and its class count, known from its config alone (no file read)."""

from omegaconf import DictConfig

from cnnbench.errors import CnnbenchError

# Datasets whose shape is fixed: (in_channels, height, width, classes); where an option chooses the
# classes (CLASS_OPTIONS), the count of its default.
KNOWN_SHAPES = {"mnist": (1, 28, 28, 10), "fashion_mnist": (1, 28, 28, 10), "kmnist": (1, 28, 28, 10),
                "emnist": (1, 28, 28, 47), "cifar10": (3, 32, 32, 10), "cifar100": (3, 32, 32, 100),
                "svhn": (3, 32, 32, 10), "stl10": (3, 96, 96, 10)}
# Datasets whose classes an option of theirs chooses: dataset -> (the key, {its value: classes})
CLASS_OPTIONS = {
    "cifar100": ("labels", {"fine": 100, "coarse": 20}),
    "emnist": ("split", {"balanced": 47, "byclass": 62, "bymerge": 47, "letters": 26, "digits": 10,
                         "mnist": 10}),
}
# An image folder's classes are known only by reading it; this stands in for their count (only
# the model's last layer depends on it).
FOLDER_CLASSES = 10
# The training images of the datasets whose size is fixed (a batch never holds more).
KNOWN_TRAINING_IMAGES = {"mnist": 60_000, "fashion_mnist": 60_000, "kmnist": 60_000, "emnist": 112_800,
                         "cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "stl10": 5_000}
# ... EMNIST's by data.split (Cohen et al. 2017, "EMNIST: an extension of MNIST to handwritten letters",
# Table II), and the images SVHN's data.svhn_extra adds
EMNIST_TRAINING_IMAGES = {"balanced": 112_800, "byclass": 697_932, "bymerge": 697_932, "letters": 124_800,
                          "digits": 240_000, "mnist": 60_000}
SVHN_EXTRA_IMAGES = 531_131
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
        if data.name in CLASS_OPTIONS:
            key, counts = CLASS_OPTIONS[data.name]
            classes = counts[chosen(data, key, counts)]
    if data.get("resize"):
        height, width = (data.resize, data.resize) if isinstance(data.resize, int) else data.resize
    return channels, height, width, classes


def training_images(data: DictConfig) -> int | None:
    """How many images the training split holds, from the data config alone; None for an image
    folder, whose files are only counted when it is read (data.train_limit: at most that many)."""
    count = data.num_train if data.name == "fake" else KNOWN_TRAINING_IMAGES.get(data.name)
    if data.name == "emnist":
        count = EMNIST_TRAINING_IMAGES[chosen(data, "split", EMNIST_TRAINING_IMAGES)]
    if data.name == "svhn" and data.get("svhn_extra"):
        count += SVHN_EXTRA_IMAGES
    limit = data.get("train_limit")
    return min(count, limit) if count and limit else count or limit


def chosen(data: DictConfig, key: str, allowed) -> str:
    """The value of the option data.`key`, refused in one line unless it is one of `allowed`."""
    value = data.get(key)
    if value not in list(allowed):  # a list: a dict's `in` would fail on a value that is a list
        raise CnnbenchError(f"data.{key}={value!r} is not one of: {', '.join(allowed)}")
    return value
