"""Datasets load from their real on-disk formats, and the batch streams behave as a user relies on."""

import gzip
import shutil

import numpy as np
import pytest
import torch
from conftest import learnable_images, write_idx, write_idx_dataset, write_image_folder
from PIL import Image
from test_cli import assert_one_line_error
from test_configs import run_cli

from cnnbench.data import MemoryLoader, build_data, random_crop_flip, stratified_split
from cnnbench.errors import CnnbenchError

CPU = torch.device("cpu")


def load(compose_config, *overrides, batch_size=32, seed=0):
    cfg = compose_config(*overrides)
    return build_data(cfg.data, batch_size=batch_size, seed=seed, device=CPU)


def test_mnist_loads_from_torchvision_layout_gz(compose_config, idx_root):
    data = load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0")
    assert data.classes[0].startswith("0") and data.num_classes == 10
    assert (data.in_channels, data.image_size) == (1, (28, 28))
    images, labels = next(iter(data.train))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.long and 0 <= labels.min() and labels.max() < 10
    assert len(data.test.labels) == 200


def test_fashion_mnist_reads_extracted_files_from_a_search_dir(compose_config, tmp_path):
    # The Debian package's layout: the four files in one folder, outside any data root.
    folder = write_idx_dataset(tmp_path / "system", gz=False)
    data = load(compose_config, "data=fashion_mnist", f"data.root={tmp_path / 'empty'}",
                f"data.search_dirs=[{folder}]", "data.download=false", "data.val_split=0")
    assert data.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                            "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert len(data.train.labels) == 600


def test_normalisation_uses_the_configs_mean_and_std(compose_config, idx_root):
    data = load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0.1",
                "data.mean=[0.5]", "data.std=[0.5]")
    raw = data.val.images[:4].float() / 255
    images, _ = next(iter(data.val))
    torch.testing.assert_close(images[:4], (raw - 0.5) / 0.5)


def test_missing_dataset_offline_names_files_and_fix(compose_config, tmp_path):
    with pytest.raises(CnnbenchError) as error:
        load(compose_config, "data=mnist", f"data.root={tmp_path}", "data.download=false", "data.val_split=0.1")
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "data.root=" in message and "\n" not in message


def test_truncated_idx_file_is_named(compose_config, idx_root):
    path = idx_root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:5000]))
    with pytest.raises(CnnbenchError, match="train-images-idx3-ubyte.gz is truncated or damaged"):
        load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0.1")


def test_cifar10_loads_batches_whose_md5_differs_from_torchvisions(compose_config, cifar_root):
    data = load(compose_config, "data=cifar10", f"data.root={cifar_root}", "data.download=false", "data.val_split=0")
    assert data.classes[:2] == ["airplane", "automobile"] and data.num_classes == 10
    assert data.train.images.shape == (500, 3, 32, 32) and data.test.images.shape == (100, 3, 32, 32)
    # Row-major CHW as published: the first 1024 bytes of a row are the red plane.
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as file:
        import pickle
        first_row = torch.as_tensor(pickle.load(file, encoding="bytes")[b"data"][0])
    assert torch.equal(data.test.images[0].flatten(), first_row)


