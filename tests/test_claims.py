"""Claims on run folders (issue #15), between real processes: one process at a time trains a run
folder; a second one is turned away naming the holder; a killed holder's claim is taken over; a
claim from another host counts while its heartbeat is young; a live run refuses a resume;
cnnbench-report says which runs are running (and where), stale or not started; the leaderboard is
replaced whole."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import assert_one_line_error
from test_configs import run_cli
from test_faults import inject

from cnnbench.cli import report
from cnnbench.engine.train import train
from cnnbench.sweep.claims import CLAIM_FILE, HOST, STALE_AFTER_S, Claimed, claim, read_holder

# A process that claims the folder given, says what it found, and holds the claim until its stdin
# has a line (or closes): a worker in the middle of a run, as far as other processes can tell.
CLAIMER = """
import sys
from pathlib import Path
from cnnbench.sweep.claims import Claimed, claim
try:
    with claim(Path(sys.argv[1])) as stale:
        print("claimed", "over " + stale.where if stale else "free", flush=True)
        sys.stdin.readline()
except Claimed as busy:
    print("refused", busy.where, flush=True)
"""
TINY = ["data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32", "epochs=1", "device=cpu"]


def claim_once(folder: Path) -> str:
    """What a process that tries to claim `folder` (and lets go at once) says."""
    result = subprocess.run([sys.executable, "-c", CLAIMER, str(folder)], input="", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class Holder:
    """A process holding the claim on a folder until stopped: `with Holder(folder) as holder`."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", CLAIMER, str(folder)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.said = self.process.stdout.readline().strip()  # once it holds the claim
        self.where = f"{HOST}:{self.process.pid}"

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: nothing runs in it any more, the kernel drops its lock
        self.process.wait()

    def __enter__(self) -> "Holder":
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.communicate("\n", timeout=60)  # let go, as at the end of a run


def test_one_process_holds_a_claim_the_next_is_turned_away_and_a_killed_ones_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    with Holder(folder) as holder:
        assert holder.said == "claimed free"
        assert read_holder(folder).where == holder.where
        assert claim_once(folder) == f"refused {holder.where}"
    assert not (folder / CLAIM_FILE).exists()  # let go: the file is gone
    assert claim_once(folder) == "claimed free"

    killed = Holder(folder)
    killed.kill()
    assert read_holder(folder).where == killed.where  # left behind by kill -9: stale
    assert not read_holder(folder).is_live()
    assert claim_once(folder) == f"claimed over {killed.where}"
    assert claim_once(folder) == "claimed free"


def test_a_claim_from_another_host_counts_while_its_heartbeat_is_young(tmp_path):
    # Where locks do not cross machines (some NFS set-ups), this host can lock a file another
    # host holds: the claim's heartbeat (the file's mtime, touched by its holder) decides then.
    (tmp_path / CLAIM_FILE).write_text(json.dumps({"host": "node7", "pid": 4242, "started": time.time()}))
    with pytest.raises(Claimed, match="is running in node7:4242"):
        with claim(tmp_path):
            pass
    assert read_holder(tmp_path).is_live()
    silent = time.time() - STALE_AFTER_S - 60
    os.utime(tmp_path / CLAIM_FILE, (silent, silent))  # node7 died: no heartbeat since
    assert not read_holder(tmp_path).is_live()
    with claim(tmp_path) as stale:
        assert stale.where == "node7:4242" and "which is gone" in stale.gone()
        assert read_holder(tmp_path).where == f"{HOST}:{os.getpid()}"
    assert not (tmp_path / CLAIM_FILE).exists()


def test_a_run_live_in_another_process_refuses_a_resume_in_one_line(tmp_path):
    folder = tmp_path / "run"
    with Holder(folder) as holder:
        before = sorted(folder.rglob("*"))
        result = run_cli(f"resume={folder}", cwd=tmp_path)
        assert_one_line_error(result, f"{folder} is running in {holder.where}", "wait for it to finish")
        assert result.returncode == 2
        assert sorted(folder.rglob("*")) == before  # refused before Hydra wrote anything there


@pytest.mark.slow
def test_a_single_run_holds_its_claim_while_it_trains_and_a_resume_takes_a_dead_ones_over(tmp_path):
    killed = inject("kill", "train-batch:4", *TINY, "epochs=2", "hydra.run.dir=run", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    left = read_holder(tmp_path / "run")  # the claim of the run killed in its epoch 2, left behind
    assert left is not None and left.host == HOST and not left.is_live()
    resumed = run_cli(f"resume={tmp_path / 'run'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over {tmp_path / 'run'}: claimed by {left.where}, which is gone" in resumed.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "finished"
    assert not (tmp_path / "run" / CLAIM_FILE).exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, compose_config) -> Path:
    folder = tmp_path_factory.mktemp("finished") / "run"
    train(compose_config(*TINY, "model=mlp", "model.hidden=[16]"), folder)
    return folder


def copy_run(source: Path, target: Path, status: str, seed: int = 0) -> Path:
    """A copy of a run's folder whose metrics.json says `status` (and `seed`)."""
    target.mkdir(parents=True)
    for name in ("config.json", "last.pt"):
        (target / name).write_bytes((source / name).read_bytes())
    metrics = json.loads((source / "metrics.json").read_text())
    (target / "metrics.json").write_text(json.dumps({**metrics, "status": status, "seed": seed}))
    return target


def test_report_says_which_runs_are_finished_running_where_stale_or_not_started(finished_run, tmp_path,
                                                                                capsys):
    copy_run(finished_run, tmp_path / "done", "finished")
    running = copy_run(finished_run, tmp_path / "busy", "running")
    (tmp_path / "waiting" / ".hydra").mkdir(parents=True)  # Hydra made its folder, no more
    with Holder(running) as holder:
        report.main([str(tmp_path)])
        out = capsys.readouterr().out
        assert f"running: busy in {holder.where} (epoch 1 of 1 done)" in out
        assert "not started: waiting" in out
        assert "3 runs: 1 finished, 1 running, 0 stale, 0 failed, 1 not started" in out
        holder.kill()
    report.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert f"stale: busy (epoch 1 of 1 done): claimed by {holder.where}, which is gone" in out
    assert "3 runs: 1 finished, 0 running, 1 stale, 0 failed, 1 not started" in out
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "Runs not finished:" in markdown and "- stale: busy" in markdown


def test_the_leaderboard_is_replaced_whole_never_rewritten_in_place(finished_run, tmp_path, capsys):
    copy_run(finished_run, tmp_path / "first", "finished")
    report.main([str(tmp_path)])
    with open(tmp_path / "leaderboard.md") as reader:  # a reader in the middle of the old one
        copy_run(finished_run, tmp_path / "second", "finished", seed=1)
        report.main([str(tmp_path)])
        old = reader.read()
    new = (tmp_path / "leaderboard.md").read_text()
    assert "| mlp | fake |  | 1 |" in old and old.endswith("\n")  # the old file, whole
    assert "| mlp | fake |  | 2 |" in new
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        ".leaderboard.lock", "leaderboard.csv", "leaderboard.md", "leaderboard_cost.png",
        "leaderboard_curves.png"]  # no temporary file left
