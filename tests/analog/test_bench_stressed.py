"""tools/bench/analog.py's stressed-device study, run as a user would (`--quick --noise-scale 6
--only-stressed`) on real aihwkit tiles: it merges its rows into an earlier analog.json without
losing the other subjects' figures (a rerun replaces its own rows and marks the earlier run
superseded), judges the HWA aim on the stressed rows, and refuses to run without the noise
scale or the file to merge into. `--only-default --variants` likewise recomputes some of a
subject's default-target rows and merges them (each row naming its run, the aims judged again)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench" / "analog.py"
EARLIER = {"benchmark": "analog", "quick": False, "target": "analog-pcm", "chip_tiles": 64, "seconds": 730.0,
           "machine": {"cpu": "earlier CPU", "usable_cpus": 2, "date": "2026-12-03T06:38:48+00:00"},
           "nb201": {"cells": 3, "sample": "s", "drop": "d", "spearman_1d": 0.5, "spearman_analog_trained_1d": 0.0,
                     "spearman_1d_proxies": {"analog_noise": 0.5}, "spearman_by_time": {"86400": 0.5}, "rows": []},
           "subjects": [{"subject": "mnist-cnn", "metric": "accuracy", "test": 1000, "test_split": 2500,
                         "float_accuracy": 0.999, "pipeline": "canonicalize,map-analog", "variants": [],
                         "aims": {"drop_1d_points": {}, "kept": "from the earlier run"}}]}


def bench(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(out), *args], capture_output=True,
                          text=True, timeout=240, cwd=BENCH.parents[2])


@pytest.mark.slow  # two quick runs of the bench: about 20 s on an idle core
def test_stressed_rows_merge_into_the_earlier_run(tmp_path: Path) -> None:
    (tmp_path / "analog.json").write_text(json.dumps(EARLIER))
    res = bench(tmp_path, "--noise-scale", "6", "--only-stressed", "--subjects", "digits-cnn")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "analog.json").read_text())
    mnist, digits = doc["subjects"]
    assert mnist["aims"]["kept"] == "from the earlier run" and "stressed" not in mnist  # untouched
    assert doc["nb201"]["spearman_1d"] == 0.5 and doc["seconds"] == 730.0
    st = digits["stressed"]
    assert st["noise_scale"] == 6 and "variants" not in digits  # only the stressed study ran
    analog, hwa = st["variants"]
    assert analog["variant"] == "all-analog ×6 noise" and hwa["variant"] == "HWA-trained ×6 noise"
    drop = 100 * (digits["float_accuracy"] - analog["accuracy"]["1 d"]["mean"])
    assert drop > 5  # six times the PCM noise costs the digits CNN points: a drop to halve
    assert st["drop_1d_points"][analog["variant"]] == drop and st["hwa_halves_drop"].startswith(("PASS", "MISS"))
    (run,) = doc["runs"]
    assert "--only-stressed" in run["args"] and run["parts"] == "the stressed-device rows of digits-cnn"
    md = (tmp_path / "analog.md").read_text()
    assert "Stressed device: analog-pcm with ×6 PCM programming and read noise" in md
    assert "Aim on the stressed device (×6 noise): hwa_halves_drop:" in md and "Merged in by a later run" in md
    assert md.index("## mnist-cnn") < md.index("## digits-cnn") < md.index("### Stressed")
    again = bench(tmp_path, "--noise-scale", "6", "--only-stressed", "--subjects", "digits-cnn")
    assert again.returncode == 0, again.stderr[-2000:]
    first, second = json.loads((tmp_path / "analog.json").read_text())["runs"]  # the rows replaced, once
    assert first["superseded_by"] == second["date"] and "superseded_by" not in second
    assert md.count("### Stressed") == (tmp_path / "analog.md").read_text().count("### Stressed") == 1


@pytest.mark.slow  # one quick run of the bench (all-analog on digits): about 10 s on an idle core
def test_default_rows_merge_into_the_earlier_run(tmp_path: Path) -> None:
    acc = {t: {"mean": 0.99, "std": 0.0, "n": 1, "values": [0.99]} for t in ("1 s", "1 h", "1 d", "30 d")}
    digital = {"variant": "all-digital", "energy_j": 1e-5, "latency_s": 1e-5, "tiles": 0, "analog_noise": 0.0,
               "energy_vs_digital": 1.0, "accuracy": acc, "marker": "earlier"}
    earlier = json.loads(json.dumps(EARLIER))
    earlier["subjects"].append({**earlier["subjects"][0], "subject": "digits-cnn", "aims": {"drop_1d_points": {}},
                                "variants": [digital, {"variant": "hybrid", "note": "not run: earlier"}]})
    (tmp_path / "analog.json").write_text(json.dumps(earlier))
    res = bench(tmp_path, "--only-default", "--subjects", "digits-cnn", "--variants", "all-analog")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "analog.json").read_text())
    mnist, digits = doc["subjects"]
    assert mnist["aims"]["kept"] == "from the earlier run" and doc["nb201"]["spearman_1d"] == 0.5
    (run,) = doc["runs"]
    kept, hybrid, analog = digits["variants"]  # the rows it did not run are kept, in their place
    assert kept["marker"] == "earlier" and "run" not in kept and hybrid["note"] == "not run: earlier"
    assert analog["variant"] == "all-analog" and analog["run"] == run["date"] and analog["tiles"] > 0
    assert analog["energy_vs_digital"] == analog["energy_j"] / 1e-5  # against the kept all-digital row
    assert digits["aims"]["drop_1d_points"]["all-analog"] == 100 * (0.99 - analog["accuracy"]["1 d"]["mean"])
    assert run["parts"] == "the default-target rows all-analog of digits-cnn"
    md = (tmp_path / "analog.md").read_text()
    assert "| run (UTC) |" in md and "| 2026-12-03 06:38 |" in md and f"| {run['date'][:16].replace('T', ' ')} |" in md


def test_only_stressed_needs_a_scale_and_an_earlier_run(tmp_path: Path) -> None:
    res = bench(tmp_path, "--only-stressed")
    assert res.returncode == 2 and "--noise-scale" in res.stderr.splitlines()[-1]
    res = bench(tmp_path, "--only-stressed", "--noise-scale", "6")
    assert res.returncode == 2 and "analog.json" in res.stderr.splitlines()[-1]
    res = bench(tmp_path, "--noise-scale", "0")
    assert res.returncode == 2 and "--noise-scale" in res.stderr.splitlines()[-1]
    res = bench(tmp_path, "--only-default")
    assert res.returncode == 2 and "analog.json" in res.stderr.splitlines()[-1]
    res = bench(tmp_path, "--variants", "hybrid,analog")
    assert res.returncode == 2 and "--variants" in res.stderr.splitlines()[-1]
    res = bench(tmp_path, "--only-default", "--only-stressed", "--noise-scale", "6")
    assert res.returncode == 2 and "one of them" in res.stderr.splitlines()[-1]
    assert not list(tmp_path.iterdir())  # nothing written