def test_cifar10_damaged_batch_is_named(compose_config, cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(CnnbenchError, match="data_batch_3 is not a readable CIFAR-10 batch"):
        load(compose_config, "data=cifar10", f"data.root={cifar_root}", "data.download=false", "data.val_split=0.1")


def craft_cifar_batch(root, change) -> None:
    """Rewrite data_batch_2 of the CIFAR-10 at `root` after `change(entry)`."""
    import pickle

    path = root / "cifar-10-batches-py" / "data_batch_2"
    entry = pickle.loads(path.read_bytes())
    change(entry)
    path.write_bytes(pickle.dumps(entry))


# Batches a data folder of someone else's may hold (issue #23): each was a traceback, or worse, a
# silent cast (pixels above 255 wrapped, labels of 1.5 cut to 1)
@pytest.mark.parametrize("change, message", [
    (lambda entry: entry.pop(b"labels"),
     "expected its b'labels' to be 100 integers, one per image, found nothing"),
    (lambda entry: entry.update({b"labels": bytes(entry[b"labels"])}),
     "b'labels' to be 100 integers, one per image, found bytes"),
    (lambda entry: entry.update({b"labels": [label + 0.5 for label in entry[b"labels"]]}),
     "found a list of 100 holding float"),
    (lambda entry: entry.update({b"labels": entry[b"labels"][:50]}),
     "to be 100 integers, one per image, found 50"),
    (lambda entry: entry.update({b"labels": [12] * 100}), "labels must be in 0..9, found 12..12"),
    (lambda entry: entry.update({b"data": entry[b"data"].astype(np.int64) * 1000}),
     "expected its b'data' to be N x 3072 pixels of uint8, found an array of int64 shaped (100, 3072)"),
    (lambda entry: entry.update({b"data": entry[b"data"].reshape(100, 3, 1024)}),
     "found an array of uint8 shaped (100, 3, 1024)"),
    (lambda entry: entry.update({b"data": entry[b"data"].tolist()}),
     "N x 3072 pixels of uint8, found a list of 100 holding list"),
])
def test_a_crafted_cifar10_batch_is_named_in_one_line(compose_config, cifar_root, change, message):
    craft_cifar_batch(cifar_root, change)
    with pytest.raises(CnnbenchError) as error:
        load(compose_config, "data=cifar10", f"data.root={cifar_root}", "data.download=false")
    assert str(error.value).startswith(f"{cifar_root / 'cifar-10-batches-py' / 'data_batch_2'}: ")
    assert message in str(error.value) and str(error.value).endswith("replace the file")


def test_a_cifar10_batch_far_bigger_than_the_real_ones_is_not_unpickled(compose_config, cifar_root):
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_4", "r+b") as file:
        file.truncate(65 * 2**20)  # sparse: 65 MB to read, none of it on the disk
    with pytest.raises(CnnbenchError, match=r"data_batch_4 holds 65 MB; a CIFAR-10 batch holds about 30 MB"):
        load(compose_config, "data=cifar10", f"data.root={cifar_root}", "data.download=false")


def test_mnist_labels_out_of_range_are_named(compose_config, idx_root):
    labels = idx_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, torch.full((200,), 200, dtype=torch.uint8))
    with pytest.raises(CnnbenchError, match=rf"^{labels}: labels must be in 0..9, found 200..200; "
                                            r"replace the file$"):
        load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false")


def test_a_crafted_cifar10_batch_ends_the_command_in_one_line(tmp_path, cifar_root):
    craft_cifar_batch(cifar_root, lambda entry: entry.pop(b"labels"))
    result = run_cli("data=cifar10", f"data.root={cifar_root}", "data.download=false", "device=cpu",
                     cwd=tmp_path)
    assert_one_line_error(result, "data_batch_2: expected its b'labels' to be 100 integers")
    assert result.returncode == 2


def class_of(path: str) -> str:
    return path.split("/")[-2]


@pytest.mark.parametrize("loader", ["memory", "torch"])
def test_image_folder_splits_by_class_with_a_fixed_seed(compose_config, image_root, loader):
    overrides = ["data=imagefolder", f"data.root={image_root}", "data.image_size=[24,32]",
                 "data.val_fraction=0.3", "data.test_split=0", "num_workers=0", f"data.loader={loader}"]
    data = load(compose_config, *overrides, batch_size=8)
    assert data.classes == ["cat", "dog", "fox"] and data.in_channels == 3
    assert data.image_size == (24, 32)
    val_classes = sorted(class_of(path) for path in data.val.files)
    assert val_classes == ["cat"] * 3 + ["dog"] * 3 + ["fox"] * 3  # 30% of 10 per class
    images, labels = next(iter(data.train))
    assert images.shape == (8, 3, 24, 32)
    again = load(compose_config, *overrides, batch_size=8)
    assert again.val.files == data.val.files
    # another split seed, another split: still 3 of each class held out, not the same 3 (the
    # run's seed does not change it: every run of a comparison holds out the same images)
    assert load(compose_config, *overrides, batch_size=8, seed=1).val.files == data.val.files
    other = load(compose_config, *overrides, "data.split_seed=1", batch_size=8)
    assert sorted(class_of(path) for path in other.val.files) == val_classes
    assert other.val.files != data.val.files
    for split in (data, other):  # the two halves of a split never share an image
        assert not set(split.train.files) & set(split.val.files)
        assert len(split.train.files) + len(split.val.files) == 30


