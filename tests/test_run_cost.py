"""What a run costs around its epochs (issue #12): the runs of one process share what they can
without changing any result, and freed memory is kept for the next step."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import write_idx_dataset
from test_configs import run_cli

from cnnbench.data import build_data
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train

# measures of the machine, not of the run
TIMING = ("images_per_sec", "epoch_time_s", "warmup_s", "page_faults")


def comparable(metrics: dict) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING} for record in metrics["history"]]


@pytest.mark.slow
def test_runs_in_one_process_share_the_dataset_and_repeat_a_fresh_process_exactly(compose_config, tmp_path):
    root = write_idx_dataset(tmp_path / "data" / "MNIST" / "raw").parents[1]
    overrides = ["data=mnist", f"data.root={root}", "data.download=false", "data.val_split=0.1", "epochs=2", "batch_size=32",
                 "device=cpu", "model=mlp", "model.dropout=0.2"]
    first = train(compose_config(*overrides), tmp_path / "first")
    second = train(compose_config(*overrides), tmp_path / "second")  # the dataset is read once
    fresh = run_cli(*overrides, "hydra.run.dir=fresh", cwd=tmp_path)  # a new process reads it again
    assert fresh.returncode == 0, fresh.stderr
    reference = json.loads((tmp_path / "fresh" / "metrics.json").read_text())
    assert comparable(first) == comparable(second) == comparable(reference)
    weights = [load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("first", "second", "fresh")]
    assert all(torch.equal(weights[0][key], other[key]) for other in weights[1:] for key in weights[0])


def test_a_changed_dataset_file_is_read_again(compose_config, tmp_path):
    raw = write_idx_dataset(tmp_path / "data" / "MNIST" / "raw", train=100, test=20)
    cfg = compose_config("data=mnist", f"data.root={tmp_path / 'data'}", "data.download=false", "data.val_split=0")
    before = build_data(cfg.data, batch_size=10, seed=0, device=torch.device("cpu"))
    write_idx_dataset(raw, train=60, test=20)  # the files change (size and time)
    after = build_data(cfg.data, batch_size=10, seed=0, device=torch.device("cpu"))
    assert len(before.train.labels) == 100 and len(after.train.labels) == 60


def test_freed_memory_is_kept_for_the_next_step_unless_turned_off(tmp_path):
    # A step's big buffers (here 64 MB, above the 32 MB up to which glibc adapts its threshold)
    # are freed and allocated again; malloc that keeps them faults none of their pages in again.
    script = textwrap.dedent("""
        import resource, sys, torch
        from cnnbench.runtime.allocator import keep_freed_memory
        applied = keep_freed_memory() if sys.argv[1] == "keep" else False
        torch.set_num_threads(1)  # the main thread's heap alone: the same allocations every run
        torch.ones(2**24)  # a first allocation, faulted in either way
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(40):
            torch.ones(2**24)  # 64 MB: allocated, written, freed
        print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    faults = {}
    for mode in ("keep", "system"):
        result = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        applied, count = result.stdout.split()
        assert applied == str(mode == "keep")
        faults[mode] = int(count)
    pages = 2**24 * 4 // 4096
    assert faults["system"] > 40 * pages * 0.9  # every page, every time
    # a few times more at most, while the heap settles around the small allocations between them
    assert faults["keep"] < faults["system"] / 4


def test_a_dataset_is_decompressed_once_into_the_cache_and_loaded_from_it(compose_config, tmp_path, monkeypatch):
    from cnnbench.data import datasets

    write_idx_dataset(tmp_path / "data" / "MNIST" / "raw", train=100, test=20)
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))
    cfg = compose_config("data=mnist", f"data.root={tmp_path / 'data'}", "data.download=false", "data.val_split=0.1")
    first = build_data(cfg.data, batch_size=10, seed=0, device=torch.device("cpu"))
    (folder,) = [path for path in (tmp_path / "cache").iterdir() if path.is_dir()]
    assert sorted(path.name for path in folder.iterdir()) == [
        "index.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy"]
    monkeypatch.setattr(datasets, "_READ", datasets.OrderedDict())  # as a new process starts
    monkeypatch.setattr(datasets, "read_idx", lambda path: pytest.fail("decompressed again"))
    second = build_data(cfg.data, batch_size=10, seed=0, device=torch.device("cpu"))
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.val.labels, second.val.labels)
    off = compose_config("data=mnist", f"data.root={tmp_path / 'data'}", "data.download=false", "data.val_split=0.1", "data.cache=false")
    monkeypatch.setattr(datasets, "_READ", datasets.OrderedDict())
    with pytest.raises(pytest.fail.Exception, match="decompressed again"):  # data.cache=false: read again
        build_data(off.data, batch_size=10, seed=0, device=torch.device("cpu"))
