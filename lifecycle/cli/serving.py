"""Commands that serve or send traffic: serve, simulate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from lifecycle.cli.common import SpecialistsFileOption, _friendly, _setup_logging, app


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
