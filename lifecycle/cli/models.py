"""Commands on models: train, status, promote, rollback."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer

from lifecycle.cli.common import (
    SpecialistsFileOption,
    _context,
    _fmt,
    _friendly,
    _prefect_env,
    _setup_logging,
    app,
)


@app.command()
@_friendly
def train(
    specialist: str | None = typer.Option(
        None, "--specialist", "-s", help="Specialist to train (default: every one in the file)."
    ),
    data: Path | None = typer.Option(
        None,
        help="CSV, JSONL or Parquet file of text and label (of text and entities for an "
        "extraction specialist), instead of the spec's data.",
    ),
    text_column: str = typer.Option("text", help="Text column of --data."),
    label_column: str = typer.Option("label", help="Label column of --data (classifiers)."),
    entities_column: str = typer.Option(
        "entities", help="Entities column of --data (extraction specialists)."
    ),
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
        if chosen[0].task == "extraction":
            from lifecycle.extraction.data import load_extraction_table

            frame = load_extraction_table(
                data, text_column=text_column, entities_column=entities_column
            )
        else:
            from lifecycle.training.data import load_table

            frame = load_table(data, text_column=text_column, label_column=label_column)
    for spec in chosen:
        trained = train_and_register(settings, spec, data=frame, alias=alias)
        typer.echo(
            f"{spec.name}: registered version {trained.version.version} as {trained.alias} | "
            f"{_figures(trained.result)} | {len(trained.result.meta.labels)} labels | "
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
            extractor = info.lineage.get("task") == "extraction"
            rows.append(
                {
                    "version": info.version,
                    "task": info.lineage.get("task") or "classification",
                    "aliases": list(info.aliases),
                    "trigger": info.lineage.get("trigger", ""),
                    "parent": info.lineage.get("parent_version", ""),
                    "n_labels": info.lineage.get("n_labels", ""),
                    **(
                        {
                            "val_entity_f1": metrics.get("val.micro_f1"),
                            "val_macro_f1": metrics.get("val.macro_f1"),
                            "val_exact_match": metrics.get("val.exact_match"),
                        }
                        if extractor
                        else {
                            "val_accuracy": metrics.get("val.accuracy"),
                            "val_macro_f1": metrics.get("val.macro_f1"),
                            "calibration_error": metrics.get("val.calibration_error"),
                        }
                    ),
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
        typer.echo(_versions_table(entry["versions"]))
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


def _versions_table(versions: list[dict[str, Any]]) -> str:
    """A specialist's versions for `lifecycle status`, with the figures its task measures."""
    from monitors.table import render_table

    extractor = versions[-1].get("task") == "extraction"
    first, last = ("F1", "exact") if extractor else ("accuracy", "ECE")
    return render_table(
        ("version", "aliases", "trigger", "parent", "labels", first, "macro-F1", last),
        [
            (
                row["version"],
                ",".join(row["aliases"]) or "-",
                row["trigger"] or "-",
                row["parent"] or "-",
                row["n_labels"] or "-",
                _fmt(row.get("val_entity_f1", row.get("val_accuracy"))),
                _fmt(row["val_macro_f1"]),
                _fmt(row.get("val_exact_match", row.get("calibration_error"))),
            )
            for row in versions
        ],
        right=("version", "parent", "labels", first, "macro-F1", last),
    )


def _figures(result: Any) -> str:
    """A trained version's validation figures, as its task measures them."""
    from lifecycle.extraction.metrics import ExtractionEvaluation

    ev = result.evaluation
    if isinstance(ev, ExtractionEvaluation):
        return (
            f"val entity micro-F1 {ev.micro_f1:.4f} | macro-F1 {ev.macro_f1:.4f} | "
            f"exact match {ev.exact_match:.4f}"
        )
    return (
        f"val accuracy {ev.accuracy:.4f} | macro-F1 {ev.macro_f1:.4f} | "
        f"calibration error {ev.calibration_error:.4f}"
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
