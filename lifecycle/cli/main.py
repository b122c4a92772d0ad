"""The ``lifecycle`` command line.

Start-up stays fast: each command imports the heavy libraries it needs inside
its own body. Errors a user can fix print one line and exit with status 1.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from lifecycle.config.errors import LifecycleError

app = typer.Typer(
    name="lifecycle",
    help=(
        "Keep task-specific LoRA specialists good in production: train and register them in "
        "MLflow, serve them, watch their traffic for drift, retrain, shadow, promote, "
        "roll back.\n\n"
        "State lives under LIFECYCLE_HOME (default ./.lifecycle); MLflow is at MLFLOW_TRACKING_URI "
        "(default: a sqlite db there). Specialists are declared in specialists.yaml."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown: docstring lines wrapped in the source join into paragraphs in --help.
    rich_markup_mode="markdown",
)

F = TypeVar("F", bound=Callable[..., Any])

SpecialistsFileOption = typer.Option(
    None,
    "--file",
    "-f",
    help="Specialists YAML file (default: LIFECYCLE_SPECIALISTS_FILE or specialists.yaml).",
)


def _friendly(func: F) -> F:
    """Print a LifecycleError as one line on stderr and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LifecycleError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _context(specialists_file: Path | None) -> tuple[Any, Any]:
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists

    settings = load_settings(specialists_file=specialists_file)
    return settings, load_specialists(settings.specialists_file)


