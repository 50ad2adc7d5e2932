"""The command line: parse, call, print. Logic lives in the modules it calls."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from tabulate import tabulate

from .errors import ConfigError, FerbenchError


class _Group(click.Group):
    """Prints a FerbenchError as one line on stderr and exits with 2 (traceback only with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FerbenchError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"ferbench: error: {e}", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            hint = ""
            if ctx.obj and ctx.obj.get("sweep"):
                hint = (" (the same command finishes what is missing, interrupted runs from "
                        "their last finished epoch)")
            elif ctx.invoked_subcommand == "run":
                hint = " (the same command with --resume continues from the last finished epoch)"
            click.echo(f"ferbench: interrupted{hint}", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # `ferbench list | head`: the reader left, nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except Exception as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            first = (str(e).strip().splitlines() or [""])[0]
            click.echo(f"ferbench: internal error{_origin(e)}: {type(e).__name__}: {first} "
                       "(run with --debug for the traceback)", err=True)
            ctx.exit(1)


def _origin(e: BaseException) -> str:
    """Where a bug surfaced: the innermost frame outside torch and numpy, often a plugin's,
    named by its module, so a plugin's fault names the plugin."""
    import traceback

    frames = [(f.f_globals.get("__name__", "?"), f.f_code, line)
              for f, line in traceback.walk_tb(e.__traceback__)
              if not any(f"{os.sep}{lib}{os.sep}" in f.f_code.co_filename
                         for lib in ("torch", "numpy"))]
    if not frames:
        return ""
    module, code, line = frames[-1]
    return f" in {module} ({os.path.basename(code.co_filename)}:{line}, {code.co_name})"


LOAD_PLUGINS_HELP = ("FERBENCH_LOAD_PLUGINS=NAME,NAME loads only these third-party plugins (entry "
                     "point or distribution names; empty: none); built-ins always load.")


@click.group(cls=_Group, epilog=LOAD_PLUGINS_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="ferbench")
@click.pass_context
def cli(ctx, debug):
    """Benchmark facial expression recognition methods under label noise and ambiguity."""
    ctx.obj = {"debug": debug}


@cli.command("list", epilog=LOAD_PLUGINS_HELP)
@click.option("--method", "method", default=None, metavar="NAME",
              help="Show one method: description, plugin, presets and every config key.")
@click.option("--dataset", "dataset", default=None, metavar="NAME",
              help="Show one dataset: description, layouts, options and official counts.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(method, dataset, as_json):
    """Methods, datasets, protocols, views, the plugin providing each, and plugins that failed."""
    if method is not None and dataset is not None:
        raise ConfigError("list: give --method NAME or --dataset NAME, not both")
    if method is not None or dataset is not None:
        from .describe import dataset_text, describe_dataset, describe_method, method_text

        info = describe_method(method) if method is not None else describe_dataset(dataset)
        text = method_text if method is not None else dataset_text
        click.echo(json.dumps(info, indent=1) if as_json else text(info))
        return
    from .plugins import KINDS, describe

    info = describe()
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    for kind in KINDS:
        rows = [(e["name"], e["plugin"], e["version"]) for e in info[kind]]
        click.echo(f"{kind.capitalize()}:")
        click.echo(tabulate(rows, headers=["name", "plugin", "version"]) if rows else "  (none)")
        click.echo()
    broken = [p for p in info["plugins"] if p["errors"]]
    if broken:
        click.echo("Plugin problems:")
        for p in broken:
            for err in p["errors"]:
                click.echo(f"  {p['name']}: {err}")


@cli.group()
def data():
    """Inspect datasets."""


def _parse_options(pairs, dataset: str, label_order: str | None) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"malformed option {pair!r}: expected KEY=VALUE")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    if label_order is not None:
        from .plugins import registry

        reg = registry()
        if "label_order" not in reg.get("datasets", dataset).options:
            having = sorted(n for n, p in reg.datasets.items()
                            if "label_order" in (getattr(p.obj, "options", None) or {}))
            raise ConfigError(f"--label-order: dataset {dataset} has no numbered class folders "
                              f"(the option is for {', '.join(having) or 'no installed dataset'})")
        out["label_order"] = label_order
    return out


@data.command("check")
@click.argument("dataset")
@click.option("--data-root", type=click.Path(), default=None, help="Folder holding the dataset.")
@click.option("--layout", default=None, help="Force a layout instead of detecting it.")
@click.option("--label-order", default=None, help="Order of numeric class folders 0..6.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable), e.g. -o labels=fer2013new.")
@click.option("--report", type=click.Path(), default=None, help="Write the full report as JSON.")
@click.option("--image-size", default=48, show_default=True, type=click.IntRange(min=8),
              help="Cache size for the audit.")
@click.option("--no-audit", is_flag=True, help="Skip decoding and the duplicate audit.")
@click.option("--fer2013-root", type=click.Path(), default=None,
              help="FERPlus only: match its training faces to this FER2013 copy and report.")
def data_check(dataset, data_root, layout, label_order, options, report, image_size, no_audit,
               fer2013_root):
    """Layout, counts per split and class, extras, and problems of DATASET."""
    from .datacheck import check_dataset, check_report_path, write_report

    opts = _parse_options(options, dataset, label_order)
    if report:
        check_report_path(report)
    info = check_dataset(dataset, data_root, layout, opts, not no_audit, image_size,
                         fer2013_root=fer2013_root)
    click.echo(f"{info['dataset']}: layout {info['layout']}"
               + (f" at {info['root']}" if info["root"] else ""))
    for note in info["notes"]:
        click.echo(f"  note: {note}")
    roles = ", ".join(f"{k}={v}" for k, v in info["roles"].items() if v)
    click.echo(f"  roles: {roles}")
    tables = dict(info["splits"])
    tables.update({f"{k} ({' + '.join(v['splits'])})": v for k, v in info["combined"].items()})
    headers = ["split"] + info["classes"] + ["total"]
    rows = [[s] + [v["classes"][c] for c in info["classes"]] + [v["total"]]
            for s, v in tables.items()]
    click.echo(tabulate(rows, headers=headers))
    if info["official"]:
        _echo_official(info["official"])
    if info["extras"]:
        click.echo("extras: " + ", ".join(f"{k} {tuple(v['shape'])} ({v['kind']})"
                                          for k, v in info["extras"].items()))
    if "audit" in info:
        a = info["audit"]
        click.echo(f"audit: {a['cross_split_images']} images in {a['cross_split_groups']} groups "
                   f"occur in more than one split; {a['conflicting_images']} identical images "
                   f"in {a['conflicting_groups']} groups carry conflicting labels; "
                   f"{a['near_blank']} near-blank images")
    if "fer2013_match" in info:
        _echo_match(info["fer2013_match"])
    if report:
        write_report(info, report)
        click.echo(f"report written to {report}")


def _echo_official(o: dict) -> None:
    from .official import describe_split

    if not o["compared"]:
        click.echo(f"official counts ({o['source']}): not compared, {o['why_not']}")
        return
    verdict = ("every split matches" if o["matches"]
               else "this copy differs (a fact about the copy, not an error)")
    click.echo(f"official counts ({o['source']}): {verdict}")
    for split, entry in o["splits"].items():
        click.echo(f"  {describe_split(split, entry)}")


def _echo_match(m: dict) -> None:
    r = m["reasons"]
    click.echo(f"FER2013 match ({m['route']} route, {m['source']}): {m['faces']:,} FERPlus "
               f"training faces; {m['matched']:,} matched ({r['duplicates_agreeing']:,} of them "
               f"through duplicates that agree), {m['ambiguous']:,} ambiguous (FER2013 "
               f"duplicates with conflicting labels), {m['unmatched']:,} unmatched")
    click.echo(f"FER2013 label differs from the FERPlus majority on {m['disagree']:,} of "
               f"{m['matched']:,} matched faces ({100 * m['disagreement_rate']:.2f} %):")
    rows = [[c, v["faces"], v["disagree"], "" if v["rate"] is None else f"{100 * v['rate']:.1f}"]
            for c, v in m["per_class"].items()]
    click.echo(tabulate(rows, headers=["FERPlus class", "faces", "FER2013 differs", "%"],
                        disable_numparse=True))


def _comma_list(ctx, param, values):
    """`--method a,b --method c` as [a, b, c]; an empty item is refused."""
    out = []
    for value in values:
        # A protocol value naming an existing file (noise_file=PATH) keeps its commas.
        _, sep, rest = value.partition("=")
        if sep and param.name == "protocols" and os.path.exists(os.path.expanduser(rest)):
            out.append(value)
            continue
        items = [item.strip() for item in value.split(",")]
        if not all(items):
            raise ConfigError(f"--{param.name[:-1]} {value!r}: an empty item in the comma list "
                              f"(expected NAME,NAME)")
        out += items
    return tuple(out)


@cli.command("run", context_settings={"ignore_unknown_options": False})
@click.option("--method", "methods", multiple=True, callback=_comma_list,
              help="Method, or a comma list of them (repeatable); default: all.")
@click.option("--dataset", default="synthfer", show_default=True)
@click.option("--data-root", type=click.Path(), default=None)
@click.option("--layout", default=None)
@click.option("--label-order", default=None, help="Order of numeric class folders 0..6.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable).")
@click.option("--protocol", "protocols", multiple=True, callback=_comma_list,
              help="clean, noise30 (any noiseP), noise_file=PATH, realnoise, cross; a comma "
                   "list such as clean,noise30 (repeatable).")
@click.option("--target", default=None, help="Target dataset of the cross protocol.")
@click.option("--target-root", type=click.Path(), default=None)
@click.option("--fer2013-root", type=click.Path(), default=None,
              help="FER2013 (fer2013.csv or the image-folder export) for protocol realnoise.")
@click.option("--extra", "extras", multiple=True, metavar="NAME=PATH[:image|:label]",
              help="Per-sample values for every training sample, keyed by sample id (.csv with "
                   "a header row, or .npz with arrays ids and values), given to methods as "
                   "extra NAME (repeatable). :image (the default): derived from the image "
                   "alone, e.g. a model's pseudo valence-arousal; :label: annotated with the "
                   "label, withheld under noise.")
@click.option("--seeds", default="0", show_default=True, help="Training seeds, e.g. 0,1,2.")
@click.option("--noise-seed", default=0, show_default=True, type=int)
@click.option("--preset", default=None,
              help="paper, quick, or another preset of the method (baseline: fast). "
                   "Default: quick on synthfer, paper on real datasets.")
@click.option("--epochs", type=click.IntRange(min=0), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--image-size", type=click.IntRange(min=8), default=None)
@click.option("--backbone", default=None, help="Any timm model name.")
@click.option("--weights", type=click.Path(), default=None, help="A local checkpoint file.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None)
@click.option("--out", default="results", show_default=True, type=click.Path())
@click.option("--resume", is_flag=True, help="Continue interrupted runs from their checkpoint.")
@click.option("--force", is_flag=True, help="Rerun runs that already have a result.")
@click.option("--no-leaderboard", is_flag=True)
@click.option("--grid", type=click.Path(), default=None,
              help="A grid file (datasets, methods, protocols, seeds) to run as one sweep.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Set a variable of the grid file (repeatable), e.g. --var ferplus=DIR.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Run this many cells at once, each in its own process (a sweep).")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default=None,
              help="Where a sweep's cells run: local worker processes, or a SLURM job array "
                   "(both through submitit).")
@click.option("--slurm", "slurm_settings", multiple=True, metavar="KEY=VALUE",
              help="A SLURM setting (repeatable): partition, gpus_per_task, cpus_per_task, "
                   "mem_gb, time_min, array_parallelism.")
@click.option("--dry-run", is_flag=True,
              help="Print the cells, how many are stored and the time still needed; run none.")
@click.option("--print-config", is_flag=True,
              help="Print each planned run's resolved config and run key as YAML; run none "
                   "and write nothing to --out.")
@click.argument("overrides", nargs=-1)
@click.pass_context
def run_cmd(click_ctx, methods, dataset, data_root, layout, label_order, options, protocols,
            target, target_root, fer2013_root, extras, seeds, noise_seed, preset, epochs,
            batch_size, image_size, backbone, weights, device, precision, out, resume, force,
            no_leaderboard, grid, variables, jobs, launcher, slurm_settings, dry_run,
            print_config, overrides):
    """Train and evaluate methods under protocols; store one result file per run.

    OVERRIDES are KEY=VALUE settings of the resolved config, e.g. lr=0.01 or
    engine.eval_every=2.

    With --grid, --jobs, --launcher or --dry-run the runs are a sweep: each in a
    process of its own, a failing run recorded while the others go on, interrupted
    runs continued from their checkpoints when the sweep starts again.
    """
    from .runner import RunRequest, run

    if print_config and dry_run:
        raise ConfigError("--print-config and --dry-run both plan without running: give one")
    if click_ctx.obj is not None and (grid or jobs or launcher or dry_run):
        click_ctx.obj["sweep"] = True   # an interrupted sweep resumes without --resume
    if grid:
        from click.core import ParameterSource

        if resume:
            raise ConfigError(f"--grid {grid}: a sweep always continues its interrupted runs "
                              f"from their checkpoints: run it again without --resume")
        if overrides:
            raise ConfigError(f"--grid {grid}: {overrides[0]!r}: KEY=VALUE settings belong in "
                              f"the grid file, under a method's `overrides:`")
        flag_names = {"methods": "--method", "protocols": "--protocol", "options": "-o",
                      "extras": "--extra"}
        given = [flag_names.get(p, f"--{p.replace('_', '-')}") for p in
                 ("methods", "dataset", "data_root", "layout", "label_order", "options",
                  "protocols", "target", "target_root", "fer2013_root", "extras", "seeds",
                  "noise_seed", "preset", "epochs", "batch_size", "image_size", "backbone",
                  "weights", "precision")
                 if click_ctx.get_parameter_source(p) != ParameterSource.DEFAULT]
        if given:
            raise ConfigError(f"--grid {grid}: the grid file says what to run; "
                              f"{', '.join(given)} belong in it (--device, --out, --jobs, "
                              f"--launcher, --force and --dry-run may be given)")
        out = out if click_ctx.get_parameter_source("out") != ParameterSource.DEFAULT else None
        if print_config:
            from .printconfig import configs_yaml, grid_configs

            click.echo(configs_yaml(grid_configs(grid, _pairs(variables, "--var"), device, out)))
            return
        return _sweep(grid, variables, jobs, launcher, slurm_settings, dry_run, force,
                      no_leaderboard, device, out)
    if variables:
        raise ConfigError("--var sets a variable of a grid file: give --grid FILE")

    opts = _parse_options(options, dataset, label_order)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected integers such as 0,1,2") from None
    if not seed_list or len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
        raise ConfigError(f"--seeds {seeds!r}: expected distinct integers >= 0 such as 0,1,2")
    flags = {"epochs": epochs, "batch_size": batch_size, "image_size": image_size,
             "backbone": backbone, "weights": weights, "device": device,
             "precision": precision}
    req = RunRequest(methods=list(methods), dataset=dataset, data_root=data_root,
                     layout=layout, data_options=opts, protocols=list(protocols) or ["clean"],
                     target=target, target_root=target_root,
                     fer2013_root=fer2013_root, extras=list(extras), seeds=seed_list,
                     noise_seed=noise_seed, preset=preset,
                     flags={k: v for k, v in flags.items() if v is not None},
                     overrides=list(overrides), out=out, resume=resume, force=force,
                     leaderboard=not no_leaderboard)
    if print_config:
        from .printconfig import configs_yaml, planned_configs

        click.echo(configs_yaml(planned_configs(req)))
        return
    if jobs or launcher or dry_run or slurm_settings:
        from .sweep import run_sweep

        summary = run_sweep([req], out, jobs=jobs or 1, launcher=launcher or "local",
                            slurm=_slurm(slurm_settings), dry_run=dry_run,
                            force=force, leaderboard=not no_leaderboard, gpus=_gpus(device))
        return _sweep_status(summary)
    run(req)


def _pairs(pairs, flag: str) -> dict:
    out = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE")
        out[k.strip()] = v.strip()  # text: the grid's vars and slurm settings type it
    return out


def _slurm(pairs) -> dict:
    from .slurm import settings_from_text

    return settings_from_text(_pairs(pairs, "--slurm"))


def _gpus(device: str | None) -> int:
    """GPUs to spread local workers over: all visible ones for --device cuda (no index)."""
    if device not in ("cuda", "auto", None):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _sweep_status(summary) -> int:
    if summary is None:
        return 0
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


def _sweep(grid, variables, jobs, launcher, slurm_settings, dry_run, force, no_leaderboard,
           device, out):
    from .grid import load_grid
    from .sweep import run_sweep

    g = load_grid(grid, _pairs(variables, "--var"))
    if device:
        for req in g.requests:
            req.flags["device"] = device
    slurm = {**g.slurm, **_slurm(slurm_settings)}
    summary = run_sweep(g.requests, out or g.out, jobs=jobs or 1,
                        launcher=launcher or "local", slurm=slurm, dry_run=dry_run,
                        force=force, leaderboard=not no_leaderboard,
                        leaderboard_out=g.leaderboard, gpus=_gpus(device), origins=g.origins)
    return _sweep_status(summary)


@cli.command("leaderboard")
@click.argument("results_dir", default="results", type=click.Path())
@click.option("--out", default=None, type=click.Path(), help="Folder for the tables and figures.")
@click.option("--format", "formats", default="md", show_default=True,
              help="Table formats, a comma list of md, csv, latex, jsonl.")
@click.option("--figure-format", "figure_formats", default="png", show_default=True,
              help="Figure formats, a comma list of png, pdf, svg.")
def leaderboard_cmd(results_dir, out, formats, figure_formats):
    """Tables (markdown, CSV, JSON lines, LaTeX), a runs index and figures from stored
    result files."""
    from .exports import FIGURE_FORMATS, FORMATS, parse_formats
    from .leaderboard import build_leaderboard

    formats = parse_formats(formats, FORMATS, "--format")
    figure_formats = parse_formats(figure_formats, FIGURE_FORMATS, "--figure-format")
    board = build_leaderboard(results_dir, out, formats=formats, figure_formats=figure_formats)
    written = ", ".join(p.name for p in board["files"])
    click.echo(f"leaderboard written to {Path(board['files'][0]).parent}: {written} "
               f"({len(board['plots'])} figure files)")
    for path, why in board["skipped"]:
        click.echo(f"ferbench: warning: {path}: skipped, {why}", err=True)


def main(argv=None):
    """Console entry point: usage errors, like input errors, are one line and exit status 2."""
    try:
        rv = cli.main(args=argv, prog_name="ferbench", standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:
        hint = f" (see: ferbench {e.ctx.command_path.split(' ', 1)[1]} --help)" \
            if e.ctx and " " in e.ctx.command_path else ""
        click.echo(f"ferbench: error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("ferbench: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    sys.exit(main())
