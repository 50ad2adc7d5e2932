"""A sweep: the cells of one or more run requests, spread over worker processes by submitit.

The parent checks every request and computes every cell's run key before any cell starts
(bad input fails here, as for a plain run), decodes every cache the cells need (once, never
by several workers at once), then hands the cells that have no result to submitit: its
local executor (`--jobs N` processes on this machine, the threads divided between them, the
GPUs shared) or a SLURM job array. Each cell runs in a process of its own through the same
`run()` as `ferbench run`, so run keys, skip-done, resume, the shared noise file and the
per-key lock hold as they do there. A cell that fails leaves a failure record and the
others go on; starting the same sweep again runs only what has no result.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError, FerbenchError
from .progress import console
from .slurm import (SLURM_DEATHS, check_sbatch, check_slurm, remember_jobs, slurm_parameters,
                    still_queued)

# The sweep's own files in the results folder: cell logs, failure records, submitit's folder.
SWEEP_DIR = "sweep"
LAUNCHERS = ("local", "slurm")
POLL_S = 0.5


@dataclass
class CellSpec:
    """What a worker needs to run one cell (pickled by submitit)."""

    request: object            # a RunRequest of one method, one protocol, one seed
    label: str
    log: str
    failure: str
    parent_pid: int | None     # local workers stop when the sweep's process is gone


@dataclass
class Cell:
    spec: CellSpec
    key: object
    stored: bool
    method: str
    preset: str
    dataset: str
    work: float | None = None      # image-epochs: the planned epochs × training images
    image_size: int | None = None
    estimate_s: float | None = None


@dataclass
class Summary:
    done: list = field(default_factory=list)       # (label, wall s)
    skipped: list = field(default_factory=list)    # (label, why)
    failed: list = field(default_factory=list)     # (label, error line, log)
    interrupted: bool = False


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_sweep(requests, out: Path, *, force: bool, jobs: int, launcher: str,
               decode: bool = True, show_progress: bool | None = None,
               origins: list | None = None) -> list[Cell]:
    """Every cell of `requests` with its key and whether it is stored; with `decode`, every
    cache a cell to run needs decoded. A request's problem is named by its `origins` entry
    (and a grid's method entry by its `entry`, in the cells' labels)."""
    from .planning import request_command

    cells, seen = [], set()
    for n, req in enumerate(requests):
        # A sweep always continues an interrupted cell from its checkpoint.
        req = replace(req, out=str(out), force=force, resume=True, show_progress=show_progress)
        entry = getattr(origins[n], "entry", None) if origins else None
        try:
            found = _request_cells(req, out, decode, show_progress, launcher, seen, entry)
        except FerbenchError as e:
            if not origins:
                raise
            raise ConfigError(f"{origins[n]}: {e}") from None
        cells += found
    if launcher == "local":
        threads = max(1, cores() // workers(cells, jobs))
        for c in cells:
            one = c.spec.request
            if not one.flags.get("threads"):
                one.flags["threads"] = threads  # the machine's cores divided among the workers
                one.command = request_command(one)
    _estimate(cells, out)
    return cells


def workers(cells: list[Cell], jobs: int) -> int:
    """How many cells run at once at `--jobs jobs`: no more than there are to run."""
    return max(1, min(jobs, sum(not c.stored for c in cells)))


def _request_cells(req, out, decode, show_progress, launcher, seen, entry) -> list[Cell]:
    from .data.cache import load_cached
    from .planning import request_command
    from .results import is_readable_result
    from .runner import prepare, resolve_cell

    cells = []
    plan = prepare(req)
    for protocol, params, view, name, cls, seed in plan.cells():
        one = replace(req, methods=[name], protocols=[protocol], seeds=[seed],
                      flags=dict(req.flags), leaderboard=False, show_progress=False)
        one.command = request_command(one)
        r = resolve_cell(one, plan.ds, plan.mode, params, view, name, cls, plan.preset, seed)
        if r.key in seen:
            continue  # the same run twice in a grid (two entries alike)
        seen.add(r.key)
        path = r.key.result_path(out)
        stored = not req.force and path.exists() and is_readable_result(path)
        if decode and not stored:
            # Decoded now, in this process, so that no two workers decode one cache.
            for samples in (r.view.train, r.view.val, r.view.test):
                if samples is not None:
                    load_cached(samples, int(r.mcfg.image_size), plan.mode,
                                show_progress=show_progress)
        slug = _slug(r.key)
        who = f"{entry} ({name})" if entry else name
        spec = CellSpec(one, f"{who} · {r.key.protocol} · seed {seed} · {plan.ds.name}",
                        str(out / SWEEP_DIR / "logs" / f"{slug}.log"),
                        str(out / SWEEP_DIR / "failed" / f"{slug}.json"),
                        os.getpid() if launcher == "local" else None)
        cells.append(Cell(spec, r.key, stored, name, plan.preset, plan.ds.name,
                          _image_epochs(r.resolved, len(r.view.train)),
                          r.resolved["method"].get("image_size")))
    return cells


def _slug(key) -> str:
    text = f"{key.dataset}-{key.protocol}-{key.method}-seed{key.seed}-{key.config_hash[:8]}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _estimate(cells: list[Cell], out: Path) -> None:
    """Each cell's expected wall time: the median time per image-epoch of stored runs of its
    method, preset and dataset (any protocol or seed), times the cell's own epochs × training
    images, so a cell of other epochs or `n_train` is not given another run's time; stored
    runs at the cell's image size are preferred (a run's cost grows with it). None where
    there are none, and for a cell that trains no epoch."""
    from .results import read_results

    rates: dict = {}
    if out.is_dir():
        for r in read_results(out):
            n_train = (r.get("dataset") or {}).get("n_train")
            wall, work = r.get("wall_time_s"), _image_epochs(r.get("config"), n_train)
            if isinstance(wall, (int, float)) and work:
                k = ((r.get("key") or {}).get("dataset"), (r.get("key") or {}).get("method"),
                     (r.get("method") or {}).get("preset"))
                size = ((r.get("config") or {}).get("method") or {}).get("image_size")
                rates.setdefault(k, []).append((size, float(wall) / work))
    for c in cells:
        found = rates.get((c.dataset, c.method, c.preset), [])
        same = [rate for s, rate in found if s == c.image_size] or [rate for _, rate in found]
        c.estimate_s = statistics.median(same) * c.work if same and c.work else None


def _image_epochs(config, n_train) -> float | None:
    """Epochs × training images of a run's resolved config, or None where either is missing."""
    epochs = ((config or {}).get("method") or {}).get("epochs")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
             for v in (epochs, n_train))
    return float(epochs) * float(n_train) if ok else None


