"""A sweep on SLURM: the settings a grid file's `slurm:` section or `--slurm KEY=VALUE`
gives, checked and turned into submitit's; whether `sbatch` is here; which cells an earlier
sweep's jobs still hold; and what a job's final state says of a task that left no result."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from .errors import ConfigError, unknown_name
from .yamltext import yaml_value

# Slurm settings a grid file's `slurm:` section (or `--slurm KEY=VALUE`) may give, as
# submitit's SlurmExecutor names them, and what each must be; `sbatch` holds any other
# #SBATCH option.
SLURM_KEYS = {"partition": ("partition", "text"), "gpus_per_task": ("gpus_per_task", 0),
              "cpus_per_task": ("cpus_per_task", 1), "mem_gb": ("mem", 1),
              "time_min": ("time", 1), "array_parallelism": ("array_parallelism", 1),
              "setup": ("setup", "lines"), "sbatch": ("additional_parameters", "mapping")}
SLURM_EXAMPLES = {"partition": "gpu", "gpus_per_task": "1", "cpus_per_task": "8",
                  "mem_gb": "32 (GB)", "time_min": "120 (minutes)", "array_parallelism": "12",
                  "setup": "[source .venv/bin/activate]", "sbatch": "{account: my-lab}"}


def check_sbatch() -> None:
    if not shutil.which("sbatch"):
        raise ConfigError("--launcher slurm: there is no sbatch on this machine (run the sweep "
                          "on the cluster's login node; --launcher local runs the same cells "
                          "here)")


# SLURM states of a job that will still run, or runs: its cell must not be submitted again.
SLURM_ALIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
               "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")


def still_queued(cells: list, sweep_dir: Path, job_state=None) -> dict:
    """Cells whose SLURM job of an earlier sweep is still queued or running: cell label ->
    job id. Read from the record of the jobs sweeps submitted (in `sweep_dir`), not from
    file locks, which do not hold across NFS. `job_state(job_id)` (default: sacct through
    submitit)."""
    jobs = submitted_jobs(sweep_dir)
    if not jobs:
        return {}
    if job_state is None:
        import submitit

        def job_state(job_id):
            return submitit.SlurmJob(folder=sweep_dir / "submitit", job_id=job_id).state
    found = {}
    for c in cells:
        job_id = jobs.get(Path(c.spec.log).stem)
        if job_id and str(job_state(job_id)).split()[0].upper() in SLURM_ALIVE:
            found[c.spec.label] = job_id
    return found


def submitted_jobs(sweep_dir: Path) -> dict:
    """Cell slug -> SLURM job id of every job earlier sweeps recorded in `sweep_dir`."""
    path = sweep_dir / "slurm-jobs.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


def remember_jobs(sweep_dir: Path, cells: list, handles: list) -> None:
    from .results import write_json

    jobs = submitted_jobs(sweep_dir)
    jobs.update({Path(c.spec.log).stem: h.job_id for c, h in zip(cells, handles)})
    write_json(sweep_dir / "slurm-jobs.json", jobs)


def settings_from_text(pairs: dict) -> dict:
    """`--slurm KEY=VALUE` text read as a grid file's YAML reads it for KEY: a mapping
    (`sbatch={account: my-lab}`) or a list of lines (`setup=[module load cuda, source
    .venv/bin/activate]`), where it parses as one; anything else stays text for
    `check_slurm`, which types counts and refuses the rest in one line."""
    typed = {}
    for k, v in pairs.items():
        kind = SLURM_KEYS.get(k, (None, None))[1]
        parsed = yaml_value(v) if kind in ("lines", "mapping") and isinstance(v, str) else None
        lines = isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)
        typed[k] = parsed if (kind == "mapping" and isinstance(parsed, dict)) or \
            (kind == "lines" and lines) else v
    return typed


def check_slurm(settings: dict, where: str = "--slurm ") -> dict:
    """`settings` checked and typed (text as numbers where they are counts, one line as a
    list of one); a problem is one ConfigError line `{where}KEY: problem`."""
    checked = {}
    for k, v in settings.items():
        if k not in SLURM_KEYS:
            raise ConfigError(f"{where}{k}: {unknown_name('slurm setting', str(k), SLURM_KEYS)}"
                              f"; any other #SBATCH option goes in sbatch: {{name: value}}")
        kind = SLURM_KEYS[k][1]
        value = _slurm_value(v, kind)
        if value is None:
            raise ConfigError(f"{where}{k}: {v!r} is not a valid value; expected "
                              + ("a whole number" + (" >= 1" if kind == 1 else " >= 0")
                                 + f" such as {SLURM_EXAMPLES[k]}" if isinstance(kind, int)
                                 else f"such as {SLURM_EXAMPLES[k]}"))
        checked[k] = value
    return checked


def _slurm_value(v, kind):
    """`v` as a setting of `kind` (the least whole number, "text", "lines", "mapping"), or
    None where it is not one."""
    if isinstance(kind, int):
        if isinstance(v, str) and re.fullmatch(r"\+?[0-9]+", v.strip()):
            v = int(v)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= kind else None
    if kind == "text":
        return v.strip() if isinstance(v, str) and v.strip() else None
    if kind == "lines":
        v = [v] if isinstance(v, str) else v
        return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None
    scalar = (str, int, float, bool)
    return v if isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, scalar)
                                            for k, x in v.items()) else None


def slurm_parameters(slurm: dict, cells: int = 1) -> dict:
    """submitit SlurmExecutor parameters for an array of `cells` from the `slurm:` settings.
    Without `array_parallelism` every cell may run at once: the cluster's scheduler and
    the user's limits there decide, not `--jobs`, which is about this machine's cores."""
    params = {"job_name": "ferbench", "time": 24 * 60, "array_parallelism": max(1, cells)}
    for k, v in check_slurm(slurm).items():
        if k == "mem_gb":
            v = f"{v}GB"
        params[SLURM_KEYS[k][0]] = v
    return params


# What a SLURM job's final state says of a task that left no result.
SLURM_DEATHS = {"OUT_OF_MEMORY": "worker killed for using more memory than it was given "
                                 "(SLURM OUT_OF_MEMORY; raise slurm.mem_gb)",
                "TIMEOUT": "worker stopped at its time limit (SLURM TIMEOUT; raise "
                           "slurm.time_min; the next sweep resumes it from its checkpoint)",
                "CANCELLED": "the SLURM job was cancelled",
                "NODE_FAIL": "the node running the worker failed (SLURM NODE_FAIL)",
                "PREEMPTED": "the SLURM job was preempted"}
