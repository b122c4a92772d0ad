"""Prometheus metrics of one gateway (a registry of its own, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class GatewayMetrics:
    """Every series the gateway exports on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lifecycle_requests",
            "Predict requests answered.",
            ["specialist", "version"],
            registry=r,
        )
        self.texts = Counter(
            "lifecycle_texts",
            "Texts classified by champions.",
            ["specialist", "version"],
            registry=r,
        )
        self.errors = Counter(
            "lifecycle_http_errors",
            "Responses with status >= 400.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "lifecycle_request_latency_seconds",
            "Predict latency, request in to answer out.",
            ["specialist"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lifecycle_batch_size", "Texts per model batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "lifecycle_batch_seconds", "Model time per batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "lifecycle_queue_depth", "Jobs waiting for the model.", ["queue"], registry=r
        )
        self.shadow_predictions = Counter(
            "lifecycle_shadow_predictions",
            "Texts scored by a challenger in shadow.",
            ["specialist", "version"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "lifecycle_shadow_agreement",
            "Shadow texts where the challenger agreed with the champion (extractors: the same "
            "spans, label and offsets).",
            ["specialist", "version"],
            registry=r,
        )
        self.shadow_errors = Counter(
            "lifecycle_shadow_errors",
            "Shadow texts whose challenger call raised (stored for the promotion gate).",
            ["specialist", "version"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "lifecycle_shadow_dropped",
            "Shadow work dropped because its queue was full.",
            ["specialist"],
            registry=r,
        )
        self.shadow_discarded = Counter(
            "lifecycle_shadow_discarded",
            "Shadow texts queued but never scored: still waiting when a graceful stop's drain "
            "time (LIFECYCLE_SHADOW_DRAIN_S) ran out.",
            ["specialist"],
            registry=r,
        )
        self.shadow_pauses = Gauge(
            "lifecycle_shadow_pauses",
            "Encoder layers at which a shadow pass waited for a champion pass, since start.",
            registry=r,
        )
        self.escalations = Counter(
            "lifecycle_escalations",
            "Texts sent to the fallback, by outcome.",
            ["specialist", "source", "outcome"],
            registry=r,
        )
        self.extraction_unsure = Counter(
            "lifecycle_extraction_unsure",
            "Extractor answers that want a person, by reason: low_confidence (a span under "
            "escalation.confidence_threshold), missing_field (a required field absent). "
            "Escalated to the review queue where the specialist has one.",
            ["specialist", "reason"],
            registry=r,
        )
        self.out_of_scope = Counter(
            "lifecycle_out_of_scope",
            "Texts flagged out of the specialist's scope (the open-world detector).",
            ["specialist"],
            registry=r,
        )
        self.cost_per_1k = Gauge(
            "lifecycle_estimated_cost_per_1k_requests",
            "Estimated cost of 1,000 requests: the specialist alone, and with its fallback calls.",
            ["specialist", "kind"],
            registry=r,
        )
        self.cost_per_correct = Gauge(
            "lifecycle_cost_per_correct_answer",
            "Estimated spend per correct answer (specialist and fallback calls / answers right, "
            "counted on people's labels, expected elsewhere), newest 10,000 requests; NaN: "
            "unknown.",
            ["specialist"],
            registry=r,
        )
        self.fallback_cost_per_correct = Gauge(
            "lifecycle_fallback_cost_per_correct_answer",
            "Spend per correct answer if the fallback answered every request (price / accuracy).",
            ["specialist"],
            registry=r,
        )
        self.monitor_status = Gauge(
            "lifecycle_monitor_status",
            "The monitor's latest verdict from the traffic store's alerts: 0 OK, 1 WARN, 2 DRIFT, "
            "3 QUALITY_DROP, 4 NEEDS_LABELS, 5 NEEDS_DATA; -1 none on record.",
            ["specialist"],
            registry=r,
        )
        self.model_version = Gauge(
            "lifecycle_model_version",
            "Version served, by role.",
            ["specialist", "role"],
            registry=r,
        )
        self.registry_up = Gauge(
            "lifecycle_registry_up", "1 when the last registry check succeeded.", registry=r
        )
        self.store_up = Gauge(
            "lifecycle_traffic_store_up",
            "1 when the last traffic-store write succeeded.",
            registry=r,
        )
        self.store_pending = Gauge(
            "lifecycle_traffic_store_pending",
            "Records accepted but not yet in the database.",
            ["where"],
            registry=r,
        )

    def shadow_counts(self) -> dict[str, dict[str, int]]:
        """Per specialist, what became of its shadow work: texts ``scored`` and ``failed``
        (both stored), requests ``dropped`` (queue full), texts ``discarded`` (at a stop)."""
        counters = {
            "scored": self.shadow_predictions,
            "failed": self.shadow_errors,
            "dropped": self.shadow_dropped,
            "discarded": self.shadow_discarded,
        }
        counts: dict[str, dict[str, int]] = {}
        for kind, counter in counters.items():
            for family in counter.collect():
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue  # the _created timestamps
                    name = sample.labels["specialist"]
                    row = counts.setdefault(name, dict.fromkeys(counters, 0))
                    row[kind] += int(sample.value)
        return counts

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