def remaining_estimate(cells: list[Cell], jobs: int) -> str:
    todo = [c for c in cells if not c.stored]
    n = workers(cells, jobs)
    if not todo:
        return "nothing left to run"
    known = [c.estimate_s for c in todo if c.estimate_s is not None]
    unknown = len(todo) - len(known)
    if not known:
        return "unknown (no stored run of these methods, presets and datasets)"
    total = sum(known)
    text = f"about {_hms(total)} of runs" + (f", {_hms(total / n)} with {n} at once"
                                            if n > 1 else "")
    return text + (f", plus {unknown} cells of unknown time" if unknown else "")


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def print_dry_run(cells: list[Cell], jobs: int) -> None:
    from tabulate import tabulate

    rows = [[c.spec.label, "stored" if c.stored else "to run",
             "–" if c.stored else ("unknown" if c.estimate_s is None else _hms(c.estimate_s))]
            for c in cells]
    print(tabulate(rows, headers=["cell", "status", "estimate"], disable_numparse=True))
    stored = sum(c.stored for c in cells)
    print(f"{len(cells)} cells: {stored} stored, {len(cells) - stored} to run; time still "
          f"needed: {remaining_estimate(cells, jobs)}")


# ---- the worker side ------------------------------------------------------------------


def execute_cell(spec: CellSpec) -> dict:
    """Run one cell in this (worker) process; its output goes to the cell's log file.
    Returns an outcome; a failure is returned (with its one line), not raised."""
    import resource

    log = Path(spec.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {spec.label} (pid {os.getpid()})\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(fd, 1), os.dup2(fd, 2)
    if spec.parent_pid:
        _stop_with(spec.parent_pid)
    from .runner import run

    t0 = time.time()
    try:
        written = run(spec.request)
    except FerbenchError as e:
        return _failed(spec, str(e))
    except Exception as e:  # a bug in a method: the cell fails, the sweep goes on
        import traceback

        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        return _failed(spec, f"internal error: {type(e).__name__}: {first}")
    Path(spec.failure).unlink(missing_ok=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak resident memory of this worker: {peak:.0f} MiB", flush=True)
    return {"status": "done" if written else "busy", "wall_s": time.time() - t0}


def _failed(spec: CellSpec, error: str) -> dict:
    print(f"ferbench: error: {error}", file=sys.stderr, flush=True)
    _write_failure(spec, error, request=vars(spec.request))
    return {"status": "failed", "error": error}


def _write_failure(spec: CellSpec, error: str, **more) -> None:
    """The cell's failure record: its error line and its log (removed once it succeeds)."""
    from .results import write_json

    write_json(spec.failure, {"cell": spec.label, "error": error, "log": spec.log,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **more})


def _stop_with(pid: int) -> None:
    """Interrupt this worker (as Ctrl-C would) once the sweep process `pid` is gone, so a
    killed sweep leaves no training behind; its checkpoint lets the next sweep resume."""
    import signal
    import threading

    def watch():
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGINT)
                return
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True).start()


