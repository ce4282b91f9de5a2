"""`hwnas search`: studies in real Optuna storage (SQLite, and PostgreSQL shared by worker
processes), resumed after SIGKILL with no trial lost or stored twice; results; bad input."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.search import anb
from hwnas.search.study import SearchSpec, open_study, parse_bound

sys.path.insert(0, str(Path(__file__).parent))
from postgres_server import postgres_bin, postgres_server  # noqa: E402

# Table-only objectives: a trial costs a storage round trip, so a kill lands mid-study.
OBJECTIVES = "accuracy,drift_1d"


def _search_cmd(out: Path, budget: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hwnas.cli", "search", "--space", "nb201", "-t", "cortex-m7", "--objectives",
            OBJECTIVES, "--budget", str(budget), "--strategy", "evolution", "--no-progress", "-o", str(out), *extra]


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return int(con.execute("select count(*) from trials where state in ('COMPLETE', 'FAIL')").fetchone()[0])
    except sqlite3.OperationalError:  # tables not made yet
        return 0


def _kill_after(cmd: list[str], done: Callable[[], bool], timeout: float = 120) -> int:
    """Start cmd, SIGKILL it once done() is true; returns the exit code (negative when killed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if done():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    return proc.returncode


def _check_stored(study_trials: list, budget: int, extra: int = 0) -> None:
    """Every stored trial once, with the values the table gives its candidate."""
    table = anb.load()
    assert budget <= len(study_trials) <= budget + extra
    assert len({t.uid for t in study_trials}) == len(study_trials)
    assert len({t.number for t in study_trials}) == len(study_trials)
    for t in study_trials:
        assert t.values == (table.query(t.key, "baseline_accuracy"), table.query(t.key, "baseline_drift_86400"))


def test_sigkilled_study_resumes_with_no_trial_lost_or_doubled(tmp_path: Path) -> None:
    out, budget = tmp_path / "study", 120
    db = out / "study.db"
    marks = []
    for _ in range(3):  # killed three times, each after it stored a few more trials
        start = _count(db)
        code = _kill_after(_search_cmd(out, budget), lambda s=start: _count(db) >= s + 8)
        marks.append((start, _count(db), code))
    assert all(code == -signal.SIGKILL for *_, code in marks), marks
    assert all(after > before for before, after, _ in marks), marks
    assert marks[-1][1] < budget, "the study finished before the last kill: make it longer"
    done = subprocess.run(_search_cmd(out, budget), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming study" in done.stderr
    spec = SearchSpec("nb201", "cortex-m7", ("accuracy", "drift_1d"), (), "evolution", 0)
    study = open_study(f"sqlite:///{db}", "nb201-cortex-m7-accuracy-drift_1d-evolution-s0", spec)
    _check_stored(study.stored(), budget)
    assert (out / "front.json").exists() and (out / "pareto.png").exists() and (out / "hypervolume.png").exists()


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (scripts/setup.sh installs it)")
def test_three_workers_share_a_postgresql_study_one_killed(tmp_path: Path) -> None:
    budget = 150
    with postgres_server() as url:
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        cmds = [_search_cmd(tmp_path / f"w{k}", budget, "--storage", plain, "--study", "shared", "--worker", str(k))
                for k in range(3)]
        procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]
        spec = SearchSpec("nb201", "cortex-m7", ("accuracy", "drift_1d"), (), "evolution", 0)
        study = None
        deadline = time.monotonic() + 120
        killed = False
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if study is None:
                try:
                    study = open_study(url, "shared", None)
                except Exception:  # not created yet
                    time.sleep(0.2)
                    continue
            mine = [t for t in study.optuna_study.get_trials(deepcopy=False)
                    if t.user_attrs.get("hwnas", {}).get("worker") == 1]
            if not killed and len(mine) >= 5:
                procs[1].send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        results = [p.wait(timeout=120) for p in procs]
        assert killed, "worker 1 stored too few trials to be killed mid-study"
        assert results[1] == -signal.SIGKILL
        assert results[0] == 0 and results[2] == 0, [p.stderr.read() for p in procs]
        study = open_study(url, "shared", spec)
        trials = study.stored()
        by_worker = {w: sum(1 for t in study.optuna_study.get_trials(deepcopy=False)
                            if t.user_attrs.get("hwnas", {}).get("worker") == w) for w in range(3)}
        assert all(n > 0 for n in by_worker.values()), by_worker
        _check_stored(trials, budget, extra=2)


def test_show_prints_the_front_of_an_existing_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["search", "--objectives", "accuracy,params", "--budget", "30", "--strategy", "random", "--no-progress",
                 "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["search", "show", str(out)]) == 0
    text = capsys.readouterr()
    assert "Pareto front" in text.out and "30 trials" in text.err and "hypervolume" in text.err


@pytest.mark.parametrize("argv, message", [
    (["--target", "nosuch"], "nosuch"),
    (["--strategy", "annealing"], "unknown strategy 'annealing'"),
    (["--objectives", "accuracy,speed"], "unknown objective or metric 'speed'"),
    (["-c", "latency<5ms"], "malformed constraint 'latency<5ms'"),
    (["-c", "latency<=5parsecs"], "unknown unit 'parsecs'"),
    (["--space", "mbv2", "--objectives", "accuracy,latency"], "AnalogNAS-Bench has accuracies of float"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open storage"),
    (["--bench", "README.md"], "README.md"),
    (["--objectives", "accuracy,params", "-c", "accuracy>=99.9"], "no candidate of 20 met every constraint"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                          message: str) -> None:
    base = ["search", "--budget", "20", "--no-progress", "-o", str(tmp_path / "o")]
    if "--objectives" not in argv:
        base += ["--objectives", "accuracy,params"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1], err
    assert err[-1].startswith("hwnas: error:")
    if "met every constraint" not in message:  # refused before searching: nothing left behind
        assert not (tmp_path / "o").exists()


def test_closest_candidate_named_when_no_candidate_meets_the_constraints(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--objectives", "accuracy,params", "-c", "params<=1000", "--budget", "15",
                 "--strategy", "random", "--no-progress", "-o", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "closest: trial" in last and "params<=1000 by" in last


def test_constraint_units() -> None:
    assert parse_bound("latency<=5ms") == "latency<=0.005"
    assert parse_bound("SRAM <= 320KiB") == "SRAM<=327680"
    assert parse_bound("accuracy>=90%") == "accuracy>=90"
    assert parse_bound("latency<=500ns") == "latency<=5e-07"  # an accelerator's layer times
    assert parse_bound("energy<=20pJ") == "energy<=2e-11" and parse_bound("DRAM<=2GiB") == "DRAM<=2147483648"


def test_a_different_search_under_the_same_study_name_is_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = ["search", "--objectives", "accuracy,params", "--budget", "5", "--no-progress", "-o", str(tmp_path / "o"),
            "--study", "x"]
    assert main(args) == 0
    assert main([*args, "--seed", "3"]) == 2
    assert "exists with another search" in capsys.readouterr().err


def test_resumed_run_keeps_every_stored_trial_in_process(tmp_path: Path) -> None:
    spec = SearchSpec("nb201", "cortex-m7", ("accuracy", "params"), ("params<=400000",), "default", 1)
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = open_study(url, "s", spec)
    assert first.run(25) == 25
    again = open_study(url, "s", spec)
    assert again.run(40) == 15
    trials = again.stored()
    assert len(trials) == 40 and len({t.uid for t in trials}) == 40
    assert [t.number for t in trials] == sorted(t.number for t in trials)
    assert all(t.constraints[0] == t.metrics["params"] - 400000 for t in trials)



def test_export_compiles_the_front_for_an_int8_target_and_says_what_changed(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import numpy as np
    import onnx
    import onnxruntime as ort

    out = tmp_path / "s"
    # --export inside OUT, which the search makes; cortex-m7's pipeline quantizes (int8).
    assert main(["search", "--objectives", "accuracy,latency", "--budget", "12", "--strategy", "random",
                 "--no-progress", "-o", str(out), "--export", str(out / "export")]) == 0
    err = capsys.readouterr().err
    front = json.loads((out / "front.json").read_text())["front"]
    artifacts = sorted((out / "export").glob("*.onnx"))
    assert front and len(artifacts) == len(front)
    assert err.count("the architectures are untrained (random weights); calibrated on random inputs") == 1
    assert "note: cortex-m7 compiles models to int8" in err and "prices each architecture in float" in err
    assert "quantize: no calibration data" not in err  # said once above, not per architecture
    for path, row in zip(artifacts, front, strict=True):
        report = json.loads(path.with_suffix(".cost.json").read_text())
        assert report["pipeline"].startswith("canonicalize,quantize") and "random inputs" in " ".join(report["notes"])
        said = next(line for line in err.splitlines() if line.startswith(f"exported trial {row['trial']} "))
        assert "as compiled: pipeline 'canonicalize,quantize" in said and "the search priced" in said
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = sess.get_inputs()[0]
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
        y = sess.run(None, {x.name: np.zeros([d if isinstance(d, int) else 1 for d in x.shape], np.float32)})[0]
        assert np.isfinite(y).all()
