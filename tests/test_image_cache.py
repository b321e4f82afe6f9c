"""Image folders at memory speed (issue #13): each image decoded once into a cache that is keyed by
what decides its bytes, never stale, rebuilt when damaged, safe under two runs at once; batches
augmented per image on the device, deterministic per seed and epoch, exact across a resume."""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from PIL import Image

from cnnbench.data import build_data, cache
from cnnbench.data.augment import Augment, resized_crop, resized_crop_boxes
from cnnbench.data.memory import MemoryLoader
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from cnnbench.inference.evaluate import evaluate_checkpoint

CPU = torch.device("cpu")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNNBENCH_CACHE", str(folder))
    return folder


def folder_data(compose_config, root: Path, *overrides: str, batch_size: int = 8, seed: int = 0):
    # two parts, training and validation, as the cache's tests count them (test_protocol.py splits three ways)
    cfg = compose_config("data=imagefolder", f"data.root={root}", "data.image_size=16", "num_workers=0",
                         "data.val_split=0.2", "data.test_split=0", *overrides)
    return build_data(cfg.data, batch_size=batch_size, seed=seed, device=CPU)


@pytest.fixture
def no_decoding(monkeypatch):
    """Make any decoding fail the test: what must come from the cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("images were decoded again")
    monkeypatch.setattr(cache, "decode", refuse)


def caches(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir())


# ---------------------------------------------------------------- the cache

def test_a_second_build_decodes_nothing_and_gives_the_same_pixels(compose_config, image_root, cache_dir,
                                                                    monkeypatch):
    first = folder_data(compose_config, image_root)
    assert len(caches(cache_dir)) == 1
    index = json.loads((caches(cache_dir)[0] / "index.json").read_text())
    assert index["shape"] == [30, 3, 16, 16] and len(index["files"]) == 30
    monkeypatch.setattr(cache, "decode", lambda *a, **k: pytest.fail("decoded again"))
    second = folder_data(compose_config, image_root)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first.val, second.val, strict=True))
    assert second.val.files == first.val.files


def test_the_cache_serves_its_tree_through_a_symbolic_link_and_after_the_tree_moves(
        compose_config, tmp_path, cache_dir, monkeypatch):
    # issue #23: after a first run, the same tree through a linked path gave "0 training images
    # from the cache", then a traceback (the key named files inside the tree, the index by path)
    write_image_folder(tmp_path / "disk" / "images")
    first = folder_data(compose_config, tmp_path / "disk" / "images")
    (tmp_path / "alias").mkdir()
    (tmp_path / "alias" / "images").symlink_to(tmp_path / "disk" / "images")
    monkeypatch.setattr(cache, "decode", lambda *a, **k: pytest.fail("decoded again"))
    linked = folder_data(compose_config, tmp_path / "alias" / "images")
    (tmp_path / "disk").rename(tmp_path / "moved")  # mv keeps the files' sizes and times
    moved = folder_data(compose_config, tmp_path / "moved" / "images")
    for data, where in ((linked, "alias"), (moved, "moved")):
        assert (len(data.train.files), len(data.val.files)) == (24, 6)
        assert all(path.startswith(str(tmp_path / where / "images")) for path in data.train.files)
        assert [Path(path).relative_to(tmp_path / where) for path in data.val.files] == \
            [Path(path).relative_to(tmp_path / "disk") for path in first.val.files]
        assert all(torch.equal(a[0], b[0]) for a, b in zip(first.val, data.val, strict=True))
    assert len(caches(cache_dir)) == 1


def test_an_index_of_an_earlier_release_is_used_where_its_tree_still_is_and_rebuilt_elsewhere(
        compose_config, tmp_path, cache_dir, caplog):
    write_image_folder(tmp_path / "disk" / "images")
    folder_data(compose_config, tmp_path / "disk" / "images")
    (folder,) = caches(cache_dir)
    index = json.loads((folder / "index.json").read_text())
    earlier = {**index, "files": [str(tmp_path / "disk" / "images" / path) for path in index["files"]]}
    del earlier["paths"]  # as the release before wrote it: absolute paths
    (folder / "index.json").write_text(json.dumps(earlier))
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        assert len(folder_data(compose_config, tmp_path / "disk" / "images").train.files) == 24
    assert "damaged" not in caplog.text
    (tmp_path / "disk").rename(tmp_path / "moved")
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        assert len(folder_data(compose_config, tmp_path / "moved" / "images").train.files) == 24
    assert "names the files where the tree was then" in caplog.text
    assert json.loads((folder / "index.json").read_text())["paths"] == "relative"


@pytest.mark.parametrize("change", ["add", "remove", "modify", "size", "grayscale"])
def test_the_cache_is_rebuilt_when_what_decides_it_changes(compose_config, image_root, cache_dir, change):
    overrides = []
    folder_data(compose_config, image_root)
    before = caches(cache_dir)
    if change == "add":
        Image.new("RGB", (40, 48), (200, 10, 10)).save(image_root / "cat" / "new.png")
    elif change == "remove":
        (image_root / "dog" / "3.png").unlink()
    elif change == "modify":  # same name and size, other pixels and time
        path = image_root / "fox" / "0.png"
        Image.open(path).transpose(Image.FLIP_TOP_BOTTOM).save(path)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    elif change == "size":
        overrides = ["data.image_size=20"]
    else:
        overrides = ["data.grayscale=true", "data.mean=[0.5]", "data.std=[0.5]"]
    data = folder_data(compose_config, image_root, *overrides)
    after = caches(cache_dir)
    assert len(after) == 2 and before[0] in after  # a new cache beside the old one, which is intact
    new = next(path for path in after if path not in before)
    index = json.loads((new / "index.json").read_text())
    expected = {"add": 31, "remove": 29}.get(change, 30)
    assert index["shape"][0] == expected == len(data.train.files) + len(data.val.files)
    if change == "modify":  # the new cache holds the new pixels
        row = index["files"].index(os.path.join("fox", "0.png"))  # a path inside the tree
        pixels = np.fromfile(new / "pixels.u8", np.uint8).reshape(index["shape"])[row]
        assert not np.array_equal(pixels, np.fromfile(before[0] / "pixels.u8", np.uint8).reshape(
            index["shape"])[row])


def test_cached_pixels_are_what_the_dataloader_path_sees(compose_config, image_root, cache_dir):
    from torchvision.transforms import v2

    from cnnbench.data.images import open_image

    folder_data(compose_config, image_root, "data.image_size=[24,32]")
    (folder,) = caches(cache_dir)
    index = json.loads((folder / "index.json").read_text())
    pixels = np.fromfile(folder / "pixels.u8", np.uint8).reshape(index["shape"])
    resize = v2.Compose([v2.ToImage(), v2.Resize((24, 32), antialias=True)])
    for row in (0, 7, 29):  # RGB, greyscale and RGBA files (conftest writes all three)
        expected = resize(open_image(image_root / index["files"][row], "RGB")).numpy()
        assert np.array_equal(pixels[row], expected)


def test_a_damaged_cache_is_rebuilt_with_a_warning(compose_config, image_root, cache_dir, caplog):
    folder_data(compose_config, image_root)
    (folder,) = caches(cache_dir)
    pixels = folder / "pixels.u8"
    pixels.write_bytes(pixels.read_bytes()[: pixels.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        data = folder_data(compose_config, image_root)
    assert "is damaged (pixels.u8 holds" in caplog.text and "building it again" in caplog.text
    assert pixels.stat().st_size == 30 * 3 * 16 * 16 and len(data.train.files) == 24
    index = folder / "index.json"
    index.write_text(index.read_text()[:50])  # a half-written index
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        folder_data(compose_config, image_root)
    assert "is damaged (index.json" in caplog.text
    flipped = bytearray(pixels.read_bytes())
    flipped[0] ^= 0xFF  # one damaged byte in a sampled block
    pixels.write_bytes(bytes(flipped))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        folder_data(compose_config, image_root)
    assert "does not match its digest" in caplog.text


def test_a_read_only_image_folder_works_and_an_unwritable_cache_folder_is_said(
        compose_config, image_root, tmp_path, monkeypatch, caplog):
    from test_faults import without_root_powers  # noqa: F401  (the tests may run as root)

    everything = [image_root, *image_root.rglob("*")]
    for path in everything:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))
        data = folder_data(compose_config, image_root)
        assert len(data.train.files) == 24 and caches(tmp_path / "cache")
        # a cache folder that cannot be created (a file stands in its way): decoded in memory
        (tmp_path / "blocked").write_text("")
        with caplog.at_level(logging.WARNING, logger="cnnbench"):
            data = folder_data(compose_config, image_root, f"data.cache_dir={tmp_path / 'blocked' / 'x'}")
        assert "cannot use the cache" in caplog.text and len(data.val.files) == 6
    finally:
        for path in everything:
            path.chmod(0o755 if path.is_dir() else 0o644)


# A process that builds an image folder's data with its cache in CNNBENCH_CACHE (argv: the tree), and
# says what the cache folder holds after: {"train": images, "cache": entries}.
BUILD = textwrap.dedent("""
    import json, os, sys, torch
    from omegaconf import OmegaConf
    from cnnbench.data import build_data
    cfg = OmegaConf.create({"name": "imagefolder", "root": sys.argv[1], "loader": "memory", "cache": True,
        "cache_dir": None, "memory_budget_gb": None, "train_limit": None, "image_size": 64,
        "grayscale": False, "val_fraction": 0.2, "bad_images": "error", "mean": [0.5] * 3, "std": [0.5] * 3,
        "augment": {"crop_padding": 0, "hflip": False}})
    data = build_data(cfg, batch_size=8, seed=0, device=torch.device("cpu"))
    entries = sorted(os.listdir(os.environ["CNNBENCH_CACHE"]))
    print(json.dumps({"train": len(data.train.files), "cache": entries}))