# ---- the parent side ------------------------------------------------------------------


def make_executor(launcher: str, out: Path, slurm: dict, cells: int = 1):
    """submitit's executor for `launcher` (on SLURM, for an array of `cells`), its jobs'
    files under `out/sweep/submitit`."""
    import submitit

    folder = out / SWEEP_DIR / "submitit"
    if launcher == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=60 * 24 * 30)  # a run ends when it ends
        return ex
    check_sbatch()
    ex = submitit.SlurmExecutor(folder=folder)
    ex.update_parameters(**slurm_parameters(slurm, cells))
    return ex


def launch(cells: list[Cell], *, launcher: str, jobs: int, out: Path, slurm: dict,
           gpus: int = 0, show_progress: bool | None = None) -> Summary:
    """Run the cells without a result; return what became of each."""
    summary = Summary()
    todo = [c for c in cells if not c.stored]
    for c in cells:
        if c.stored:
            summary.skipped.append((c.spec.label, "stored result"))
    if launcher == "slurm":
        queued = still_queued(todo, out / SWEEP_DIR)
        for c in todo:
            if c.spec.label in queued:
                summary.skipped.append((c.spec.label, f"still queued or running as SLURM job "
                                                      f"{queued[c.spec.label]}"))
        todo = [c for c in todo if c.spec.label not in queued]
    if not todo:
        return summary
    executor = make_executor(launcher, out, slurm, len(todo))
    slots = len(todo) if launcher == "slurm" else jobs
    pending, running = list(todo), {}
    free = list(range(slots))
    t0 = time.time()
    env = _worker_env(min(jobs, len(todo))) if launcher == "local" else {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # submitit's local jobs start with this process's environment
    display = _Display(len(todo), min(jobs, len(todo)), show_progress)
    try:
        if launcher == "slurm":
            handles = executor.map_array(execute_cell, [c.spec for c in todo])
            remember_jobs(out / SWEEP_DIR, todo, handles)
            running = {h: (c, 0) for h, c in zip(handles, todo)}
            pending = []
            console.print(f"sweep: {len(todo)} cells submitted as SLURM job array "
                          f"{handles[0].job_id.split('_')[0]}", highlight=False)
        while pending or running:
            while pending and free:
                cell, slot = pending.pop(0), free.pop(0)
                if gpus:
                    executor.update_parameters(visible_gpus=[slot % gpus], gpus_per_node=1)
                with _stderr_to(out / SWEEP_DIR / "submitit" / "controllers.log"):
                    running[executor.submit(execute_cell, cell.spec)] = (cell, slot)
            display.update(summary, len(running), t0)
            finished = [h for h in running if h.done()]
            if not finished:
                time.sleep(POLL_S)
                continue
            for h in finished:
                cell, slot = running.pop(h)
                free.append(slot)
                display.event(cell, summary, _record(summary, cell, h))
        display.update(summary, 0, t0)
    except KeyboardInterrupt:
        summary.interrupted = True
        for h in running:
            h.cancel()
    finally:
        display.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return summary


@contextmanager
def _stderr_to(path: Path):
    """Processes started meanwhile (submitit's local job controllers) write their stderr to
    `path`, not to the terminal: on Ctrl-C each would print a traceback under the sweep's
    one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _worker_env(jobs: int) -> dict:
    """Each local worker's OpenMP/BLAS pools sized to its share of the cores, so N workers
    never run more threads than the machine has."""
    n = str(max(1, cores() // jobs))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def _record(summary: Summary, cell: Cell, handle) -> str:
    """Add what became of `cell` to `summary`; return it as the progress line says it."""
    label, log = cell.spec.label, cell.spec.log
    try:
        outcome = handle.result()
    except Exception as e:  # the worker died (killed, out of memory, cancelled job)
        outcome = {"status": "failed", "error": _death(handle, e)}
        _write_failure(cell.spec, outcome["error"])
    status = outcome.get("status")
    if status == "done":
        _forget(handle)
        summary.done.append((label, outcome["wall_s"]))
        return f"done in {outcome['wall_s']:.0f} s"
    if status == "busy":
        _forget(handle)
        summary.skipped.append((label, "running in another ferbench process"))
        return "skipped: running in another ferbench process"
    error = outcome.get("error", "?")
    summary.failed.append((label, error, log))
    return f"FAILED: {error} (log: {log})"


def _death(handle, error: Exception) -> str:
    """One line for a worker that left no result, from its exit signal or SLURM state;
    submitit's own message spans lines and names its pickles, not the cause."""
    import signal

    process = getattr(handle, "_process", None)  # the local job's controller
    code = process.poll() if process is not None else None
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
        return (f"worker killed by signal {-code} ({name}"
                + ("; out of memory?)" if -code == signal.SIGKILL else ")"))
    state = str(getattr(handle, "state", "") or "").split()
    state = state[0].upper() if state else ""
    if state in SLURM_DEATHS:
        return SLURM_DEATHS[state]
    if type(error).__name__ == "FailedJobError":  # it raised before or after execute_cell
        lines = [ln.strip() for ln in str(error).split("-" * 22)[1].splitlines() if ln.strip()] \
            if str(error).count("-" * 22) >= 2 else []
        return f"the worker failed outside its run: {(lines or [type(error).__name__])[-1][:200]}"
    if state in ("FINISHED", "COMPLETED", "FAILED", ""):
        # execute_cell returns every error it can catch, so a worker without a result
        # and without an error line was killed, most often by the kernel for memory.
        return ("worker killed before it finished, leaving no result and no error (a signal "
                "such as 9: out of memory?)")
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"the worker stopped without a result (state {state}; {first[:200]})"


def _forget(handle) -> None:
    """A finished job's submitit files (its pickles and logs; the cell has its own log)."""
    paths = getattr(handle, "paths", None)
    for name in ("submitted_pickle", "result_pickle", "stdout", "stderr", "submission_file"):
        path = getattr(paths, name, None)
        if path is not None:
            Path(path).unlink(missing_ok=True)


class _Display:
    """The sweep's progress: a live line on a terminal, one line per finished cell otherwise."""

    def __init__(self, total: int, jobs: int, enabled: bool | None):
        self.total, self.jobs = total, jobs
        self.finished = 0  # done, failed, or skipped because another process runs it
        self.live = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if self.live:
            from rich.progress import Progress, TextColumn

            self.bar = Progress(TextColumn("{task.description}"), console=console,
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task("sweep", total=total)

    def _text(self, summary: Summary, running: int, t0: float) -> str:
        n_done = len(summary.done)
        walls = [w for _, w in summary.done]
        left = self.total - self.finished - running
        eta = ""
        if walls:
            eta = f" · about {_hms(statistics.mean(walls) * (left + running / 2) / self.jobs)} left"
        return (f"sweep: {n_done}/{self.total} done · {running} running · "
                f"{len(summary.failed)} failed · {_hms(time.time() - t0)} elapsed{eta}")

    def update(self, summary: Summary, running: int, t0: float) -> None:
        self._t0 = t0
        if self.bar is not None:
            self.bar.update(self.task, description=self._text(summary, running, t0))

    def event(self, cell: Cell, summary: Summary, what: str) -> None:
        self.finished += 1
        console.print(f"[{self.finished}/{self.total}] "
                      f"{cell.spec.label}: {what}", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_summary(summary: Summary, t0: float) -> None:
    done, skipped, failed = summary.done, summary.skipped, summary.failed
    console.print(f"sweep: {len(done)} done, {len(skipped)} skipped, {len(failed)} failed"
                  f" in {_hms(time.time() - t0)}"
                  + (f" (cells' own time {_hms(sum(w for _, w in done))})" if done else ""),
                  highlight=False)
    for label, why in skipped:
        if why != "stored result":
            console.print(f"  skipped {label}: {why}", highlight=False)
    for label, error, log in failed:
        console.print(f"  failed {label}: {error} (log: {log})", highlight=False)
    if summary.interrupted:
        console.print("sweep interrupted: the same command runs what is missing, resuming "
                      "interrupted cells from their checkpoints", highlight=False)


def run_sweep(requests, out, *, jobs: int = 1, launcher: str = "local", slurm: dict | None = None,
              dry_run: bool = False, force: bool = False, leaderboard: bool = True,
              leaderboard_out=None, gpus: int = 0, origins: list | None = None,
              show_progress: bool | None = None) -> Summary | None:
    """Plan, launch and summarise a sweep; rebuild the leaderboard. None for a dry run.

    `leaderboard_out` (a grid's `leaderboard`) is where the requests' own results folder
    (their `out`) keeps its leaderboard; a sweep into another folder writes the leaderboard
    into that folder, so trying a grid elsewhere never overwrites its committed board."""
    from .results import check_writable

    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r} (use {' or '.join(LAUNCHERS)})")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected 1 or more")
    slurm = check_slurm(slurm or {})  # a bad setting fails before any cell
    if launcher == "slurm" and not dry_run:
        check_sbatch()  # one line, before any planning
    out = check_writable(out, create=False)
    if leaderboard_out is not None and any(
            Path(r.out).expanduser().resolve() != out.resolve() for r in requests):
        leaderboard_out = None
    t0 = time.time()
    cells = plan_sweep(requests, out, force=force, jobs=jobs, launcher=launcher,
                       decode=not dry_run, show_progress=show_progress, origins=origins)
    if dry_run:
        print_dry_run(cells, jobs)
        return None
    todo = sum(not c.stored for c in cells)
    n = workers(cells, jobs)
    where = (f"{n} local worker{'s' if n > 1 else ''}, "
             f"{max(1, cores() // n)} thread{'s' if cores() // n > 1 else ''} each"
             if launcher == "local"
             else "a SLURM job array")
    console.print(f"sweep: {len(cells)} cells, {len(cells) - todo} stored, {todo} to run on "
                  f"{where}; time still needed: {remaining_estimate(cells, jobs)}",
                  highlight=False)
    summary = launch(cells, launcher=launcher, jobs=jobs, out=out, slurm=slurm, gpus=gpus,
                     show_progress=show_progress)
    print_summary(summary, t0)
    if leaderboard and not summary.interrupted and out.is_dir():
        from .leaderboard import build_leaderboard
        from .results import read_results

        if read_results(out):
            board = build_leaderboard(out, leaderboard_out)
            console.print(f"leaderboard: {board['markdown']}", highlight=False)
    return summary