def test_both_image_folder_paths_split_alike_and_see_the_same_validation_pixels(compose_config, image_root):
    overrides = ["data=imagefolder", f"data.root={image_root}", "data.image_size=[24,32]", "num_workers=0"]
    memory, torch_path = (load(compose_config, *overrides, f"data.loader={loader}", batch_size=8)
                          for loader in ("memory", "torch"))
    assert memory.train.files == torch_path.train.files and memory.val.files == torch_path.val.files
    for (a, la), (b, lb) in zip(memory.val, torch_path.val, strict=True):  # decoded once or every epoch
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert torch.equal(la, lb)


@pytest.mark.parametrize("loader", ["memory", "torch"])
def test_image_folder_with_train_and_val_folders(compose_config, tmp_path, loader):
    from conftest import write_image_folder
    write_image_folder(tmp_path / "train", classes=("a", "b"), per_class=4)
    write_image_folder(tmp_path / "val", classes=("a", "b"), per_class=2)
    data = load(compose_config, "data=imagefolder", f"data.root={tmp_path}", "data.grayscale=true",
                "data.mean=[0.5]", "data.std=[0.5]", "num_workers=0", f"data.loader={loader}", batch_size=4)
    assert data.classes == ["a", "b"] and data.in_channels == 1
    assert len(data.train.files) == 8 and len(data.val.files) == 4
    assert next(iter(data.val))[0].shape == (4, 1, 224, 224)


@pytest.mark.parametrize("loader", ["memory", "torch"])
def test_image_folder_with_train_and_test_folders(compose_config, tmp_path, loader):
    write_image_folder(tmp_path / "train", classes=("a", "b"), per_class=4)
    write_image_folder(tmp_path / "test", classes=("a", "b"), per_class=3)
    data = load(compose_config, "data=imagefolder", f"data.root={tmp_path}", "data.image_size=16",
                "data.val_split=2", "num_workers=0", f"data.loader={loader}", batch_size=4)
    assert data.classes == ["a", "b"]
    # tested on test/, all of it; validated on 2 images held out of train/, one of each class
    assert len(data.train.files) == 6 and len(data.val.files) == 2 and len(data.test.files) == 6
    assert all(f"{tmp_path / 'test'}/" in path for path in data.test.files)
    assert all(f"{tmp_path / 'train'}/" in path for path in data.val.files)
    assert [class_of(path) for path in data.test.files] == ["a", "a", "a", "b", "b", "b"]
    assert torch.cat([labels for _, labels in data.test]).tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_training_flips_images_at_random_and_validation_never(compose_config, tmp_path):
    # Every image of a class is the same picture, bright on its left: each training image must be
    # that picture or its mirror image, and some of each; a validation image is never mirrored.
    for name, row in (("left", 0), ("right", 8)):
        (tmp_path / "pets" / name).mkdir(parents=True)
        pixels = np.zeros((16, 16, 3), dtype=np.uint8)
        pixels[row:row + 8, :4] = 250
        pixels[row:row + 8, 4:8] = 120
        for index in range(32):
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{index}.png")
    overrides = ["data=imagefolder", f"data.root={tmp_path / 'pets'}", "data.image_size=16",
                 "num_workers=0", "data.val_fraction=0.25", "data.test_split=0", "data.mean=[0,0,0]",
                 "data.std=[1,1,1]"]
    data = load(compose_config, *overrides, batch_size=48)
    val_images, val_labels = next(iter(data.val))
    originals = {label: image for image, label in zip(val_images, val_labels.tolist(), strict=True)}
    assert sorted(originals) == [0, 1]
    assert all(torch.equal(image, originals[label])
               for image, label in zip(val_images, val_labels.tolist(), strict=True))
    flipped = []
    for epoch in range(2):
        data.train.set_epoch(epoch)
        for images, labels in data.train:
            for image, label in zip(images, labels.tolist(), strict=True):
                assert torch.equal(image, originals[label]) or torch.equal(image, originals[label].flip(-1))
                flipped.append(not torch.equal(image, originals[label]))
    assert len(flipped) == 96 and 25 < sum(flipped) < 71  # about half, drawn per image
    # and data.augment.hflip=false turns it off
    plain = load(compose_config, *overrides, "data.augment.hflip=false", batch_size=48)
    images, labels = next(iter(plain.train))
    assert all(torch.equal(image, originals[label]) for image, label in zip(images, labels.tolist(),
                                                                          strict=True))


