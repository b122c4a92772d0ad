"""``lifecycle demo``: the whole loop on embedded defaults, with a timeline at the end.

Trains a first champion, serves it from a real gateway (uvicorn, in-process), replays
generated traffic with a drift while people's labels arrive late, and lets the flows run
the loop: monitor (real Prefect flow runs on an ephemeral server), retrain on the drift,
shadow the challenger in the gateway, gate it, promote it. Accuracy is measured on what
the gateway answered: before the drift, during it, and after the promotion.

Nothing about the drift is declared up front: the specialists file names only the labels of
the first champion's data. A simulated person labels a share of the requests from the
gateway's label-request queue, under the true label's name; a name the champion does not
know is stored as a proposed label, and the retrain grows the head for it once it has
enough examples (the open label set).

``--task extraction`` runs the same loop for an extraction specialist: a champion trained
on generated support tickets to pull out order ids, amounts, dates, emails and products;
after the onset a share of the tickets carries a tracking number, a field nobody declared.
The person corrects the spans of the requests they label (tracking numbers included), the
retrain grows the head by that field, and the figure is entity F1 on exact spans.

The steps call the same flows that ``lifecycle deploy`` schedules and triggers; here the
demo starts each one at the moment its schedule or trigger would, so a run takes minutes.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flows.demo_report import Accuracy, DemoResult, Timeline, summary

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.synthetic.simulate import Labeller

__all__ = [
    "Accuracy",
    "DemoResult",
    "Timeline",
    "run_demo",
    "run_extraction_demo",
    "run_loop",
    "summary",
    "write_demo_spec",
]

logger = logging.getLogger(__name__)

NAME = "support-router"
#: The extraction demo's specialist, and its drift (lifecycle.synthetic.extraction_scenarios).
EXTRACTOR_NAME = "ticket-fields"
EXTRACTION_SCENARIO = "new_field"
CHUNK = 200
#: The share of requests the simulated person labels, from the label-request queue first.
LABEL_SHARE = 0.3
#: After a promotion, retrain on the labels that kept arriving every this many requests.
RETRAIN_EVERY = 800


def write_demo_spec(
    home: Path,
    reference: pd.DataFrame,
    labels: list[str],
    *,
    epochs: int = 3,
    task: str = "classification",
    training: dict[str, Any] | None = None,
) -> Path:
    """The demo's specialists file: its data is the scenario's reference set (text and
    label; text and entities for an extractor, whose ``labels`` are entity labels).
    ``training`` adds to (or overrides) the spec's training section."""
    import yaml

    home.mkdir(parents=True, exist_ok=True)
    kind: dict[str, Any]
    if task == "extraction":
        data = home / "demo-reference.jsonl"
        reference[["text", "entities"]].to_json(data, orient="records", lines=True)
        kind = {
            "name": EXTRACTOR_NAME,
            "task": "extraction",
            "description": "Demo: pulls fields out of support tickets; learns a new one "
            "through the loop.",
            "entities": labels,
        }
    else:
        data = home / "demo-reference.csv"
        reference[["text", "label"]].to_csv(data, index=False)
        kind = {
            "name": NAME,
            "description": "Demo: routes support tickets; learns a drift through the loop.",
            "labels": labels,
        }
    spec = {
        **kind,
        "data": {"kind": "file", "path": str(data)},
        "training": {"epochs": epochs, "batch_size": 32, "max_length": 64, **(training or {})},
        "monitoring": {"window_size": 400, "min_window": 100, "min_labels": 100},
        "escalation": {"confidence_threshold": 0.5, "fallback": "none"},
        "promotion": {"min_samples": 100, "margin": 0.0, "alpha": 0.05},
    }
    path = home / "demo-specialists.yaml"
    path.write_text(yaml.safe_dump({"specialists": [spec]}, sort_keys=False))
    return path


def scenario_stream(
    scenario: str, data: Path | None, *, n_before: int, n_after: int, seed: int
) -> Any:
    from lifecycle.synthetic.scenarios import build_scenario, holdout_scenario

    if data is None:
        return build_scenario(scenario, n_before=n_before, n_after=n_after, seed=seed)
    from lifecycle.training.data import load_table

    table = load_table(data)
    return holdout_scenario(
        table, n_holdout=3, n_before=n_before, n_after=n_after, release_share=0.3, seed=seed
    )


def run_demo(
    home: Path,
    *,
    scenario: str = "new_intent",
    data: Path | None = None,
    n_before: int = 800,
    n_after: int = 2400,
    seed: int = 0,
) -> DemoResult:
    """The demo on a generated scenario, or on ``data`` with intents released late."""
    sc = scenario_stream(scenario, data, n_before=n_before, n_after=n_after, seed=seed)
    print(f"scenario {sc.name}: {sc.description}", flush=True)
    # Only what the first champion's data holds: labels the drift brings are learned.
    labels = sorted(set(sc.reference["label"]))
    return run_loop(home, reference=sc.reference, stream=sc.stream, onset=sc.onset, labels=labels)


