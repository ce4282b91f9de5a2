"""`hwnas search`: a multi-objective architecture search kept in Optuna storage, and `hwnas
search show STUDY` for an existing study's results."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from hwnas.cli.common import out, say
from hwnas.errors import HwnasError

if TYPE_CHECKING:
    from hwnas.compile import Compiled
    from hwnas.search.results import Front
    from hwnas.search.study import Evaluated, SearchSpec, Study

SPACES = ("nb201", "mbv2", "nb201-joint", "mbv2-joint")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("search", help="search architectures for a target (or: search show STUDY)", description=(
        "Search a space for the Pareto front of the objectives on a target, with hard constraints. Trials live in "
        "Optuna storage (default: OUT/study.db, SQLite); running the same command again resumes the study, and "
        "several processes given one --storage and --study share it (PostgreSQL: postgresql://USER@HOST:PORT/DB). "
        "Writes OUT/front.json, OUT/pareto.png and OUT/hypervolume.png. 'hwnas search show STUDY' prints an existing "
        "study (STUDY: its OUT folder, its .db file, or its name with --storage)."))
    s.add_argument("action", nargs="*", metavar="show STUDY", help="print an existing study instead of searching")
    s.add_argument("--space", choices=SPACES, help="search space (default nb201)")
    s.add_argument("-t", "--target", help="target whose cost model prices candidates (default cortex-m7)")
    s.add_argument("--objectives", metavar="A,B", help="objectives, comma-separated (default accuracy,latency): "
                   "AnalogNAS-Bench accuracies (accuracy, drift_1d, any of its metric names; nb201 only) and "
                   "hardware metrics (latency, energy, peak_memory, weights, params, the target's resources)")
    s.add_argument("-c", "--constraint", action="append", default=[], metavar="M<=V",
                   help="hard constraint, repeatable, e.g. latency<=5ms, SRAM<=320KiB, accuracy>=90")
    s.add_argument("--budget", type=int, default=300, help="trials the study holds when done (default 300)")
    s.add_argument("--strategy", default=None, help="search strategy (default: hwnas's default)")
    s.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    s.add_argument("-o", "--out", type=Path, default=Path("hwnas-search"), help="results folder (default hwnas-search)")
    s.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    s.add_argument("--study", help="study name (default: made from space, target, objectives, strategy and seed)")
    s.add_argument("--worker", type=int, default=0, help="this worker's index when several share a study (seeds it)")
    s.add_argument("--export", type=Path, metavar="DIR", help="compile the front's architectures into DIR")
    s.add_argument("--bench", metavar="FILE", help="AnalogNAS-Bench table (default: the analog-nasbench package's)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return s


def run(args: argparse.Namespace) -> int:
    from hwnas.backends.target import load_target

    if not args.action:
        load_target(args.target or "cortex-m7")  # an unknown target is one line before the search's imports
    from hwnas.search.study import StudyError

    if args.action:
        if args.action[0] != "show" or len(args.action) != 2:
            raise StudyError(f"'hwnas search {' '.join(args.action)}': the only action is 'show STUDY'")
        return _show(args, args.action[1])
    if args.budget < 1:
        raise StudyError(f"--budget must be at least 1, not {args.budget}")
    return _search(args)


def _spec(args: argparse.Namespace) -> SearchSpec:
    from hwnas.backends.target import load_target
    from hwnas.search.strategies import STRATEGIES
    from hwnas.search.study import SearchSpec, StudyError, parse_bound

    strategy = args.strategy or "default"
    if strategy not in STRATEGIES:
        raise StudyError(f"unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    target = args.target or "cortex-m7"
    load_target(target)  # one line for an unknown target, before anything is written
    objectives = tuple(o.strip() for o in (args.objectives or "accuracy,latency").split(",") if o.strip())
    return SearchSpec(args.space or "nb201", target, objectives, tuple(parse_bound(c) for c in args.constraint),
                      strategy, 0 if args.seed is None else args.seed)


def _search(args: argparse.Namespace) -> int:
    from hwnas.cli.common import check_writable
    from hwnas.search.study import StudyError, default_storage, open_study

    spec = _spec(args)
    for folder in (args.out, args.export):
        if folder is not None:
            if folder.exists() and not folder.is_dir():
                raise StudyError(f"{folder}: exists and is not a folder")
            # Its parent must exist and be writable, or be OUT (made next): --export OUT/export.
            if not folder.exists() and folder.parent.resolve() != args.out.resolve():
                check_writable(folder)
    made_out = not args.out.exists()
    args.out.mkdir(exist_ok=True)
    check_writable(args.out / "front.json")
    name = args.study or re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{spec.space}-{spec.target}-{'-'.join(spec.objectives)}-"
                                                          f"{spec.strategy}-s{spec.seed}")
    storage = args.storage or default_storage(str(args.out))
    database = args.out / "study.db"
    made_db = args.storage is None and not database.exists()
    try:
        study = open_study(storage, name, spec, worker=args.worker, bench=args.bench)
    except HwnasError:  # a refused search leaves no empty study database or folder behind
        if made_db:
            database.unlink(missing_ok=True)
        if made_out:
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    note = _precision_note(spec)
    if note:
        say(f"hwnas: note: {note}")
    before = len(study.stored())
    if before:
        say(f"resuming study '{name}': {before} trials stored")
    added = _run_with_progress(study, args.budget, not args.no_progress)
    say(f"study '{name}': {added} trials evaluated by this worker, {len(study.stored())} stored in total")
    front = _report(study, args.out)
    if args.export is not None and front.front:
        _export(study, front, args.export)
    return 0


def _run_with_progress(study: Study, budget: int, show: bool) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hwnas.cli.common import console

    if not show:
        return study.run(budget)
    with Progress(TextColumn("searching"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("search", total=budget)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=min(done, total))

        return study.run(budget, progress)


def _show(args: argparse.Namespace, where: str) -> int:
    from hwnas.search.study import StudyError, default_storage, open_storage, open_study

    path = Path(where)
    storage, name = args.storage, None
    if storage is None:
        if path.is_dir():
            path = path / "study.db"
        if not path.is_file():
            raise StudyError(f"{where}: no study there (give a search's output folder, its study.db, "
                             f"or a study name with --storage)")
        storage = default_storage(str(path.parent)) if path.name == "study.db" else f"sqlite:///{path.resolve()}"
    else:
        name = where
    if name is None:
        import optuna

        names = [s.study_name for s in optuna.study.get_all_study_summaries(open_storage(storage))]
        if len(names) != 1:
            raise StudyError(f"{where} holds {len(names)} studies ({', '.join(names)}): name one with --storage URL")
        name = names[0]
    study = open_study(storage, name, bench=args.bench)
    _report(study, None)
    return 0


def _report(study: Study, folder: Path | None) -> Front:
    """Print the study's front as a table with its hypervolume; write front.json and plots."""
    from hwnas.errors import HwnasError
    from hwnas.files import write_atomic
    from hwnas.search.results import pareto, save_plots

    problem = study.problem
    trials = study.stored()
    front = pareto(trials, problem.directions)
    spec = study.spec
    say(f"study '{study.name}': space {spec.space}, target {spec.target}, strategy {spec.strategy}, seed {spec.seed}; "
        f"{len(trials)} trials, {len(front.feasible)} feasible candidates, {len(front.front)} on the front")
    heads = ", ".join(f"{o} ({d[:3]})" for o, d in zip(spec.objectives, problem.directions, strict=True))
    table = Table(title=f"Pareto front ({heads})")
    table.add_column("trial", justify="right")
    table.add_column("architecture")
    for o in spec.objectives:
        table.add_column(o, justify="right")
    cons = problem.constraint_names()
    for c in cons:
        table.add_column(c, justify="right")
    for t in front.front:
        assert t.values is not None
        table.add_row(str(t.number), t.key, *(_fmt(o, v) for o, v in zip(problem.objectives, t.values, strict=True)),
                      *("met" if c <= 0 else f"+{c:.3g}" for c in t.constraints))
    out.print(table)
    ref = ", ".join(f"{r:.6g}" for r in front.reference)
    say(f"hypervolume {front.hypervolume:.6g} (objectives minimized, accuracies negated; reference point {ref}: "
        f"worst feasible value + 10% of the range)")
    if folder is not None:
        doc = {"study": study.name, "spec": json.loads(spec.to_json()), "trials": len(trials),
               "hypervolume": front.hypervolume, "reference_point_minimized": front.reference.tolist(),
               "front": [{"trial": t.number, "architecture": t.key, "values": list(t.values or ()),
                          "constraints": list(t.constraints), "metrics": t.metrics} for t in front.front]}
        write_atomic(folder / "front.json", json.dumps(doc, indent=1).encode())
        for p in save_plots(trials, front, spec.objectives, folder):
            say(f"wrote {p}")
    if not front.front and cons:
        closest = min((t for t in trials if t.values is not None), key=lambda t: t.violation, default=None)
        where = (f"; closest: trial {closest.number} {closest.key} "
                 f"({', '.join(f'{n} by {c:.4g}' for n, c in zip(cons, closest.constraints, strict=True) if c > 0)})"
                 if closest else "")
        raise HwnasError(f"no candidate of {len(trials)} met every constraint ({', '.join(cons)}){where}")
    return front


