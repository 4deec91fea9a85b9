"""``edgeq history`` and ``edgeq report``: trends over nights, and pages people read."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import click

from edgeq.cli.common import check_not_an_input, console, db_option, diagnostics, load_run, output_file, result_line, \
    write_json_file
from edgeq.errors import EXIT_GATE, ConfigError


@click.command()
@db_option
@click.option("--device", help="Only this device.")
@click.option("--model", help="Only this model (name or sha256 prefix).")
@click.option("--kind", type=click.Choice(["evaluate", "run", "soak"]), help="Only this kind of run.")
@click.option("--last", type=click.IntRange(min=1), help="Only the last N runs of each series.")
@click.option("--baseline", type=click.Choice(["median", "first", "previous"]), default="median", show_default=True,
              help="What each run is compared with: median of the previous 7, the first, or the previous run.")
@click.option("--json", "json_path", type=output_file, help="Write the series as JSON here (- for stdout).")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when the newest run of a series regressed.")
def history(db, device, model, kind, last, baseline, json_path, fail_on_regression):
    """Trends per device and model (latency, energy, accuracy drop) and regressions vs a baseline."""
    from edgeq.store.history import flag_regressions, series, sparkline
    from edgeq.store.db import Store

    with Store.open(db) as store:
        records = store.query(device=device, model=model, kind=kind)
        location, skipped = store.shown, store.skipped
    note_skipped(skipped, location)
    out = console()
    payload, newest_regressed = [], []
    for key, runs in series(records).items():
        runs = runs[-last:] if last else runs
        points = flag_regressions(runs, baseline)
        print_series(out, key, points)
        payload.append({"device": key[0], "model_sha256": key[1], "runtime": key[2], "resolver": key[3],
                        "threads": key[4], "runs": [dict(_row(p.record), flags=p.flags) for p in points]})
        if points[-1].regressed:
            newest_regressed.append(_text(key[0]))
        out.print(f"  p99 trend {sparkline([p.record.p99_ms for p in points])}   "
                  f"drop trend {sparkline([p.record.accuracy_drop for p in points])}\n")
    if not records:
        out.print(f"no runs recorded in {location}")
    write_json_file(json_path, {"database": location, "baseline": baseline, "series": payload,
                                "skipped_rows": [{"id": i, "reason": why} for i, why in skipped]})
    if fail_on_regression and newest_regressed:
        out.print(f"[red]newest run regressed on: {', '.join(newest_regressed)}[/]")
        sys.exit(EXIT_GATE)


def note_skipped(skipped: list, location: str) -> None:
    """One note on stderr for the rows a query left out (not an error: the rest is shown)."""
    if skipped:
        ids = ", ".join(i for i, _ in skipped[:5]) + (", …" if len(skipped) > 5 else "")
        diagnostics().print(f"note: {len(skipped)} row(s) of {location} skipped: {skipped[0][1]} (id {ids})",
                            highlight=False, markup=False, soft_wrap=True)


def _row(record) -> dict:
    from dataclasses import asdict

    row = asdict(record)
    row.pop("payload", None)
    return row


def print_series(out, key: tuple, points) -> None:
    from rich.table import Table

    device, sha, runtime, resolver, threads = (_text(part) for part in key)
    name = points[-1].record.model_name or "model"
    table = Table(title=f"{device} · {name} ({sha[:12]}) · {runtime} · {resolver} · {threads} thread(s)",
                  title_justify="left")
    for column in ("time (UTC)", "kind", "verdict", "drop", "p50 ms", "p99 ms", "mJ/inf", "regression"):
        table.add_column(column)
    for p in points:
        r = p.record
        table.add_row(_when(r.created), r.kind or "—", r.verdict or "—", _num(r.accuracy_drop, "{:.1%}"),
                      _num(r.p50_ms, "{:.3f}"), _num(r.p99_ms, "{:.3f}"), _num(r.energy_mj, "{:.3g}"),
                      "[red]" + "; ".join(p.flags) + "[/]" if p.flags else "")
    out.print(table)


def _num(value, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def _text(value) -> str:
    return "—" if value is None or value == "" else str(value)


def _when(created) -> str:
    try:
        return _dt.datetime.fromtimestamp(created, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):  # a time no calendar has
        return "—"


@click.command()
@click.argument("source")
@click.option("-o", "--output", type=output_file, required=True, help="HTML file to write.")
@click.option("--baseline", type=click.Choice(["median", "first", "previous"]), default="median")
def report(source, output, baseline):
    """Write an HTML page for SOURCE: an evaluate output folder, a run pair, or a results database."""
    path = Path(source)
    if "://" in source or (path.is_file() and path.suffix in (".sqlite", ".db", ".sqlite3")):
        from edgeq.reports.history_page import write_history
        from edgeq.store.db import Store, redact_url

        if "://" not in source:
            check_not_an_input(output, "--output", [("SOURCE", path)])
        with Store.open(source) as store:
            records, skipped = store.query(), store.skipped
        note_skipped(skipped, redact_url(source))
        write_history(records, output, baseline, skipped=len(skipped))
    elif (path / "report.json").is_file():
        _rerender(path, output)
    else:
        from edgeq.store.db import redact_url

        raise ConfigError(f"{redact_url(source)}: not an evaluate output folder (no report.json) or a results "
                          "database")
    result_line(f"wrote {output}")


VERDICTS = ("robust", "degraded", "catastrophic", None)


def read_report(path: Path) -> dict:
    """report.json as evaluate writes it, or ConfigError (exit 2) naming the file and what is wrong:
    a page drawn from anything else would look like a verdict that was never reached."""
    try:
        report = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:80]}): not an edgeq report") from None
    if not isinstance(report, dict):
        raise ConfigError(f"{path}: a JSON {type(report).__name__}, not an object: not an edgeq report")
    if "verdict" not in report:
        raise ConfigError(f"{path}: no 'verdict': not an edgeq report")
    if report["verdict"] not in VERDICTS:
        raise ConfigError(f"{path}: 'verdict' is {report['verdict']!r}, expected one of robust, degraded, "
                          "catastrophic or null")
    if not isinstance(report.get("categories"), dict) and not isinstance(report.get("fleet"), dict):
        raise ConfigError(f"{path}: no 'categories' (per-category results) and no 'fleet': not an edgeq report")
    for key in ("overall", "categories", "fleet", "runs", "device", "latency_ms", "model"):
        if key in report and report[key] is not None and not isinstance(report[key], dict):
            raise ConfigError(f"{path}: '{key}' is a {type(report[key]).__name__}, expected an object")
    return report


def _rerender(folder: Path, output: Path) -> None:
    from edgeq.reports.report import write_report_html

    source = folder / "report.json"
    check_not_an_input(output, "--output", [("SOURCE", source)])
    report = read_report(source)
    found = {}
    for which in ("float", "quant"):
        given = (report.get("runs") or {}).get(which)
        run_dir = Path(given) if isinstance(given, str) and given else folder / "runs" / which
        if (run_dir / "manifest.json").exists():
            found[which] = run_dir
    check_not_an_input(output, "--output", folders=[(f"the {which} run", d) for which, d in found.items()])
    write_report_html(output, report, {which: load_run(run_dir) for which, run_dir in found.items()})