def test_the_dataloader_path_crops_and_flips_each_image_on_its_own(compose_config, cifar_root):
    # CIFAR-10's augmentation (pad 4, random crop, flip) on the DataLoader path: each training image
    # is a window of its own zero-padded image, or that window mirrored, drawn per image.
    common = ["data=cifar10", f"data.root={cifar_root}", "data.download=false", "data.val_split=0.1", "data.loader=torch",
              "data.mean=[0,0,0]", "data.std=[1,1,1]"]
    augmented = load(compose_config, *common, batch_size=64)
    plain = load(compose_config, *common, "data.augment.crop_padding=0", "data.augment.hflip=false",
                 batch_size=64)
    (images, labels), (originals, same_labels) = next(iter(augmented.train)), next(iter(plain.train))
    assert torch.equal(labels, same_labels)  # the same images, in the same order
    windows = set()
    for image, original in zip(images, originals, strict=True):
        padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
        found = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)
                 if torch.equal(image, padded[:, top:top + 32, left:left + 32].flip(-1) if flip
                                else padded[:, top:top + 32, left:left + 32])]
        assert found, "an augmented image is no window of its own padded image"
        windows.add(found[0])
    assert len(windows) > 20  # drawn per image, not one crop for the whole batch
    assert any(flip for _, _, flip in windows) and not all(flip for _, _, flip in windows)


def test_image_folder_with_one_class_is_refused(compose_config, tmp_path):
    from conftest import write_image_folder
    write_image_folder(tmp_path / "one", classes=("only",), per_class=3)
    with pytest.raises(CnnbenchError, match="has 1 class folder \\(only\\); classification needs at least 2"):
        load(compose_config, "data=imagefolder", f"data.root={tmp_path / 'one'}")


def test_train_limit_keeps_the_first_images(compose_config, idx_root):
    data = load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0",
                "data.train_limit=100")
    assert len(data.train.labels) == 100 and len(data.test.labels) == 200
    # the first 100 of the file, in its order; the test split untouched
    everything = load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0")
    assert torch.equal(data.train.images, everything.train.images[:100])
    assert torch.equal(data.train.labels, everything.train.labels[:100])
    assert torch.equal(data.test.images, everything.test.images)


def test_train_limit_on_an_image_folder_keeps_every_class_share(compose_config, tmp_path):
    # its files are sorted by class: the first 30 of 3 x 50 were all cats (issue #23)
    root = write_image_folder(tmp_path / "pets", per_class=50, size=(8, 8))
    overrides = ["data=imagefolder", f"data.root={root}", "data.image_size=8", "num_workers=0"]
    whole = load(compose_config, *overrides)
    limited = load(compose_config, *overrides, "data.train_limit=30")
    assert torch.bincount(limited.train.labels).tolist() == [10, 10, 10]
    assert set(limited.train.files) < set(whole.train.files)  # training images only ...
    assert limited.val.files == whole.val.files  # ... and validation as it was
    assert load(compose_config, *overrides, "data.train_limit=30").train.files == limited.train.files
    uneven = load(compose_config, *overrides, "data.train_limit=7")  # 7 x 40 / 120 each: 2.33
    assert sorted(torch.bincount(uneven.train.labels).tolist()) == [2, 2, 3]


