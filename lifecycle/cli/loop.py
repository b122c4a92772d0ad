"""Commands that run the loop: retrain, demo, deploy."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import typer

from lifecycle.cli.common import (
    SpecialistsFileOption,
    _context,
    _friendly,
    _prefect_env,
    _setup_logging,
    app,
)


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
    task: str = typer.Option(
        "classification",
        help="The specialist's task: classification (routes tickets to intents) or extraction "
        "(pulls fields out of tickets).",
    ),
    scenario: str | None = typer.Option(
        None,
        help="The drift: new_intent (default), vocabulary_shift (or prior_shift, stationary); "
        "with --task extraction: new_field (default), order_id_format, date_format (or "
        "stationary).",
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

    With --task extraction the specialist extracts fields (order ids, amounts, dates, emails,
    products) from generated tickets; after the onset tickets carry tracking numbers, a field
    nobody declared. The person corrects the spans, the retrain grows the head by the new
    field, and the figure is entity F1 on exact spans.
    """
    _setup_logging(verbose)
    if not verbose:
        for noisy in ("lifecycle", "monitors", "flows", "prefect"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # The extraction demo's retrain data holds the field the drift brought, undeclared on
        # purpose (labels_policy open): the data check's warning about it is expected here.
        logging.getLogger("lifecycle.extraction.data").setLevel(logging.ERROR)
        # MLflow sets up its own log handler and download bars, which would bury the timeline.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from lifecycle.config.settings import load_settings
    from lifecycle.synthetic.extraction_scenarios import EXTRACTION_SCENARIOS
    from lifecycle.synthetic.scenarios import SCENARIOS

    if task not in ("classification", "extraction"):
        raise typer.BadParameter("must be classification or extraction", param_hint="--task")
    extraction = task == "extraction"
    known = EXTRACTION_SCENARIOS if extraction else SCENARIOS
    chosen = scenario or ("new_field" if extraction else "new_intent")
    if chosen not in known:
        raise typer.BadParameter(f"must be one of {', '.join(known)}", param_hint="--scenario")
    if extraction and data is not None:
        raise typer.BadParameter(
            "--data is a labelled table for a classifier; the extraction demo generates "
            "its tickets",
            param_hint="--data",
        )
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
    # The flows start a temporary Prefect server on first use; on a busy machine (the demo
    # trains beside it) its default 20 s to come up is not always enough.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    _prefect_env(settings)
    from flows.demo import run_demo, run_extraction_demo, summary

    typer.echo(f"demo state in {folder}")
    if extraction:
        result = run_extraction_demo(folder, scenario=chosen)
    else:
        result = run_demo(folder, scenario=chosen, data=data)
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
