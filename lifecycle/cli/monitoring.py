"""Commands that watch traffic: monitor, discover."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lifecycle.cli.common import (
    SpecialistsFileOption,
    _context,
    _friendly,
    _parse_time,
    _setup_logging,
    app,
)


@app.command()
@_friendly
def monitor(
    specialist: str = typer.Option(..., "--specialist", "-s", help="Specialist to check."),
    last: int | None = typer.Option(
        None, min=1, help="Check the newest N requests (default: the spec's window_size)."
    ),
    since: str | None = typer.Option(
        None, help="Check requests from this ISO time on (UTC if no zone), instead of --last."
    ),
    until: str | None = typer.Option(None, help="... and before this ISO time."),
    alert: bool = typer.Option(True, help="Send the alert (webhooks in LIFECYCLE_ALERT_WEBHOOKS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
    specialists_file: Path | None = SpecialistsFileOption,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run one monitoring check now and print the verdict table.

    Compares a window of the champion's traffic (from the traffic store) with the
    reference it was validated on: text, embedding, prediction and confidence drift
    with Evidently, against thresholds calibrated for the spec's false-alarm rate;
    accuracy where people's labels arrived, and estimated accuracy where not. The
    Evidently report and the metrics go to the specialist's MLflow monitoring run.
    Verdicts: OK, WARN, DRIFT, QUALITY_DROP (retrain), NEEDS_LABELS, NEEDS_DATA.
    """
    _setup_logging(verbose)
    settings, specs = _context(specialists_file)
    spec = specs.get(specialist)
    window = {"since": _parse_time(since, "--since"), "until": _parse_time(until, "--until")}
    if last is None and window["since"] is None and window["until"] is None:
        last = spec.monitoring.window_size
    from monitors.check import run_check
    from monitors.message import alert_message
    from monitors.table import verdict_table

    result = run_check(settings, spec, last=last, alert=alert, **window)
    verdict = result.verdict
    if as_json:
        payload = verdict.as_dict()
        payload["alert"] = None if result.alert is None else result.alert.status
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    typer.echo(verdict_table(verdict, actions=alert_message(spec, verdict).actions))
    if result.alert is not None:
        typer.echo(f"alert: {result.alert.status} ({result.alert.delivered} webhook(s) accepted)")


@app.command()
@_friendly
def discover(
    specialist: str = typer.Option(..., "--specialist", "-s", help="Specialist to look at."),
    last: int | None = typer.Option(
        None, min=1, help="The newest N requests (default: the spec's window_size)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the clusters as JSON."),
    specialists_file: Path | None = SpecialistsFileOption,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Cluster the newest window's requests that look out of scope to the champion.

    The rows clustered are those scoring past the 80th percentile of the champion's
    in-scope scores (a looser cut than the out-of-scope flag, so that a new intent near
    known ones is seen whole).

    Each cluster of new traffic gets its size and share, its top terms (class-based
    TF-IDF), representative texts and the nearest known label. A label the champion now
    gives far more often than on its reference adds one more group, "answered as" that
    label: its unflagged answers beyond its usual share, where a new intent close to a
    known one hides. With LIFECYCLE_STORE_TEXT
    hash or none, only counts (no texts, no terms) are shown. Logs nothing and alerts no
    one: the scheduled monitor check logs the same table and map to MLflow.
    """
    _setup_logging(verbose)
    settings, specs = _context(specialists_file)
    spec = specs.get(specialist)
    from monitors.check import run_check

    verdict = run_check(
        settings, spec, last=last or spec.monitoring.window_size, alert=False, log=False
    ).verdict
    found = verdict.discovery
    if found is None:
        why = "; ".join(r.detail for r in verdict.reasons) or "no embeddings in the window"
        typer.echo(f"{specialist}: nothing to discover ({verdict.status.value}: {why})", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    typer.echo(
        f"{specialist} v{verdict.champion_version}: {verdict.window.get('rows', 0)} requests, "
        f"{verdict.window.get('out_of_scope', 0)} out of scope"
    )
    typer.echo(f"new traffic: {found['headline']}")
    from monitors.table import nearest_cell, render_table

    clusters = found["clusters"]
    if not clusters:
        return
    typer.echo(
        render_table(
            ("#", "requests", "share", "terms", "nearest label"),
            [
                (
                    c["id"],
                    c["size"],
                    f"{c['share']:.1%}",
                    ", ".join(c["top_terms"][:6]) or "-",
                    nearest_cell(c),
                )
                for c in clusters
            ],
            right=("#", "requests", "share"),
        )
    )
    examples = [(c["id"], repr(e)) for c in clusters for e in c["examples"]]
    if examples:
        typer.echo("")
        typer.echo(render_table(("#", "example"), examples, right=("#",)))
