"""What the CLI prints when its output is not a terminal (`> log 2>&1`, nohup, CI): long paths and
tables are never wrapped at 80 columns or cut with "…"; and what `--help` shows for on/off flags.

Commands run as real subprocesses with stdout and stderr captured (pipes, not a terminal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


LOLNERF = [sys.executable, "-m", "lolnerf_cli"]
LONG = "a_folder_name_long_enough_that_every_path_below_it_runs_past_eighty_columns_" * 2


def _run(args: list[str], **env) -> subprocess.CompletedProcess:
    full = dict(os.environ, COLUMNS="80")         # as some CI systems (and pytest) set it: still no wrapping
    full.update(env)
    return subprocess.run(LOLNERF + args, capture_output=True, text=True, env=full, timeout=600)


@pytest.mark.slow
def test_eval_in_a_log_file_prints_whole_paths_and_whole_tables(tiny, tmp_path):
    out = tmp_path / LONG / "metrics.json"
    r = _run(["eval", str(tiny.data), "--model", str(tiny.run), "--out", str(out), "--subset", "2",
              "--invert-steps", "2", "--no-figure", "--device", "cpu"],
             LOLNERF_LPIPS_WEIGHTS=str(tmp_path / "none.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert f"metrics: {out}" in lines                                     # the long path on one line
    assert "…" not in r.stdout                                            # no cell or title cut short
    rows = {ln.split("│")[1].strip(): ln for ln in lines if ln.startswith("│")}
    cell = r"\d+\.\d\d ± \d+\.\d\d"
    # every section's row carries its whole "mean ± std" cells, in one line, wider than 80 columns
    for section in ("train", "held-out", "novel (mask)"):
        assert re.search(rf"│ {re.escape(section)}\s+│\s+\d+ │ {cell} │ \d\.\d{{3}} ± \d\.\d{{3}} │", rows[section]), \
            rows[section]
    assert max(len(ln) for ln in lines if ln.startswith("┃")) > 80


@pytest.mark.slow
def test_progress_and_messages_in_a_log_file_are_not_wrapped(tmp_path):
    out = tmp_path / LONG / "data"
    r = _run(["synth", str(out), "--n", "3", "--resolution", "16"], LOLNERF_PROGRESS_INTERVAL="0")
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert f"{out}/images/" in text and any(str(out) in ln and len(ln) > 150 for ln in text.splitlines())
    assert "synth: training images: started" in text


def test_help_shows_no_value_type_after_flags():
    r = _run(["render", "--help"])
    assert r.returncode == 0, r.stderr
    assert "--orbit" in r.stdout and "--depth" in r.stdout and "<path>" in r.stdout   # types of real values stay
    assert "<bool>" not in r.stdout
    assert "training resolution" in " ".join(r.stdout.replace("│", " ").split())


@pytest.mark.slow
def test_debug_is_accepted_after_the_command(tmp_path):
    missing = tmp_path / "nope"
    for args in (["--debug", "landmarks", str(missing)], ["landmarks", str(missing), "--debug"]):
        r = _run(args)
        assert r.returncode == 2, r.stderr
        assert "Traceback" in r.stderr and "dataset folder not found" in r.stderr, args
    r = _run(["landmarks", str(missing)])
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("error:") == 1


def test_time_remaining_after_a_resume_counts_only_this_sessions_rate(monkeypatch):
    """A resumed run's earlier steps show as done but do not make the estimate of the time left too short
    (it read 148 s for 4,700 steps left at 8 steps a second)."""
    import io

    from rich.console import Console

    from lolnerf_cli import app

    clock = [1000.0]
    monkeypatch.setattr(app.time, "time", lambda: clock[0])
    monkeypatch.setenv("LOLNERF_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    with app.RichProgressReporter(Console(file=out, force_terminal=False, width=200)).task("training", total=100) as task:
        task.resume_from(90)
        clock[0] += 5.0
        task.advance(5)
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("training: 95/100")]
    assert lines and "eta 5 s" in lines[0], out.getvalue()
