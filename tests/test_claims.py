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
from test_faults import RUN, inject

from cnnbench.cli import report
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train
from cnnbench.sweep.claims import CLAIM_FILE, HOST, STALE_AFTER_S, Claimed, ClaimLost, claim, read_holder

# A process that claims the folder given, says what it found, and holds the claim until its stdin
# has a line (or closes): a worker in the middle of a run, as far as other processes can tell.
CLAIMER = """
import sys
from pathlib import Path
from cnnbench.sweep.claims import Claimed, claim
try:
    with claim(Path(sys.argv[1])) as ours:
        print("claimed", "over " + ours.stale.where if ours.stale else "free", flush=True)
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
    with claim(tmp_path) as ours:
        assert ours.stale.where == "node7:4242" and "which is gone" in ours.stale.gone()
        assert read_holder(tmp_path).where == f"{HOST}:{os.getpid()}"
    assert not (tmp_path / CLAIM_FILE).exists()


# Two hosts where locks do not cross machines (issue #23): a claimer whose host name is argv[2] and
# whose flock locks nothing and turns nobody away. "At once": each waits, before it writes its
# claim into the file, until the other has either come as far or been turned away (a file each in
# argv[3]), so that neither can see the other's claim before deciding.
CLAIMER_ELSEWHERE = """
import os, socket, sys, time, fcntl
from pathlib import Path
folder, host, meeting = sys.argv[1:4]
socket.gethostname = lambda: host  # before cnnbench reads it
fcntl.flock = lambda descriptor, operation: None
def meet():
    Path(meeting, host).touch()
    deadline = time.monotonic() + 10
    while len(os.listdir(meeting)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
def meeting_first(write):
    def written(*arguments):
        meet()
        return write(*arguments)
    return written
os.write, os.pwrite = meeting_first(os.write), meeting_first(os.pwrite)
from cnnbench.sweep.claims import Claimed, claim
try:
    with claim(Path(folder)) as ours:
        print("claimed", "over " + ours.stale.where if ours.stale else "free", flush=True)
        sys.stdin.readline()
except Claimed as busy:
    Path(meeting, host).touch()
    print("refused", busy.where, flush=True)
"""


@pytest.mark.parametrize("before", ["free", "stale"])
def test_two_hosts_claiming_at_once_where_locks_do_not_cross_hosts_one_wins(tmp_path, before):
    folder, meeting = tmp_path / "run", tmp_path / "meeting"
    folder.mkdir()
    meeting.mkdir()
    if before == "stale":  # a third host's claim, silent for longer than STALE_AFTER_S
        (folder / CLAIM_FILE).write_text(json.dumps({"host": "node7", "pid": 4242, "started": 0.0}))
        os.utime(folder / CLAIM_FILE, (0, 0))
    copies = [subprocess.Popen([sys.executable, "-c", CLAIMER_ELSEWHERE, str(folder), host, str(meeting)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
              for host in ("nodeA", "nodeB")]
    said = [copy.stdout.readline().strip() for copy in copies]
    for copy in copies:
        copy.communicate("\n", timeout=60)
    won = [line for line in said if line.startswith("claimed")]
    assert len(won) == 1, said  # the release before: both claimed it, and both trained
    assert won[0] == ("claimed free" if before == "free" else "claimed over node7:4242")
    assert [line for line in said if line.startswith("refused")], said
    assert not (folder / CLAIM_FILE).exists()  # the winner let go; no file of the loser's is left


def take_over(folder: Path) -> dict:
    """Another host's copy of the sweep takes `folder` over, as it does: a new claim file of its own."""
    theirs = {"host": "node7", "pid": 4242, "started": time.time(), "token": "theirs"}
    (folder / "new-claim").write_text(json.dumps(theirs))
    os.replace(folder / "new-claim", folder / CLAIM_FILE)
    return theirs


def test_a_claim_taken_over_is_noticed_before_the_next_write_and_never_deleted_by_its_old_owner(tmp_path):
    with claim(tmp_path / "run") as ours:
        ours.check()  # ours: nothing is raised
        take_over(tmp_path / "run")
        with pytest.raises(ClaimLost, match="was taken over by node7:4242 while this process trained it"):
            ours.check()
    # the release before deleted the claim on exit, whoever's it was by then
    assert read_holder(tmp_path / "run").where == "node7:4242"


def test_a_sweep_job_whose_folder_is_taken_over_says_so_in_one_line_and_does_not_fail(
        tmp_path, compose_config, capsys):
    from cnnbench.sweep.jobs import run_job
    from cnnbench.sweep.journal import read_journal

    def taken_over_while_training(cfg, run_dir, resume, check_claim):
        take_over(run_dir)  # another copy, on another host, took it over meanwhile
        check_claim()  # what the run does before it writes its next checkpoint
        raise AssertionError("went on writing")

    journal = tmp_path / ".jobs" / "this-sweep"
    folder = tmp_path / "run"
    assert run_job(compose_config("data=fake"), folder, taken_over_while_training, journal / "0.json") is None
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cnnbench: error: {folder} was taken over by node7:4242")
    assert not (folder / "error.txt").exists()  # not failed: the run goes on in the other process
    assert [(job.outcome, job.holder) for job in read_journal(journal)] == [("elsewhere", "node7:4242")]
    assert read_holder(folder).where == "node7:4242"


def test_a_run_whose_claim_is_taken_over_stops_before_its_next_write_in_one_line(tmp_path):
    # epoch 2's 5th step: the other host takes the folder over; the run finds out at the end of the
    # epoch, before it writes best.pt, last.pt or metrics.json, and stops
    taken = inject("take-claim", "train-batch:22", *RUN, "hydra.run.dir=run", cwd=tmp_path)
    assert_one_line_error(taken, "run was taken over by elsewhere:4242 while this process trained it",
                          "stopped without writing there again")
    assert taken.returncode == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # epoch 1's, as it was
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_done"] == 1
    assert read_holder(tmp_path / "run").where == "elsewhere:4242"


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