def run_extraction_demo(
    home: Path,
    *,
    scenario: str = EXTRACTION_SCENARIO,
    n_reference: int = 800,
    n_before: int = 400,
    n_after: int = 1600,
    epochs: int = 3,
    seed: int = 0,
) -> DemoResult:
    """The demo for an extraction specialist on a generated drift: by default new_field (after
    the onset a share of the tickets carries a tracking number, which the champion never saw);
    any of ``EXTRACTION_SCENARIOS`` runs."""
    from lifecycle.extraction.data import entity_labels
    from lifecycle.synthetic.extraction_scenarios import extraction_scenario

    sc = extraction_scenario(
        scenario,
        n_reference=n_reference,
        n_before=n_before,
        n_after=n_after,
        seed=seed,
    )
    print(f"scenario {sc.name} (extraction): {sc.description}", flush=True)
    # Only the fields of the first champion's data are declared: the new one is learned.
    return run_loop(
        home,
        reference=sc.reference,
        stream=sc.stream,
        onset=sc.onset,
        labels=entity_labels(sc.reference),
        epochs=epochs,
        seed=seed,
        task="extraction",
    )


def run_loop(
    home: Path,
    *,
    reference: pd.DataFrame,
    stream: pd.DataFrame,
    onset: int,
    labels: list[str],
    epochs: int = 3,
    retrain_every: int = RETRAIN_EVERY,
    label_share: float = LABEL_SHARE,
    label_source: Literal["queue", "random"] = "queue",
    seed: int = 0,
    task: str = "classification",
    training: dict[str, Any] | None = None,
) -> DemoResult:
    """Train a champion on ``reference``, then serve ``stream`` (text, label, phase) through
    a gateway while the flows run the loop. ``labels`` are the spec's (the stream may bring
    others); a person labels ``label_share`` of the requests, taking the gateway's
    label-request queue first (``label_source`` "queue") or at random ("random"). For
    ``task`` "extraction" the reference and the stream hold ``entities`` (gold spans)
    instead of ``label``, and ``labels`` are entity labels. ``training`` adds to the spec's
    training section (``write_demo_spec``)."""
    from flows.monitor import monitor_flow
    from flows.promote import promote_flow
    from flows.retrain import retrain_flow
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists
    from lifecycle.synthetic.simulate import Labeller
    from lifecycle.training.pipeline import train_and_register
    from lifecycle.training.record import headline

    timeline = Timeline()
    specialists_file = write_demo_spec(
        home, reference, labels, epochs=epochs, task=task, training=training
    )
    token = secrets.token_urlsafe(16)
    settings = load_settings(
        home=home,
        specialists_file=specialists_file,
        admin_token=token,
        registry_poll_s=2.0,
        progress=False,
    )
    specs = load_specialists(specialists_file)
    spec = specs.get(EXTRACTOR_NAME if task == "extraction" else NAME)

    timeline.add(None, "train champion", f"{len(reference)} reference rows")
    first = train_and_register(settings, spec, alias="champion")
    timeline.add(
        None,
        "champion registered",
        f"v{first.version.version}, {headline(first.result)}",
    )
    result = _loop(
        settings,
        specs,
        spec.name,
        first.result.host,
        stream,
        onset,
        timeline,
        token,
        monitor_flow=monitor_flow,
        retrain_flow=retrain_flow,
        promote_flow=promote_flow,
        retrain_every=retrain_every,
        labeller=Labeller(share=label_share, source=label_source, seed=seed),
    )
    result.seconds = time.perf_counter() - timeline.started
    return result