""")


def run_to_file(command: list[str], cache_folder: Path, tmp_path: Path) -> tuple[int, str]:
    """Run `command` with its image cache in `cache_folder`: its exit status and its output (stdout
    and stderr). Into a file, not a pipe: decoding workers that outlived their parent (as in the
    release before) would hold a pipe open, and the test would wait for them instead of failing."""
    with open(tmp_path / "output", "w+") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=300,
                                env={**os.environ, "CNNBENCH_CACHE": str(cache_folder)})
        output.seek(0)
        return result.returncode, output.read()


def test_a_full_disk_under_the_cache_falls_back_to_memory_with_one_warning(image_root, tmp_path):
    # A real full disk: a 64 KiB tmpfs (in a user and mount namespace of its own) for 30 images of
    # 64x64 (360 KiB). The release before wrote the sparse np.memmap file into it: SIGBUS.
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {disk}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (unshare -rm): {probe.stderr.decode().strip()}")
    script = f"mount -t tmpfs -o size=64k tmpfs {disk} && exec {sys.executable} -c '{BUILD}' {image_root}"
    returncode, output = run_to_file(["unshare", "-rm", "sh", "-c", script], disk, tmp_path)
    assert returncode == 0, output
    assert "Traceback" not in output and "Bus error" not in output
    warnings = [line for line in output.splitlines() if "cannot use the cache" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], output
    built = json.loads(output.splitlines()[-1])
    assert built["train"] == 24  # decoded in memory instead
    assert [name for name in built["cache"] if not name.endswith(".lock")] == []  # nothing half-written


def test_sigterm_while_decoding_into_the_cache_leaves_nothing_half_written(image_root, tmp_path):
    # SLURM's or Kubernetes's SIGTERM in the middle of the first decoding: the process still ends by
    # the signal, as before, but the half-built cache folder (gigabytes, for a big tree) is gone.
    terminated = BUILD.replace("from cnnbench.data import build_data", textwrap.dedent("""
        import signal, time
        from cnnbench.data import build_data, cache
        real = cache._decode_files
        def terminating(*arguments):  # in a decoding worker: its parent gets SIGTERM
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(0.5)
            return real(*arguments)
        cache._decode_files = terminating
    """))
    folder = tmp_path / "cache"
    returncode, output = run_to_file([sys.executable, "-c", terminated, str(image_root)], folder, tmp_path)
    assert returncode == -signal.SIGTERM, output
    assert "Traceback" not in output
    assert [path.name for path in folder.iterdir() if not path.name.endswith(".lock")] == []


def test_a_half_built_cache_a_killed_process_left_is_deleted_by_the_next_build(compose_config, image_root,
                                                                                 cache_dir):
    from cnnbench.runtime.host import HOST

    folder_data(compose_config, image_root)
    (folder,) = caches(cache_dir)
    shutil.rmtree(folder)
    left = cache_dir / f".{folder.name}.{HOST}.{2**22 + 12345}.0123abcd.tmp"  # no such process
    left.mkdir()
    (left / "pixels.u8").write_bytes(b"\0" * 1000)
    folder_data(compose_config, image_root)
    left_now = sorted(path.name for path in cache_dir.iterdir() if not path.name.endswith(".lock"))
    assert left_now == [folder.name]


def test_cache_false_decodes_in_memory_and_writes_nothing(compose_config, image_root, cache_dir):
    data = folder_data(compose_config, image_root, "data.cache=false")
    assert len(data.train.files) == 24 and not cache_dir.exists()


def test_unreadable_images_are_named_or_skipped_from_the_cache(compose_config, image_root, cache_dir):
    bad = image_root / "cat" / "broken.png"
    bad.write_bytes((image_root / "cat" / "0.png").read_bytes()[:100])
    with pytest.raises(CnnbenchError, match=r"broken.png: not a readable image .*data.bad_images=skip"):
        folder_data(compose_config, image_root)
    # the cache was written (the unreadable file left out): skip reads it, error still refuses
    data = folder_data(compose_config, image_root, "data.bad_images=skip", "data.val_fraction=0.5")
    assert str(bad) not in data.train.files + data.val.files
    assert (data.train.skipped | data.val.skipped) == {str(bad)}
    with pytest.raises(CnnbenchError, match="broken.png: not a readable image"):
        folder_data(compose_config, image_root)


def test_two_processes_starting_at_once_decode_once(image_root, tmp_path):
    for index in range(10, 200):  # enough files that decoding takes a moment
        for name in ("cat", "dog", "fox"):
            (image_root / name / f"{index}.png").write_bytes((image_root / name / "0.png").read_bytes())
    script = textwrap.dedent(f"""
        import hashlib, logging, sys, torch
        from omegaconf import OmegaConf
        from cnnbench.data import build_data
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
        cfg = OmegaConf.create({{"name": "imagefolder", "root": "{image_root}", "loader": "memory",
            "cache": True, "cache_dir": None, "memory_budget_gb": None, "train_limit": None,
            "image_size": 16, "grayscale": False, "val_fraction": 0.2, "bad_images": "error",
            "mean": [0.5] * 3, "std": [0.5] * 3, "augment": {{"crop_padding": 0, "hflip": False}}}})
        data = build_data(cfg, batch_size=600, seed=0, device=torch.device("cpu"))
        print("pixels", hashlib.sha256(next(iter(data.val))[0].numpy().tobytes()).hexdigest())
    """)
    environment = {**os.environ, "CNNBENCH_CACHE": str(tmp_path / "shared-cache")}
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=environment) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    decoded = sum(out.count("decoding 600 images once") for out, _ in outputs)
    assert decoded == 1, outputs
    digests = {line for out, _ in outputs for line in out.splitlines() if line.startswith("pixels")}
    assert len(digests) == 1 and len(caches(tmp_path / "shared-cache")) == 1


def test_eval_of_an_image_folder_run_reads_the_cache(compose_config, image_root, cache_dir, tmp_path,
                                                    monkeypatch):
    cfg = compose_config("data=imagefolder", f"data.root={image_root}", "data.image_size=16", "epochs=1",
                         "batch_size=8", "device=cpu", "model=small_cnn")
    metrics = train(cfg, tmp_path / "run")
    monkeypatch.setattr(cache, "decode", lambda *a, **k: pytest.fail("decoded again"))
    result = evaluate_checkpoint(tmp_path / "run" / "best.pt", split="val")
    assert result["accuracy"] == metrics["best_val_acc"] and result["images"] == 4  # 15% of 30
    test = evaluate_checkpoint(tmp_path / "run" / "best.pt")
    assert test["accuracy"] == metrics["test_acc"] and test["images"] == 4


# ---------------------------------------------------------------- augmentation on the device

def test_random_resized_crops_are_drawn_per_image_and_stay_inside_it():
    generator = torch.Generator().manual_seed(0)
    boxes = resized_crop_boxes(4000, 40, 30, (0.08, 1.0), (3 / 4, 4 / 3), generator)
    top, left, height, width = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 40).all() and (left + width <= 30).all()
    area = height * width / (40 * 30)
    assert area.min() >= 0.06 and area.max() <= 1.0 and len(set(map(tuple, boxes.tolist()))) > 3000
    image = torch.arange(40 * 30, dtype=torch.float32).view(1, 1, 40, 30).repeat(2, 1, 1, 1).to(torch.uint8)
    draws = [resized_crop(image, resized_crop_boxes(2, 40, 30, (0.08, 1.0), (0.75, 1.33), generator), None,
                          (16, 16)) for _ in range(50)]
    # two copies of one image get different crops, draw after draw
    assert sum(not torch.equal(out[0], out[1]) for out in draws) == 50


def test_a_whole_image_crop_is_the_image_and_a_flip_its_exact_mirror():
    image = torch.randint(0, 256, (3, 3, 12, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = torch.tensor([[0.0, 0.0, 12.0, 20.0]] * 3)
    flip = torch.tensor([[False], [True], [False]])
    out = resized_crop(image, whole, flip, (12, 20))
    unflipped = resized_crop(image, whole, None, (12, 20))
    torch.testing.assert_close(unflipped, image.float(), atol=1e-3, rtol=0)  # resampled at the pixels
    assert torch.equal(out[0], unflipped[0]) and torch.equal(out[2], unflipped[2])
    assert torch.equal(out[1], unflipped[1].flip(-1))  # an exact mirror image


def test_colour_jitter_scales_each_image_by_its_own_factors():
    augment = Augment(color_jitter=0.4)
    generator = torch.Generator().manual_seed(0)
    draws = augment.draw(500, 8, 8, generator)
    factors = draws["jitter"]
    assert factors.min() >= 0.6 and factors.max() <= 1.4 and factors.std(0).min() > 0.15
    grey = torch.full((500, 3, 8, 8), 100, dtype=torch.uint8)  # no contrast, no colour: brightness only
    out = augment.apply(grey, draws, (8, 8))
    torch.testing.assert_close(out[:, 0, 0, 0], (100 * factors[:, 0]).clamp(0, 255))


def test_device_augmentation_is_fixed_by_seed_and_epoch_and_exact_after_a_mid_epoch_resume():
    images = torch.randint(0, 256, (96, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(96) % 10
    augment = Augment(hflip=True, resized_crop_scale=(0.3, 1.0), color_jitter=0.3)

    def epoch(seed: int, number: int, start: int = 0) -> list[torch.Tensor]:
        loader = MemoryLoader(images, labels, 16, mean=[0.5] * 3, std=[0.25] * 3, shuffle=True, seed=seed,
                              augment=augment, size=(16, 16))
        loader.set_epoch(number, start)
        return [batch for batch, _ in loader]

    full = epoch(0, 3)
    assert all(torch.equal(a, b) for a, b in zip(full, epoch(0, 3), strict=True))
    assert not torch.equal(full[0], epoch(0, 4)[0]) and not torch.equal(full[0], epoch(1, 3)[0])
    resumed = epoch(0, 3, start=4)  # a run resumed after 4 of the 6 steps gets the same last 2
    assert len(resumed) == 2 and all(torch.equal(a, b) for a, b in zip(resumed, full[4:], strict=True))


def test_color_jitter_runs_on_the_in_memory_path_per_image(compose_config, cifar_root):
    cfg = compose_config("data=cifar10", f"data.root={cifar_root}", "data.download=false", "data.val_split=0.1",
                         "data.augment.color_jitter=0.5", "data.augment.crop_padding=0",
                         "data.augment.hflip=false")
    data = build_data(cfg.data, batch_size=50, seed=0, device=CPU)
    assert isinstance(data.train, MemoryLoader)
    images, _ = next(iter(data.train))
    plain = build_data(compose_config("data=cifar10", f"data.root={cifar_root}", "data.download=false", "data.val_split=0.1",
                                      "data.augment.crop_padding=0", "data.augment.hflip=false").data,
                       batch_size=50, seed=0, device=CPU)
    reference, _ = next(iter(plain.train))  # the same images, shuffled alike, not jittered
    ratios = (images.mean((1, 2, 3)) - reference.mean((1, 2, 3))).abs()
    assert (ratios > 1e-3).float().mean() > 0.9 and ratios.std() > 0.01  # each image changed its own way


def test_a_crop_with_padding_and_a_random_resized_crop_are_refused_together(compose_config, image_root):
    with pytest.raises(CnnbenchError, match="two ways to crop"):
        folder_data(compose_config, image_root, "data.augment.crop_padding=2",
                    "data.augment.resized_crop_scale=[0.5,1.0]")


def test_random_resized_crops_train_from_a_cache_with_margin(compose_config, image_root, cache_dir):
    data = folder_data(compose_config, image_root, "data.augment.resized_crop_scale=[0.3,1.0]")
    shapes = sorted(json.loads((folder / "index.json").read_text())["shape"][-1] for folder in caches(cache_dir))
    assert shapes == [16, 20]  # validation at the training size, training 1.25x for the crops
    images, _ = next(iter(data.train))
    assert images.shape[-2:] == (16, 16) and next(iter(data.val))[0].shape[-2:] == (16, 16)


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().tobytes()).hexdigest()


def test_a_clean_tree_leaves_nothing_out_and_says_nothing(compose_config, image_root, cache_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        folder_data(compose_config, image_root)
    assert "left out" not in caplog.text  # it said "left out " with nothing after it, every run


@pytest.mark.slow
def test_an_image_folder_run_killed_mid_epoch_resumes_exactly(image_root, tmp_path, cache_dir):
    from test_configs import run_cli
    from test_faults import assert_same_run, inject

    for index in range(10, 40):  # 120 images: 96 to train, 4 steps of 24 an epoch
        for name in ("cat", "dog", "fox"):
            source = image_root / name / f"{index % 10}.png"
            Image.open(source).rotate(index * 7).save(image_root / name / f"{index}.png")
    run = ["data=imagefolder", f"data.root={image_root}", "data.image_size=16", "model=mlp",
           "model.dropout=0.2", "data.augment.resized_crop_scale=[0.4,1.0]", "data.augment.color_jitter=0.3",
           "batch_size=24", "epochs=3", "device=cpu", "checkpoint.every_n_steps=2"]
    straight = run_cli(*run, "hydra.run.dir=straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    # 1 sample batch for TensorBoard + 4 of epoch 1 + 3 of epoch 2: killed in epoch 2, after step 2's save
    killed = inject("kill", "train-batch:8", *run, "hydra.run.dir=run", cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr
    resumed = run_cli(f"resume={tmp_path / 'run'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "run", tmp_path / "straight")
