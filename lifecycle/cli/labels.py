"""Commands for people's labels: label-requests, feedback."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lifecycle.cli.common import (
    SpecialistsFileOption,
    _context,
    _friendly,
    _open_store,
    _served_versions,
    app,
)


@app.command("label-requests")
@_friendly
def label_requests(
    specialist: str = typer.Option(..., "--specialist", "-s", help="Specialist to look at."),
    limit: int = typer.Option(100, min=1, max=10_000, help="Most requests listed."),
    export: str = typer.Option(
        "csv", "--export", help="csv (request_id,text,reason,predicted,label) or labelstudio."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here (default: stdout)."),
    specialists_file: Path | None = SpecialistsFileOption,
) -> None:
    """The requests most worth a person's label, ranked, as a file to label.

    Out-of-scope requests spread across their clusters, champion/challenger disagreements in
    shadow, the least confident answers and requests answered with a label that surges against
    the champion's reference rows (a new intent may hide in it), in turn, from the champion's
    newest window (`monitoring.window_size`); requests a person labelled already are left out.
    Reads the traffic store and the registry directly. Label the file, then send it back with
    `lifecycle feedback -s NAME --file FILE`. With LIFECYCLE_STORE_TEXT hash or none the file
    holds request ids only.
    """
    from lifecycle.labels.files import FORMATS, export_csv, export_labelstudio
    from lifecycle.labels.requests import label_requests as ranked

    if export not in FORMATS:
        raise typer.BadParameter(f"--export must be one of {', '.join(FORMATS)}")
    settings, specs = _context(specialists_file)
    spec = specs.get(specialist)
    versions = _served_versions(settings, specialist)
    shares = None
    if spec.task == "classification":
        from lifecycle.labels.requests import reference_shares
        from lifecycle.registry.models import Registry

        try:
            reference = Registry(settings).reference_rows(specialist, versions["champion"])
            shares = reference_shares(reference)
        except Exception as exc:  # no reference to read: the other three queues still rank
            typer.echo(f"note: no surge queue ({exc})", err=True)
    store = _open_store(settings)
    try:
        found = ranked(
            store,
            spec,
            champion_version=versions["champion"],
            challenger_version=versions.get("challenger"),
            store_text=settings.store_text,
            limit=limit,
            expected_shares=shares,
        )
    finally:
        store.dispose()
    text = export_csv(found.items) if export == "csv" else export_labelstudio(found.items)
    if found.text_withheld:
        typer.echo(f"note: {found.note}", err=True)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{len(found.items)} label requests written to {out}", err=True)


@app.command("feedback")
@_friendly
def feedback(
    specialist: str = typer.Option(..., "--specialist", "-s", help="Specialist labelled."),
    file: Path = typer.Option(
        ..., "--file", help="labels.csv (request_id,label) or a Label Studio JSON export."
    ),
    source: str = typer.Option("human", help="Who labelled: human or fallback."),
    strict: bool = typer.Option(
        False, "--strict", help="Any rejected row refuses the whole file (nothing written)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the per-row report as JSON."),
    specialists_file: Path | None = typer.Option(
        None,
        "--specialists-file",
        help="Specialists YAML file (default: LIFECYCLE_SPECIALISTS_FILE or specialists.yaml).",
    ),
) -> None:
    """Send people's labels in bulk, with the rules of the gateway's feedback route.

    Every row is checked first (request ids this specialist answered, label form, a closed
    label set, the cap on proposed labels); then the accepted rows are written to the traffic
    store in one transaction. Rows without a label are skipped. Exit status: 0 all written,
    2 written but some rows rejected (listed), 1 nothing written (`--strict`, or an error).
    """
    from lifecycle.labels.feedback import LabelSet, known_labels
    from lifecycle.labels.files import apply_label_file, read_label_file

    if source not in ("human", "fallback"):
        raise typer.BadParameter("--source must be human or fallback")
    settings, specs = _context(specialists_file)
    spec = specs.get(specialist)
    if spec.task == "extraction":
        from lifecycle.config.errors import ConfigError

        raise ConfigError(
            f"{specialist!r} is an extraction specialist: label files hold one label per "
            f"request; send its true spans through POST /v1/specialists/{specialist}/feedback "
            "with entities"
        )
    rows = read_label_file(file)
    versions = _served_versions(settings, specialist)
    store = _open_store(settings)
    try:
        known = known_labels(
            champion=versions["labels"]["champion"],
            challenger=versions["labels"].get("challenger", []),
            declared=spec.labels,
            out_of_scope_label=spec.out_of_scope_label,
        )
        labels = LabelSet(
            specialist=specialist,
            known=known,
            open=spec.labels_policy == "open",
            stored_proposed=frozenset(set(store.label_counts(specialist, source=None)) - known),
            max_proposed=settings.max_proposed_labels,
        )
        report = apply_label_file(store, rows, labels=labels, source=source, strict=strict)
    finally:
        store.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for r in report.rejected:
            typer.echo(f"row {r.row}: rejected ({r.status}): {r.reason}")
        proposed = report.as_dict()["proposed_labels"]
        typer.echo(
            f"{report.written} labels written, {len(report.rejected)} rows rejected, "
            f"{len(report.skipped)} without a label skipped"
            + (f"; proposed labels: {', '.join(proposed)}" if proposed else "")
            + ("; --strict: nothing written" if report.refused_whole_file else "")
        )
    if report.refused_whole_file:
        raise typer.Exit(1)
    if report.rejected:
        raise typer.Exit(2)