@app.command()
@_friendly
def train(
    specialist: str | None = typer.Option(
        None, "--specialist", "-s", help="Specialist to train (default: every one in the file)."
    ),
    data: Path | None = typer.Option(
        None, help="CSV, JSONL or Parquet file of text and label, instead of the spec's data."
    ),
    text_column: str = typer.Option("text", help="Text column of --data."),
    label_column: str = typer.Option("label", help="Label column of --data."),
    alias: str | None = typer.Option(
        None,
        help="Alias for the new version (default: champion for a first version, else challenger).",
    ),
    specialists_file: Path | None = SpecialistsFileOption,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train specialists with LoRA and register each as a new MLflow model version.

    The first version of a specialist becomes its champion; later versions become
    the challenger, to be shadowed and promoted through the gate.
    """
    _setup_logging(verbose)
    settings, specs = _context(specialists_file)
    from lifecycle.registry.models import ALIASES
    from lifecycle.training.pipeline import train_and_register

    if alias is not None and alias not in ALIASES:
        raise typer.BadParameter(f"must be one of {', '.join(ALIASES)}", param_hint="--alias")
    chosen = [specs.get(specialist)] if specialist else list(specs.specialists)
    frame = None
    if data is not None:
        if len(chosen) != 1:
            raise typer.BadParameter("--data needs --specialist when the file declares several")
        from lifecycle.training.data import load_table

        frame = load_table(data, text_column=text_column, label_column=label_column)
    for spec in chosen:
        trained = train_and_register(settings, spec, data=frame, alias=alias)
        ev = trained.result.evaluation
        typer.echo(
            f"{spec.name}: registered version {trained.version.version} as {trained.alias} | "
            f"val accuracy {ev.accuracy:.4f} | macro-F1 {ev.macro_f1:.4f} | "
            f"calibration error {ev.calibration_error:.4f} | "
            f"{len(trained.result.meta.labels)} labels | "
            f"{trained.result.seconds:.0f} s"
        )
    typer.echo(f"MLflow UI: mlflow ui --backend-store-uri {settings.tracking_uri}")


@app.command()
@_friendly
def status(
    specialist: str | None = typer.Option(None, "--specialist", "-s", help="Only this specialist."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    specialists_file: Path | None = SpecialistsFileOption,
) -> None:
    """Show each specialist's registered versions, aliases and key metrics."""
    settings, specs = _context(specialists_file)
    from lifecycle.registry.models import Registry

    registry = Registry(settings)
    names = [specialist] if specialist else [s.name for s in specs.specialists]
    report: list[dict[str, Any]] = []
    for name in names:
        if specialist:
            specs.get(name)
        if not registry.has_model(name):
            report.append({"specialist": name, "versions": [], "note": "not trained yet"})
            continue
        rows = []
        known: list[str] = []
        for info in registry.versions(name):
            if "champion" in info.aliases:
                known = json.loads(info.lineage.get("labels", "[]") or "[]")
            metrics = registry.run_metrics(info.run_id)
            rows.append(
                {
                    "version": info.version,
                    "aliases": list(info.aliases),
                    "trigger": info.lineage.get("trigger", ""),
                    "parent": info.lineage.get("parent_version", ""),
                    "n_labels": info.lineage.get("n_labels", ""),
                    "val_accuracy": metrics.get("val.accuracy"),
                    "val_macro_f1": metrics.get("val.macro_f1"),
                    "calibration_error": metrics.get("val.calibration_error"),
                }
            )
        traffic = _traffic(settings, name, known_labels=known)
        # Labels people gave that the champion does not know, with their counts.
        proposed = traffic.pop("proposed_labels", {}) if traffic else {}
        report.append(
            {"specialist": name, "versions": rows, "traffic": traffic, "proposed_labels": proposed}
        )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"registry: {settings.tracking_uri}")
    for entry in report:
        typer.echo(f"\n{entry['specialist']}")
        if not entry["versions"]:
            typer.echo(f"  {entry.get('note', 'no versions')}")
            continue
        typer.echo(
            f"  {'version':>7}  {'aliases':<22} {'trigger':<9} {'parent':>6} {'labels':>6} "
            f"{'accuracy':>8} {'macro-F1':>8} {'ECE':>6}"
        )
        traffic = entry.get("traffic")
        if traffic:
            typer.echo(
                f"  traffic: {traffic['requests']} requests, {traffic['escalations']} escalated "
                f"({traffic['escalation_rate']:.1%}), {traffic['feedback']} labels | "
                f"est. cost per 1k requests {traffic['cost_per_1k']:.4f} "
                f"vs {traffic['fallback_only_per_1k']:.4f} fallback only"
            )
            typer.echo(f"  {_per_correct_line(traffic)}")
        if entry.get("proposed_labels"):
            shown = ", ".join(f"{k} ({n})" for k, n in entry["proposed_labels"].items())
            typer.echo(f"  proposed labels (people's labels the champion does not know): {shown}")
        for row in entry["versions"]:
            typer.echo(
                f"  {row['version']:>7}  {','.join(row['aliases']) or '-':<22} {row['trigger']:<9} "
                f"{row['parent'] or '-':>6} {row['n_labels']:>6} {_fmt(row['val_accuracy']):>8} "
                f"{_fmt(row['val_macro_f1']):>8} {_fmt(row['calibration_error']):>6}"
            )


