"""Faults a hostile user (or a bad day) produces, one test per case of issue 18, part 1: resuming,
interrupts and mid-run errors, two writers, orphaned workers, exit statuses. Each test checks the
message (one line naming what is wrong), the exit status (2 for user errors, 1 for bugs, 128 + N for
signal N) and that nothing was lost (the previous checkpoint intact, ``config.json`` unchanged after
a refused run, a resumed run identical to a straight one). Part 2: ``test_faults_inputs.py``."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _faults import (
    CLI,
    FAST,
    ROOT,
    TRAIN,
    assert_fails,
    corrupt,
    env,
    one_line,
    run,
    same_weights,
    snapshot,
    wait_for,
    weights,
    write_mpii,
)

from cpm_lab.files import LOCK_NAME, output_lock
from cpm_lab.models.cpm import CPM
from cpm_lab.train import TrainConfig, Trainer, read_checkpoint

pytestmark = pytest.mark.usefixtures("restore_threads")  # conftest: commands set torch's thread count


# ================================================================================================
# 1. --resume
# ================================================================================================
def test_1a_refused_resume_of_another_preset_or_part_count_writes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = run(capsys, *TRAIN, "--steps", 2, "--out", run_copy, "--resume", "--preset", "small")
    assert_fails(code, err, 2, "--resume", "preset 'tiny'", "'small'")
    code, _, err = run(capsys, *TRAIN, "--steps", 2, "--out", run_copy, "--resume", "--model", "num_parts=16")
    assert_fails(code, err, 2, "--resume", "14 parts", "16 parts")
    assert snapshot(run_copy) == before  # config.json, checkpoint, history: byte for byte


def test_1b_readme_resume_with_more_steps_extends_the_run(run_copy, capsys):
    code, out, err = run(capsys, *TRAIN, "--out", run_copy, "--resume", "--steps", 4)
    assert code == 0, err
    assert "extending the run from 2 to 4 steps" in out and "schedule is planned again for 4 steps" in out
    ckpt = read_checkpoint(run_copy / "checkpoint.pt")
    assert ckpt["step"] == 4 and [r["step"] for r in ckpt["history"]] == [1, 2, 3, 4]
    config = json.loads((run_copy / "config.json").read_text())
    assert config["train"]["steps"] == 4
    changes = config["history"][-1]["changes"]
    assert config["history"][-1]["event"] == "resume" and changes["steps"] == [2, 4]
    assert set(changes) == {"steps", "checkpoint"}  # the run folder was copied: its new path is recorded too
    assert config["history"][-1]["argv"][-2:] == ["--steps", "4"]
    # the schedule is a pure function of (step, total): steps 3-4 follow the 4-step cosine
    trainer = Trainer(CPM.from_preset("tiny", input_size=32), [0] * 8, TrainConfig.from_dict(config["train"]))
    assert ckpt["history"][2]["lr"] == pytest.approx(trainer.lr_at(3))
    # shorter is refused (its schedule was planned longer), and so is extending a phased strategy
    code, _, err = run(capsys, *TRAIN, "--out", run_copy, "--resume", "--steps", 3)
    assert_fails(code, err, 2, "steps=4 (now 3)", "cannot be shortened")


def test_1b_extending_a_stagewise_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TRAIN, "--strategy", "stagewise", "--out", out]
    assert run(capsys, *args, "--steps", 3)[0] == 0
    before = snapshot(out)
    code, _, err = run(capsys, *args, "--steps", 6, "--resume")
    assert_fails(code, err, 2, "steps=3 (now 6)", "phases whose boundaries would move")
    assert snapshot(out) == before


def test_1c_resume_with_other_data_is_refused(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = run(capsys, "train", "--data", "synthetic:hard", *FAST, "--out", run_copy, "--resume")
    assert_fails(code, err, 2, "data='synthetic:easy' (now 'synthetic:hard')")
    assert snapshot(run_copy) == before


def test_1d_resume_with_other_lr_is_refused_naming_every_setting(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = run(capsys, *TRAIN, "--out", run_copy, "--resume", "--lr", "0.01", "--seed", 3)
    line = assert_fails(code, err, 2, "lr=0.005 (now 0.01)", "seed=0 (now 3)", "config.json")
    assert line.count("(now ") == 2
    assert snapshot(run_copy) == before


# ================================================================================================
# 2. Interrupts and mid-run errors keep the progress
# ================================================================================================
def test_2a_sigint_keeps_the_progress_and_the_resumed_run_matches_a_straight_one(tmp_path, capsys):
    steps = 150
    out = tmp_path / "interrupted"
    args = [*TRAIN, "--steps", str(steps), "--checkpoint-every", "5"]
    proc = subprocess.Popen([*CLI, *args, "--out", str(out)], env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "checkpoint.pt").exists() or proc.poll() is not None, 120, "the first checkpoint")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    line = one_line("\n".join(ln for ln in stderr.splitlines() if not ln.startswith("SIGINT: finishing")))
    step = read_checkpoint(out / "checkpoint.pt")["step"]
    assert 5 <= step < steps
    assert f"SIGINT received: stopped after step {step} of {steps}" in line
    assert f"saved the checkpoint {out / 'checkpoint.pt'} at step {step}" in line
    resume = line.split("continue with: ", 1)[1]
    assert resume.startswith("cpm-lab train ") and resume.endswith(f"--out {out} --resume")
    # the exact command it printed continues the run ...
    code, _, err = run(capsys, *resume.split()[1:])
    assert code == 0, err
    # ... to the same weights as a run never interrupted
    straight = tmp_path / "straight"
    assert run(capsys, *args, "--out", straight)[0] == 0
    assert same_weights(weights(out / "checkpoint.pt"), weights(straight / "checkpoint.pt"))


def test_2a_sigterm_keeps_the_progress_too(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([*CLI, *TRAIN, "--steps", "2000", "--checkpoint-every", "3", "--out", str(out)],
                            env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "checkpoint.pt").exists() or proc.poll() is not None, 120, "the first checkpoint")
        proc.terminate()
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM received: stopped after step" in stderr and "--resume" in stderr
    assert read_checkpoint(out / "checkpoint.pt")["step"] >= 3
    assert not (out / LOCK_NAME).exists()


def test_2a_checkpoints_are_time_based_by_default(tmp_path):
    assert TrainConfig().checkpoint_minutes == 10  # a long run keeps its work without any flag
    seen = []

    class Look(Trainer):
        def save_checkpoint(self, path=None):
            seen.append(self.step)
            return super().save_checkpoint(path)

    data = [dict(image=torch.rand(3, 32, 32), keypoints=torch.rand(14, 3) * 30) for _ in range(8)]
    cfg = TrainConfig(steps=3, batch_size=2, progress=False, checkpoint=str(tmp_path / "ck.pt"),
                      checkpoint_minutes=1e-9)  # "every minute", with every step taking longer than that
    Look(CPM.from_preset("tiny", input_size=32), data, cfg).fit()
    assert seen == [1, 2, 3]



def test_2b_a_corrupt_image_mid_run_keeps_the_progress_and_skip_bad_drops_it(mpii_bad_image, tmp_path, capsys):
    ann, bad = mpii_bad_image
    out = tmp_path / "run"
    args = ["train", "--data", f"mpii:{ann}", *FAST, "--steps", 8, "--out", out]
    code, _, err = run(capsys, *args)
    line = assert_fails(code, err, 2, f"cannot decode image {ann.parent / f'{bad:09d}.jpg'}", f"sample {bad}",
                        "cpm-lab validate", "--skip-bad", f"progress kept: {out / 'checkpoint.pt'} holds step 2 of 8",
                        "continue with: cpm-lab train")
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 2  # steps 1-2 kept, not lost
    resume = line.split("continue with: ", 1)[1].split()[1:]
    with pytest.warns(UserWarning, match=rf"skipped 1 unusable sample\(s\); first: .*{bad:09d}\.jpg"):
        code, stdout, err = run(capsys, *resume, "--skip-bad")
    assert code == 0, err
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 8
    # eval: the same one line without --skip-bad, the sample left out with it
    ck = out / "checkpoint.pt"
    code, _, err = run(capsys, "eval", "--checkpoint", ck, "--data", f"mpii:{ann}")
    assert_fails(code, err, 2, "cannot decode image", f"{bad:09d}.jpg")
    with pytest.warns(UserWarning, match=r"skipped 1 unusable sample\(s\)"):
        code, stdout, err = run(capsys, "eval", "--checkpoint", ck, "--data", f"mpii:{ann}", "--skip-bad")
    assert code == 0, err
    assert "11 images" in stdout


def test_2b_validate_lists_every_bad_sample(tmp_path, capsys):
    def edit(i, rec):
        if i == 3:
            rec["joints"][5] = [float("inf"), 40.0]  # left ankle
        if i == 7:
            rec["scale"] = 100.0  # a 20000 px box around a 90 x 110 photograph
    ann = write_mpii(tmp_path / "mpii", edit=edit)
    corrupt(ann.parent / "000000005.jpg")
    code, out, err = run(capsys, "validate", "--data", f"mpii:{ann}")
    assert code == 2, err
    lines = out.splitlines()
    assert len(lines) == 4 and lines[-1] == f"cpm-lab validate: 3 problem(s) in 12 samples of mpii:{ann}"
    assert f"{ann} record 3 (000000003.jpg): NaN/inf coordinates (inf, 39) for labelled joint 5 (left_ankle)" \
        in lines[0]
    assert f"record 5 (000000005.jpg): cannot decode image {ann.parent / '000000005.jpg'}" in lines[1]
    assert "record 7 (000000007.jpg)" in lines[2] and "absurd person box: side 20000 px" in lines[2]
    clean = write_mpii(tmp_path / "clean")
    code, out, _ = run(capsys, "validate", "--data", f"mpii:{clean}")
    assert code == 0 and out.strip() == f"cpm-lab validate: no problems in 12 samples of mpii:{clean}"


def test_2c_a_directory_as_checkpoint_fails_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint.pt").mkdir(parents=True)
    t0 = time.monotonic()
    code, stdout, err = run(capsys, *TRAIN, "--steps", 500, "--out", out)
    assert_fails(code, err, 2, f"checkpoint path {str(out / 'checkpoint.pt')!r} is a directory")
    assert "training" not in stdout and time.monotonic() - t0 < 30
    assert sorted(os.listdir(out)) == ["checkpoint.pt"]  # nothing written
    code, _, err = run(capsys, *TRAIN, "--out", out, "--resume")
    assert_fails(code, err, 2, "is a directory, not a checkpoint file")


# ================================================================================================
# 3. One writer per output folder
# ================================================================================================
def test_3_a_second_writer_is_refused_with_the_owners_pid(run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    with output_lock(run_copy, command="cpm-lab train (the first run)"):
        code, _, err = run(capsys, *TRAIN, "--steps", 2, "--out", run_copy)
        assert_fails(code, err, 2, f"{run_copy} is in use by another cpm-lab process", f"PID {os.getpid()}",
                     "the first run")
        code, _, err = run(capsys, "ablate", "--quick", "--out", run_copy, "--no-progress")
        assert_fails(code, err, 2, f"PID {os.getpid()}")
    assert snapshot(run_copy) == before
    # a lock left by a process that is gone is taken over, with a warning
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_copy / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with pytest.warns(UserWarning) as caught:
        code, _, err = run(capsys, *TRAIN, "--steps", 2, "--out", run_copy)
    assert code == 0, err
    said = [str(w.message) for w in caught]
    assert any(f"taking over the lock left by PID {dead.pid} on " in m for m in said), said
    assert any("(an earlier run) will be replaced by this new run; --resume continues it" in m for m in said), said
    assert not (run_copy / LOCK_NAME).exists()


# ================================================================================================
# 4. Checkpoints are checked on load
# ================================================================================================
# 7. No process outlives its sweep; exit statuses
# ================================================================================================
def _children(pid: int, marker: str = "") -> list[int]:
    """The PIDs of ``pid``'s child processes whose command line contains ``marker``."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and marker in cmdline:
                kids.append(int(entry))
    return kids


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_7_ablation_workers_exit_when_the_sweep_is_killed(tmp_path):
    out = tmp_path / "ablation"
    proc = subprocess.Popen([*CLI, "ablate", "--quick", "--jobs", "2", "--threads", "1", "--steps", "5000",
                             "--experiments", "strategies", "--strategies", "end_to_end,no_intermediate",
                             "--no-figures", "--no-progress", "--out", str(out)],
                            env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        configs = lambda: len(list((out / "runs").glob("*/config.json"))) == 2  # noqa: E731
        wait_for(lambda: configs() or proc.poll() is not None, 180, "two runs to start")
        workers = _children(proc.pid, "spawn_main")
        assert proc.poll() is None and len(workers) == 2
        proc.kill()  # kill -9: no chance to clean up
        proc.wait()
        wait_for(lambda: not any(_running(w) for w in workers), 60, "the workers to exit")
    finally:
        for w in workers if "workers" in locals() else []:
            if _running(w):
                os.kill(w, signal.SIGKILL)


def test_internal_errors_say_so_and_exit_1(capsys, monkeypatch):
    import cpm_lab.cli.evaluate as evaluate

    def bug(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(evaluate, "_eval_mean_pose", bug)
    code, _, err = run(capsys, "eval", "--mean-pose", "--data", "synthetic:easy")
    assert_fails(code, err, 1, "TypeError", "an internal error", "CPM_LAB_DEBUG=1")


def test_output_piped_into_head_exits_quietly(tmp_path):
    proc = subprocess.Popen([*CLI, "validate", "--data", "synthetic"], env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written, as `| head -0`
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert stderr == ""