def _loop(
    settings: Settings,
    specs: Any,
    name: str,
    host: Any,
    stream: pd.DataFrame,
    onset: int,
    timeline: Timeline,
    token: str,
    *,
    monitor_flow: Any,
    retrain_flow: Any,
    promote_flow: Any,
    retrain_every: int,
    labeller: Labeller,
) -> DemoResult:
    import httpx

    from lifecycle.serving.app import create_app
    from lifecycle.serving.background import serve_in_background
    from lifecycle.synthetic.simulate import simulate

    before, during = Accuracy(), Accuracy()
    served: dict[int, Accuracy] = {}  # drifted traffic answered by each promoted champion
    task = specs.get(name).task
    # The figure the retrain's candidate check and the gate compare, under their key names.
    metric, figure = ("micro_f1", "f1") if task == "extraction" else ("accuracy", "accuracy")
    app = create_app(settings, specs, host=host)
    state = "watching"  # -> shadowing -> watching (a promoted champion is watched too)
    promoted: int | None = None
    promoted_at: int | None = None
    first_promoted_at: int | None = None
    schedule_from: int | None = None  # scheduled retrains start after a first promotion
    detected: int | None = None
    headers = {"Authorization": f"Bearer {token}"}

    proposed_seen: set[str] = set()

    def people_label(sent: int, report: Any) -> None:
        labeller.saw(report)
        labeller.label(client, name, token=token)
        fresh = sorted(set(labeller.proposed) - proposed_seen)
        if fresh:
            proposed_seen.update(fresh)
            timeline.add(
                sent,
                "labels under new names",
                ", ".join(f"{k} ({labeller.proposed[k]})" for k in fresh)
                + f"; {labeller.from_queue} of {labeller.sent} labels from the queue so far",
            )

    def train(sent: int, trigger: str) -> bool:
        nonlocal schedule_from
        outcome = retrain_flow(name, trigger=trigger)
        timeline.add(sent, f"retrain: {outcome['status']}", outcome.get("reason", "")[:80])
        if outcome["status"] == "rejected" and schedule_from is not None:
            schedule_from = sent  # a retrain was done: the next one waits for the schedule
        if outcome["status"] != "registered":
            return False
        ev = outcome.get("evaluation", {})
        grown = (outcome.get("plan") or {}).get("new_labels") or []
        timeline.add(
            sent,
            "challenger registered",
            f"v{outcome['challenger_version']} ({trigger}): held-out new traffic "
            f"{ev.get(f'holdout_new.challenger_{metric}', float('nan')):.3f} vs "
            f"champion {ev.get(f'holdout_new.champion_{metric}', float('nan')):.3f}"
            + (f"; head grows: {', '.join(grown)}" if grown else ""),
        )
        client.post("/v1/admin/reload", headers=headers)
        timeline.add(sent, "shadow starts", "the gateway scores the challenger too")
        return True

    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        timeline.add(0, "gateway serving", url)
        for start in range(0, len(stream), CHUNK):
            chunk = stream.iloc[start : start + CHUNK]
            if start <= onset < start + CHUNK:
                timeline.add(onset, "drift onset", "traffic changes from here")
            report = simulate(url, name, chunk, feedback_share=0.0, token=token, client=client)
            for phase, stats in report.phases.items():
                if phase == "before":
                    before.add_phase(stats)
                elif promoted is None:
                    during.add_phase(stats)
                else:
                    served.setdefault(promoted, Accuracy()).add_phase(stats)
            sent = start + len(chunk)
            app.state.gw.writer.flush()  # this chunk's requests are in the store
            # The person labels this round from the queue over what is stored.
            people_label(sent, report)
            app.state.gw.writer.flush()
            if state == "watching" and sent > onset:
                verdict = monitor_flow(name)["verdict"]
                if verdict["status"] != "OK":
                    drifted = ", ".join(verdict.get("drifted", []))
                    timeline.add(sent, f"monitor: {verdict['status']}", drifted)
                if verdict["retrain"]:
                    if detected is None:
                        detected = sent - onset
                        timeline.add(sent, "alert sent", "stored in the traffic store and webhooks")
                        headline = (verdict.get("discovery") or {}).get("headline")
                        if headline:
                            timeline.add(sent, "discovery", headline[:100])
                    if train(sent, "drift"):
                        state = "shadowing"
                elif (
                    schedule_from is not None
                    and sent - schedule_from >= retrain_every
                    and train(sent, "schedule")  # labels kept arriving since the promotion
                ):
                    state = "shadowing"
            elif state == "shadowing":
                gate = promote_flow(name)
                decision = gate.get("decision") or {}
                if gate["action"] in ("promoted", "rejected", "superseded"):
                    timeline.add(
                        sent,
                        f"gate: {gate['action']}",
                        f"{decision.get(f'challenger_{figure}') or 0.0:.3f} vs "
                        f"{decision.get(f'champion_{figure}') or 0.0:.3f} on "
                        f"{decision.get('n_labelled')} labelled pairs, "
                        f"p={decision.get('p_value') or 1.0:.2g}",
                    )
                if gate["action"] == "promoted":
                    client.post("/v1/admin/reload", headers=headers)
                    promoted = gate["challenger_version"]
                    promoted_at = schedule_from = sent
                    first_promoted_at = first_promoted_at or sent
                    timeline.add(sent, "promoted", f"champion is v{promoted}")
                    state = "watching"
                elif gate["action"] in ("rejected", "superseded"):
                    schedule_from = sent if schedule_from is not None else None
                    state = "watching"
    after = served.get(promoted, Accuracy()) if promoted is not None else Accuracy()
    labels = {
        "from_queue": labeller.from_queue,
        "at_random": labeller.at_random,
        "refused": labeller.refused,
    }
    after_first = Accuracy()
    for seen in served.values():
        after_first.merge(seen)
    return DemoResult(
        before,
        during,
        after,
        promoted,
        timeline,
        detected,
        0.0,
        promoted_at,
        labels,
        after_first,
        first_promoted_at,
        task,
    )