@app.command()
@_friendly
def serve(
    host: str | None = typer.Option(None, help="Address to listen on (default: LIFECYCLE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default: LIFECYCLE_PORT, 8080)."),
    specialists_file: Path | None = SpecialistsFileOption,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Start the gateway: every specialist's champion (and challenger, in shadow) on one base model.

    Needs LIFECYCLE_ADMIN_TOKEN for the admin routes (or LIFECYCLE_INSECURE_DEV=true on a
    development machine). Serves /v1/specialists/NAME/predict, .../feedback, /metrics,
    /healthz, /readyz, and the OpenAPI docs at /docs.
    """
    _setup_logging(verbose)
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists

    settings = load_settings(specialists_file=specialists_file, host=host, port=port)
    specs = load_specialists(settings.specialists_file)
    # MLflow's client retries an unreachable server for minutes by default; the gateway's
    # poller should notice an outage in seconds and keep serving (unless the user says else).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import uvicorn

    from lifecycle.serving.app import create_app

    app_ = create_app(settings, specs)
    uvicorn.run(
        app_,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        timeout_keep_alive=int(settings.keep_alive_s),
    )


@app.command()
@_friendly
def promote(
    specialist: str = typer.Option(..., "--specialist", "-s", help="Specialist to promote."),
    force: bool = typer.Option(
        False, "--force", help="Promote now, without the statistical gate (recorded)."
    ),
    version: int | None = typer.Option(
        None,
        min=1,
        help="With --force: promote this version instead of the challenger (e.g. one the "
        "gate rejected).",
    ),
    reason: str = typer.Option("manual override", help="Recorded on the promoted version."),
    specialists_file: Path | None = SpecialistsFileOption,
) -> None:
    """Run the promotion gate on the challenger now, or force a promotion past it.

    Without --force: the promote flow once (the paired test on labelled shadowed requests,
    then errors and latency); it promotes, rejects or waits, alerts and prints the decision.
    With --force: the challenger (or --version) becomes the champion, the old champion
    'previous'; the guardrail then watches it like any promotion.
    """
    settings, specs = _context(specialists_file)
    specs.get(specialist)
    if not force:
        if version is not None:
            raise typer.BadParameter(
                "the gate judges the challenger; --version needs --force", param_hint="--version"
            )
        os.environ["LIFECYCLE_SPECIALISTS_FILE"] = str(settings.specialists_file)
        _prefect_env(settings)
        from flows.promote import promote_flow

        typer.echo(json.dumps(promote_flow(specialist), indent=2, default=str))
        return
    from lifecycle.registry.models import Registry

    aliases = Registry(settings).promote(specialist, reason=f"forced: {reason}", version=version)
    typer.echo(f"{specialist}: " + ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())))


@app.command()
@_friendly
def rollback(
    specialist: str = typer.Option(..., "--specialist", "-s", help="Specialist to roll back."),
    reason: str = typer.Option("manual rollback", help="Recorded on the rolled-back version."),
    specialists_file: Path | None = SpecialistsFileOption,
) -> None:
    """Make the 'previous' version the champion again; gateways pick it up on their next poll."""
    settings, specs = _context(specialists_file)
    specs.get(specialist)
    from lifecycle.registry.models import Registry

    aliases = Registry(settings).rollback(specialist, reason=reason)
    typer.echo(f"{specialist}: " + ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())))


def _traffic(
    settings: Any, name: str, *, known_labels: list[str] | None = None
) -> dict[str, Any] | None:
    """Counts, estimated cost and proposed labels (people's labels outside ``known_labels``)
    from the traffic store, when there is one to read."""
    from lifecycle.labels.feedback import proposed_labels
    from lifecycle.serving.cost import (
        OUTCOME_WINDOW,
        OutcomeCounts,
        cost_per_correct,
        estimate_cost,
    )

    url = settings.traffic_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    from lifecycle.store import TrafficStore

    store = TrafficStore(url)
    try:
        counts = store.counts(name)
        outcomes = OutcomeCounts(**store.outcome_counts(name, last=OUTCOME_WINDOW))
        proposed = proposed_labels(store.label_counts(name), known_labels or ())
    except Exception as exc:  # the store is optional for status: say so, do not fail
        logging.getLogger(__name__).warning("traffic store unreadable: %s", exc)
        return None
    finally:
        store.dispose()
    cost = estimate_cost(
        requests=counts["requests"],
        escalations=counts["escalations"],
        specialist_price_per_1k=settings.specialist_price_per_1k,
        fallback_price_per_1k=settings.fallback_price_per_1k,
    )
    right = cost_per_correct(
        outcomes,
        specialist_price_per_1k=settings.specialist_price_per_1k,
        fallback_price_per_1k=settings.fallback_price_per_1k,
        fallback_accuracy=settings.fallback_accuracy,
    )
    return {
        **counts,
        "escalation_rate": cost.escalation_rate,
        "cost_per_1k": cost.per_1k,
        "fallback_only_per_1k": cost.fallback_only_per_1k,
        # Over the newest OUTCOME_WINDOW requests: see lifecycle.cost.cost_per_correct.
        "cost_per_correct": right.per_correct,
        "fallback_only_cost_per_correct": right.fallback_only_per_correct,
        "correct_measured_on": right.correct_measured_on,
        "answer_accuracy": right.accuracy,
        "fallback_accuracy": right.fallback_accuracy,
        "fallback_accuracy_measured_on": right.fallback_accuracy_measured_on,
        "outcome_requests": outcomes.requests,
        "proposed_labels": proposed,
    }


def _per_correct_line(traffic: dict[str, Any]) -> str:
    """The cost per correct answer beside the fallback's, and what it rests on."""
    per_correct = traffic["cost_per_correct"]
    fallback_only = traffic["fallback_only_cost_per_correct"]
    measured = traffic["fallback_accuracy_measured_on"]
    fallback = f"{traffic['fallback_accuracy']:.0%} " + (
        f"measured on {measured} labels" if measured else "assumed (LIFECYCLE_FALLBACK_ACCURACY)"
    )
    if per_correct is None:
        head = "est. cost per correct answer: unknown (no answers yet)"
    else:
        head = f"est. cost per correct answer {per_correct:.6f}"
    tail = f" vs {fallback_only:.6f} fallback only" if fallback_only is not None else ""
    accuracy = traffic["answer_accuracy"]
    basis = (
        f"newest {traffic['outcome_requests']} requests, "
        + (f"{accuracy:.1%} right, " if accuracy is not None else "")
        + f"{traffic['correct_measured_on']} checked by people; fallback accuracy {fallback}"
    )
    return f"{head}{tail} ({basis})"


@app.command()
@_friendly
def simulate(
    specialist: str = typer.Option(
        ..., "--specialist", "-s", help="Specialist to send traffic to."
    ),
    url: str = typer.Option("http://127.0.0.1:8080", help="The gateway's base URL."),
    scenario: str = typer.Option(
        "stationary",
        help="Built-in drift scenario: stationary, new_intent, vocabulary_shift, prior_shift.",
    ),
    data: Path | None = typer.Option(
        None, help="A real dataset (CSV/JSONL/Parquet): some intents held out, then released."
    ),
    label_column: str = typer.Option("label", help="Label column of --data."),
    holdout: int = typer.Option(5, help="Intents of --data held out and released as the drift."),
    n_before: int = typer.Option(500, help="Texts before the drift's onset."),
    n_after: int = typer.Option(1000, help="Texts after the onset."),
    texts_per_request: int = typer.Option(1, min=1, help="Texts per predict call."),
    feedback_share: float = typer.Option(0.3, min=0, max=1, help="Share of texts labelled later."),
    feedback_delay: int = typer.Option(50, min=0, help="Requests between an answer and its label."),
    rate: float = typer.Option(0.0, min=0, help="Requests per second (0: as fast as answered)."),
    seed: int = typer.Option(0),
) -> None:
    """Replay a traffic scenario against a running gateway, with true labels arriving late.

    Prints what the clients saw: requests, errors, labels sent, accuracy before and after
    the drift's onset, and which model versions answered.
    """
    _setup_logging(False)
    from lifecycle.synthetic.scenarios import build_scenario, holdout_scenario
    from lifecycle.synthetic.simulate import simulate as run_simulation

    if data is not None:
        from lifecycle.training.data import load_table

        chosen = holdout_scenario(
            load_table(data, label_column=label_column),
            n_holdout=holdout,
            n_before=n_before,
            n_after=n_after,
            seed=seed,
        )
    else:
        chosen = build_scenario(scenario, n_before=n_before, n_after=n_after, seed=seed)
    report = run_simulation(
        url,
        specialist,
        chosen.stream,
        texts_per_request=texts_per_request,
        feedback_share=feedback_share,
        feedback_delay=feedback_delay,
        rate=rate,
        seed=seed,
    )
    typer.echo(f"scenario {chosen.name}: {chosen.description}")
    typer.echo(json.dumps(report.as_dict(), indent=2))
    if report.errors:
        raise typer.Exit(1)


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
    TF-IDF), representative texts and the nearest known label. With LIFECYCLE_STORE_TEXT
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
    for c in found["clusters"]:
        terms = ", ".join(c["top_terms"][:6]) or "-"
        typer.echo(
            f"  #{c['id']:<3} {c['size']:>6} requests ({c['share']:.1%})  terms: {terms}  "
            f"nearest label: {c['nearest_label'] or '-'}"
        )
        for example in c["examples"]:
            typer.echo(f"         {example!r}")


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
    shadow and the least confident answers, in turn, from the champion's newest window
    (`monitoring.window_size`); requests a person labelled already are left out. Reads the
    traffic store and the registry directly. Label the file, then send it back with
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
    store = _open_store(settings)
    try:
        found = ranked(
            store,
            spec,
            champion_version=versions["champion"],
            challenger_version=versions.get("challenger"),
            store_text=settings.store_text,
            limit=limit,
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


def _served_versions(settings: Any, name: str) -> dict[str, Any]:
    """The champion's (and challenger's) version and labels, from the registry."""
    from lifecycle.registry.models import Registry

    registry = Registry(settings)
    aliases = registry.aliases(name) if registry.has_model(name) else {}
    if "champion" not in aliases:
        raise LifecycleError(f"{name} has no champion yet; train one first (lifecycle train)")
    out: dict[str, Any] = {"labels": {}}
    for alias in ("champion", "challenger"):
        if alias in aliases:
            info = registry.get_version(name, aliases[alias])
            out[alias] = info.version
            out["labels"][alias] = json.loads(info.lineage.get("labels", "[]") or "[]")
    return out


def _open_store(settings: Any) -> Any:
    """The traffic store; an error naming it when it does not exist yet."""
    url = settings.traffic_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise LifecycleError(f"no traffic store at {url} yet: serve some traffic first")
    from lifecycle.store import TrafficStore

    return TrafficStore(url)


def _prefect_env(settings: Any) -> None:
    """Prefect reads its settings at import: point it at our home before the first import."""
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@app.command()
@_friendly
def retrain(
    specialist: str = typer.Option(..., "--specialist", "-s", help="Specialist to retrain."),
    trigger: str = typer.Option(
        "manual", help="Recorded on the version: manual, drift or schedule."
    ),
    specialists_file: Path | None = SpecialistsFileOption,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Retrain a specialist now from its labelled traffic, as a Prefect flow run.

    People's labels first, the fallback's where a person's is missing, plus a replay
    of the champion's training data. The candidate is registered as `challenger`
    (the gateway then shadows it). Too few labels: no training, and an alert says
    how many are missing. Uses PREFECT_API_URL, or a temporary local Prefect server.
    """
    _setup_logging(verbose)
    settings, specs = _context(specialists_file)
    specs.get(specialist)
    from lifecycle.registry.models import TRIGGERS

    if trigger not in TRIGGERS:
        raise typer.BadParameter(f"must be one of {', '.join(TRIGGERS)}", param_hint="--trigger")
    os.environ["LIFECYCLE_SPECIALISTS_FILE"] = str(settings.specialists_file)
    _prefect_env(settings)
    from flows.retrain import retrain_flow

    outcome = retrain_flow(specialist, trigger=trigger)
    typer.echo(json.dumps(outcome, indent=2, default=str))
    if outcome["status"] == "needs_labels":
        raise typer.Exit(3)


@app.command()
@_friendly
def demo(
    scenario: str = typer.Option(
        "new_intent", help="The drift: new_intent, vocabulary_shift (or prior_shift, stationary)."
    ),
    data: Path | None = typer.Option(
        None, help="A real labelled table (text, label): some intents are released late."
    ),
    home: Path | None = typer.Option(
        None, help="Where the demo keeps its state (default: LIFECYCLE_HOME/demo)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the closed loop end to end on embedded defaults and print its timeline.

    Trains a first champion, serves it from an in-process gateway, replays traffic with
    a drift while a simulated person labels 30% of the requests, taking the gateway's
    label-request queue first, and lets the flows monitor, retrain, shadow, gate and
    promote (MLflow on sqlite, Prefect on a temporary local server). Nothing about the
    drift is declared: a new intent's labels arrive under a new name and the retrain grows
    the head for it. Ends with the accuracy before the drift, during it and after the
    promotion, and how to open the MLflow and Prefect UIs on what it produced.
    """
    _setup_logging(verbose)
    if not verbose:
        for noisy in ("lifecycle", "monitors", "flows", "prefect"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # MLflow sets up its own log handler and download bars, which would bury the timeline.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from lifecycle.config.settings import load_settings
    from lifecycle.synthetic.scenarios import SCENARIOS

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"must be one of {', '.join(SCENARIOS)}", param_hint="--scenario")
    base = load_settings()
    folder = (home or base.home / "demo").expanduser().resolve()
    if (folder / "mlflow.db").exists():
        raise typer.BadParameter(
            f"{folder} holds an earlier demo; remove it or pass another --home",
            param_hint="--home",
        )
    os.environ["LIFECYCLE_HOME"] = str(folder)
    os.environ["LIFECYCLE_SPECIALISTS_FILE"] = str(folder / "demo-specialists.yaml")
    os.environ.pop("LIFECYCLE_TRAFFIC_DB_URL", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = load_settings(home=folder)
    _prefect_env(settings)
    from flows.demo import run_demo, summary

    typer.echo(f"demo state in {folder}")
    result = run_demo(folder, scenario=scenario, data=data)
    typer.echo(summary(result, folder, settings.tracking_uri))


@app.command()
@_friendly
def deploy(
    pool: str | None = typer.Option(
        None,
        help="Put every deployment on this Prefect work pool and exit: workers started with "
        "`prefect worker start --pool NAME` run the flows (created as a process pool if "
        "missing). Without it, the flows are served by this command until it is stopped.",
    ),
    retrain_pool: str | None = typer.Option(
        None,
        help="Send retraining to this Prefect work pool (e.g. workers with GPUs) instead; "
        "its workers need this code and the same LIFECYCLE_ settings.",
    ),
    specialists_file: Path | None = SpecialistsFileOption,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Register the loop's flows as Prefect deployments, and serve them or leave them to workers.

    Per specialist: monitor-NAME on the spec's monitoring.schedule; retrain-NAME,
    triggered by the lifecycle.drift.detected event (one run at a time); promote-NAME,
    on the schedule and triggered by lifecycle.candidate.registered. Set
    PREFECT_API_URL to a Prefect server (`prefect server start`) to see them, their
    runs and the events in its UI.
    """
    _setup_logging(verbose)
    settings, specs = _context(specialists_file)
    os.environ["LIFECYCLE_SPECIALISTS_FILE"] = str(settings.specialists_file)
    _prefect_env(settings)
    if not os.environ.get("PREFECT_API_URL"):
        if pool:
            raise typer.BadParameter(
                "--pool needs a Prefect server: set PREFECT_API_URL", param_hint="--pool"
            )
        typer.secho(
            "PREFECT_API_URL is not set: the deployments live on a temporary local server "
            "that stops with this command.",
            err=True,
            fg=typer.colors.YELLOW,
        )
    if pool:
        from flows.deploy import deploy_to_pools

        ids = deploy_to_pools(specs, pool=pool, retrain_pool=retrain_pool)
        for name, deployment_id in ids.items():
            typer.echo(f"{name}\t{deployment_id}")
        return
    from flows.deploy import serve_all

    serve_all(specs, retrain_pool=retrain_pool)


def _parse_time(text: str | None, option: str) -> Any:
    if text is None:
        return None
    from datetime import datetime, timezone

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO time: {text!r}", param_hint=option) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":  # pragma: no cover
    app()