def _fmt(metric: str, v: float) -> str:
    if metric == "latency" or metric.endswith("_s"):
        return f"{v * 1e3:.4g} ms"
    if metric == "energy":
        return f"{v * 1e3:.4g} mJ"
    return f"{v:.4g}"


def _precision_note(spec: SearchSpec) -> str:
    """What the latencies mean where the target compiles to int8 but the space prices float."""
    from hwnas.backends.target import load_target

    target = load_target(spec.target)
    if target.compile.precision != "int8" or spec.space.endswith("-joint"):
        return ""
    return (f"{target.name} compiles models to int8 (pipeline '{target.compile.pipeline}'), but space "
            f"'{spec.space}' prices each architecture in float as it builds it: the figures and constraints are "
            f"the float model's (--export gives both; space '{spec.space}-joint' searches bit widths, on "
            f"hardware objectives)")


def _as_priced(t: Evaluated, compiled: Compiled) -> str:
    """'' when the artifact's report has the latency the search priced; else both, with why: the
    search prices the architecture as the space builds it, analytically (float, no fusion); the
    artifact is what the target's pipeline makes of it (quantized, fused), priced with this
    machine's calibration where there is one."""
    from hwnas.backends.cost.report import format_seconds

    searched, got = t.metrics.get("latency"), compiled.report.latency_s
    if searched is None or math.isclose(searched, got, rel_tol=1e-6):
        return ""
    return (f" (latency {format_seconds(got)} as compiled: pipeline '{compiled.pipeline}', "
            f"{compiled.report.method}; the search priced the architecture as built, analytical: "
            f"{format_seconds(searched)})")


def _export(study: Study, front: Front, folder: Path) -> None:
    """Compile each architecture of the front for the study's target (artifact + cost report).
    The architectures are untrained (their weights are random), so where the target's pipeline
    quantizes, it calibrates on random inputs: said once, not per architecture."""
    import warnings

    from hwnas.backends.target import load_target
    from hwnas.compile import check_calibration
    from hwnas.compile import compile as compile_graph

    target = load_target(study.spec.target)
    space = study.problem.space
    for note in check_calibration(target, target.compile.pipeline, None, allow_random=True):
        say(f"hwnas: export: the architectures are untrained (random weights); {note}")
    folder.mkdir(parents=True, exist_ok=True)
    for rank, t in enumerate(front.front):
        graph = space.build_ir(space.parse(t.key))
        graph.name = f"trial{t.number}"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="quantize: no calibration data")  # said above
            compiled = compile_graph(graph, target, source=t.key, allow_random_calib=True)
        path = folder / f"{rank:02d}-trial{t.number}.onnx"
        compiled.write(path)
        say(f"exported trial {t.number} -> {path}{_as_priced(t, compiled)}")
