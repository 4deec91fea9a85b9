"""``edgeq history`` and ``edgeq report``: trends over nights, and pages people read."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import click

from edgeq.cli.common import console, load_run, output_file, write_json_file
from edgeq.errors import EXIT_GATE, ConfigError


@click.command()
@click.option("--db", envvar="EDGEQ_DB", help="Results database (SQLite path or SQLAlchemy URL).")
@click.option("--device", help="Only this device.")
@click.option("--model", help="Only this model (name or sha256 prefix).")
@click.option("--kind", type=click.Choice(["evaluate", "run", "soak"]), help="Only this kind of run.")
@click.option("--last", type=int, help="Only the last N runs of each series.")
@click.option("--baseline", type=click.Choice(["median", "first", "previous"]), default="median", show_default=True,
              help="What each run is compared with: median of the previous 7, the first, or the previous run.")
@click.option("--json", "json_path", type=output_file)
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when the newest run of a series regressed.")
def history(db, device, model, kind, last, baseline, json_path, fail_on_regression):
    """Trends per device and model (latency, energy, accuracy drop) and regressions vs a baseline."""
    from edgeq.store.history import flag_regressions, series, sparkline
    from edgeq.store.db import Store

    with Store.open(db) as store:
        records = store.query(device=device, model=model, kind=kind)
        location = store.location
    out = console()
    payload, newest_regressed = [], []
    for key, runs in series(records).items():
        runs = runs[-last:] if last else runs
        points = flag_regressions(runs, baseline)
        print_series(out, key, points)
        payload.append({"device": key[0], "model_sha256": key[1], "runtime": key[2], "resolver": key[3],
                        "threads": key[4], "runs": [dict(_row(p.record), flags=p.flags) for p in points]})
        if points[-1].regressed:
            newest_regressed.append(key[0])
        out.print(f"  p99 trend {sparkline([p.record.p99_ms for p in points])}   "
                  f"drop trend {sparkline([p.record.accuracy_drop for p in points])}\n")
    if not records:
        out.print(f"no runs recorded in {location}")
    write_json_file(json_path, {"database": location, "baseline": baseline, "series": payload})
    if fail_on_regression and newest_regressed:
        out.print(f"[red]newest run regressed on: {', '.join(newest_regressed)}[/]")
        sys.exit(EXIT_GATE)


def _row(record) -> dict:
    from dataclasses import asdict

    row = asdict(record)
    row.pop("payload", None)
    return row


def print_series(out, key: tuple, points) -> None:
    from rich.table import Table

    device, sha, runtime, resolver, threads = key
    name = points[-1].record.model_name or "model"
    table = Table(title=f"{device} · {name} ({(sha or '')[:12]}) · {runtime} · {resolver} · {threads} thread(s)",
                  title_justify="left")
    for column in ("time (UTC)", "kind", "verdict", "drop", "p50 ms", "p99 ms", "mJ/inf", "regression"):
        table.add_column(column)
    for p in points:
        r = p.record
        table.add_row(_dt.datetime.fromtimestamp(r.created, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), r.kind,
                      r.verdict or "—", _num(r.accuracy_drop, "{:.1%}"), _num(r.p50_ms, "{:.3f}"),
                      _num(r.p99_ms, "{:.3f}"), _num(r.energy_mj, "{:.3g}"),
                      "[red]" + "; ".join(p.flags) + "[/]" if p.flags else "")
    out.print(table)


def _num(value, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


@click.command()
@click.argument("source")
@click.option("-o", "--output", type=output_file, required=True, help="HTML file to write.")
@click.option("--baseline", type=click.Choice(["median", "first", "previous"]), default="median")
def report(source, output, baseline):
    """Write an HTML page for SOURCE: an evaluate output folder, a run pair, or a results database."""
    path = Path(source)
    if "://" in source or (path.is_file() and path.suffix in (".sqlite", ".db", ".sqlite3")):
        from edgeq.reports.history_page import write_history
        from edgeq.store.db import Store

        with Store.open(source) as store:
            write_history(store.query(), output, baseline)
    elif (path / "report.json").is_file():
        _rerender(path, output)
    else:
        raise ConfigError(f"{source}: not an evaluate output folder (no report.json) or a results database")
    click.echo(f"wrote {output}")


def _rerender(folder: Path, output: Path) -> None:
    from edgeq.reports.report import write_report_html
    report = json.loads((folder / "report.json").read_text())
    runs = {}
    for which in ("float", "quant"):
        run_dir = Path(report.get("runs", {}).get(which, folder / "runs" / which))
        if (run_dir / "manifest.json").exists():
            runs[which] = load_run(run_dir)
    write_report_html(output, report, runs)