def test_shuffle_is_seeded_per_epoch():
    images, labels = learnable_images(64, 10, (1, 8, 8), seed=0)

    def order(seed, epoch):
        loader = MemoryLoader(images, labels, 16, mean=[0.0], std=[1.0], shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([batch_labels for _, batch_labels in loader])

    assert torch.equal(order(0, 3), order(0, 3))
    assert not torch.equal(order(0, 3), order(0, 4))
    assert not torch.equal(order(0, 3), order(1, 3))


def test_augmentation_draws_per_image_and_never_reads_outside_the_padding():
    image = torch.arange(1, 65, dtype=torch.uint8).view(1, 1, 8, 8)  # every pixel distinct
    batch = image.repeat(512, 1, 1, 1)
    out = random_crop_flip(batch, 2, True, torch.Generator().manual_seed(0))
    # Every possible result, cut by plain slicing: 5 x 5 windows of the padded image, each
    # as is or mirrored.
    padded = torch.nn.functional.pad(image[0], (2, 2, 2, 2))
    windows = [padded[:, top:top + 8, left:left + 8] for top in range(5) for left in range(5)]
    mirrored = [w.flip(2) for w in windows]
    allowed = {tuple(w.flatten().tolist()): "plain" for w in windows}
    allowed.update({tuple(w.flatten().tolist()): "flipped" for w in mirrored})
    drawn = [allowed.get(tuple(o.flatten().tolist())) for o in out]
    assert None not in drawn  # each image is one window of its own padded image
    assert len({tuple(o.flatten().tolist()) for o in out}) == 50  # all drawn within one batch
    assert 180 < drawn.count("flipped") < 330  # about half, drawn per image


def test_crop_without_flip_and_flip_without_crop():
    image = torch.arange(1, 65, dtype=torch.uint8).view(1, 1, 8, 8).repeat(64, 1, 1, 1)
    generator = torch.Generator().manual_seed(1)
    flipped_only = random_crop_flip(image, 0, True, generator)
    for out in flipped_only:  # each image is the original or its mirror, nothing else
        assert torch.equal(out, image[0]) or torch.equal(out, image[0].flip(2))
    cropped_only = random_crop_flip(image, 1, False, generator)
    for out in cropped_only:  # columns always run left to right
        row = out[0, 3][out[0, 3] > 0].long()
        assert (row.diff() == 1).all()


def test_stratified_split_keeps_one_of_each_class_in_both_halves():
    train, val = stratified_split([0, 0, 1, 1, 1, 1, 2, 2], 0.5, seed=0)
    assert sorted(train + val) == list(range(8))
    targets = [0, 0, 1, 1, 1, 1, 2, 2]
    assert sorted(targets[i] for i in val) == [0, 1, 1, 2]


def test_memory_and_dataloader_paths_give_the_same_batches_without_augmentation(compose_config, idx_root):
    memory = load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0.1",
                  "data.resize=32")
    loader = load(compose_config, "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0.1",
                  "data.resize=32", "data.loader=torch")
    for (a, la), (b, lb) in zip(memory.val, loader.val, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert torch.equal(la, lb)


def test_extracted_and_gz_files_read_the_same(tmp_path):
    from cnnbench.data import read_idx
    images, _ = learnable_images(5, 10, (28, 28), seed=0)
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "a", images)
    assert torch.equal(read_idx(tmp_path / "a.gz"), read_idx(tmp_path / "a"))
    assert torch.equal(read_idx(tmp_path / "a"), images)
    shutil.copy(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b").write_bytes(b"\x00\x00\x0d\x03" + (tmp_path / "a").read_bytes()[4:])
    with pytest.raises(CnnbenchError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "b")


def test_memory_and_dataloader_paths_score_the_same_weights_alike(compose_config, idx_root):
    from cnnbench.engine.validation import evaluate
    from cnnbench.models import get_model

    torch.manual_seed(0)
    model = get_model("lenet")
    scores = [evaluate(model, load(compose_config, "data=mnist", f"data.root={idx_root}",
                                   "data.download=false", "data.val_split=0.1", f"data.loader={loader}").val, CPU)
              for loader in ("memory", "torch")]
    assert scores[0]["acc"] == scores[1]["acc"] and scores[0]["confusion"] == scores[1]["confusion"]
    assert scores[0]["loss"] == pytest.approx(scores[1]["loss"], rel=1e-6)


def test_image_folder_scales_16_bit_images_as_predict_does(tmp_path):
    from cnnbench.data import ImageFiles
    from cnnbench.inference.predict import open_image

    write_image_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=2)
    deep = (np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)  # 0 .. 57,570 of 65,535
    Image.fromarray(deep).save(tmp_path / "pets" / "cat" / "deep.png")
    files = ImageFiles(tmp_path / "pets", "L", (40, 48))
    files.transform = np.asarray  # the decoded pixels themselves
    index = next(i for i, (path, _) in enumerate(files.samples) if path.endswith("deep.png"))
    trained_on, _ = files[index]
    # scaled to 0..255, not clipped at 255 (PIL's own convert("L") would make most pixels 255)
    assert np.array_equal(trained_on, np.round(deep * (255 / 65535)).astype(np.uint8))
    assert np.array_equal(trained_on, np.asarray(open_image(tmp_path / "pets" / "cat" / "deep.png", 1)))
