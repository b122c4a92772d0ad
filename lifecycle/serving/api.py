"""Request and response bodies of the gateway's HTTP API (documented in OpenAPI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Most spans one feedback item may hold: far above any real text's entities, and a bound on
#: what one call makes the gateway check.
MAX_FEEDBACK_ENTITIES = 1000


class PredictRequest(BaseModel):
    """One text or many; each gets its own request id."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(
        min_length=1,
        description="Texts to answer (classify, or extract entities from, as the specialist's "
        "task is). Each must hold a non-blank character; limits on count "
        "and length are the gateway's settings (LIFECYCLE_MAX_TEXTS_PER_REQUEST, "
        "LIFECYCLE_MAX_TEXT_CHARS).",
        examples=[["I lost my card yesterday", "where is my refund?"]],
    )

    @field_validator("texts")
    @classmethod
    def _not_blank(cls, texts: list[str]) -> list[str]:
        blank = [i for i, t in enumerate(texts) if not t.strip()]
        if blank:
            raise ValueError(f"texts at positions {blank[:10]} are empty or whitespace")
        # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 store can hold.
        broken = [i for i, t in enumerate(texts) if not _is_unicode(t)]
        if broken:
            raise ValueError(f"texts at positions {broken[:10]} hold unpaired surrogates")
        return texts


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class EntityOut(BaseModel):
    """One span an extraction specialist found in a text."""

    label: str = Field(description="The entity label (field), e.g. 'order_id'.")
    text: str = Field(description="The span's characters: the request text's [start:end].")
    start: int = Field(
        description="Offset of the span's first character in the text as sent, counted in "
        "Unicode code points from 0."
    )
    end: int = Field(description="Offset just past the span's last character (exclusive).")
    confidence: float = Field(
        description="Calibrated probability that this exact span, with this label, is right."
    )

    @classmethod
    def of(cls, entity: Any) -> EntityOut:
        """The API's view of a ``lifecycle.extraction.spans.Entity`` (a person's span, with
        no confidence, shows 0)."""
        confidence = entity.confidence
        return cls(
            label=entity.label,
            text=entity.text,
            start=entity.start,
            end=entity.end,
            confidence=0.0 if confidence is None else float(confidence),
        )


class PredictionOut(BaseModel):
    request_id: str = Field(description="Use it to send the true label later (feedback).")
    label: str = Field(
        description="A classifier's label. An extractor's summary of its answer: the distinct "
        "entity labels it found, sorted and joined by '+' ('date+order_id'), or '(none)'."
    )
    confidence: float = Field(
        description="Calibrated probability of the label (0-1); for an extractor, the "
        "probability that the whole answer (every span, nothing missed) is right."
    )
    model_version: int = Field(description="Registry version of the champion that answered.")
    escalated: bool = Field(
        description="The champion was unsure and the fallback was asked. An extractor is "
        "unsure when a span's confidence is under escalation.confidence_threshold or a field "
        "of the specialist's `required` is missing; its texts go to the review queue (people "
        "correct the spans through the feedback route), where the specialist has one."
    )
    source: str = Field(
        description="Who gave the label: 'specialist', or the fallback ('openai', 'review')."
    )
    flagged: bool = Field(
        default=False,
        description="The fallback failed or timed out, so the champion's answer stands.",
    )
    out_of_scope: bool | None = Field(
        default=None,
        description="The champion's out-of-scope detector found the text unlike anything it "
        "was trained on (its score passed the version's calibrated threshold): the label is "
        "likely meaningless. What the gateway did about it is the specialist's "
        "escalation.on_out_of_scope (fallback, review queue, or nothing). None when the "
        "version has no detector or LIFECYCLE_OOD_SCORES is off.",
    )
    ood_score: float | None = Field(
        default=None,
        description="The detector's score: higher is less like the version's training data; "
        "comparable between texts of one version only. None when the version has no detector "
        "or LIFECYCLE_OOD_SCORES is off.",
    )
    entities: list[EntityOut] | None = Field(
        default=None,
        description="An extraction specialist's spans, in text order ([]: none found); None "
        "for a classifier.",
    )
    fields: dict[str, str] | None = Field(
        default=None,
        description="An extraction specialist's answer as a record: per entity label found, the "
        "text of its most confident span. None for a classifier.",
    )


class PredictResponse(BaseModel):
    specialist: str
    predictions: list[PredictionOut]


class EntityIn(BaseModel):
    """One true span of an extractor's request, as a person marks it."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200, description="The entity label (field).")
    start: int = Field(
        ge=0, description="Offset of the first character in the request's text (code points)."
    )
    end: int = Field(ge=0, description="Offset just past the last character (exclusive).")
    text: str | None = Field(
        default=None,
        max_length=100_000,
        description="The span's characters, checked against the request's text where the "
        "gateway stores texts (LIFECYCLE_STORE_TEXT full): a mismatch is a 422.",
    )


_LABEL_DOC = "The true label of a classifier's request."
_ENTITIES_DOC = (
    "The true spans of an extraction specialist's request ([]: the text holds no entity), "
    f"at most {MAX_FEEDBACK_ENTITIES}. Spans must lie inside the text, have start < end and "
    "not overlap; their labels follow the specialist's labels_policy."
)


def _one_answer(label: str | None, entities: list[EntityIn] | None) -> None:
    if label is not None and entities is not None:
        raise ValueError(
            "give label (a classifier's feedback) or entities (an extractor's), not both"
        )


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")
    label: str | None = Field(default=None, min_length=1, max_length=200, description=_LABEL_DOC)
    entities: list[EntityIn] | None = Field(
        default=None, max_length=MAX_FEEDBACK_ENTITIES, description=_ENTITIES_DOC
    )

    @model_validator(mode="after")
    def _label_or_entities(self) -> FeedbackItem:
        _one_answer(self.label, self.entities)
        if self.label is None and self.entities is None:
            raise ValueError(
                "give label (a classifier's feedback) or entities (an extractor's; [] for none)"
            )
        return self


class FeedbackRequest(BaseModel):
    """True answers for earlier requests: one, or a list under ``items``. A classifier's
    request takes ``label``, an extraction specialist's takes ``entities``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(
        default=None, min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$"
    )
    label: str | None = Field(default=None, min_length=1, max_length=200, description=_LABEL_DOC)
    entities: list[EntityIn] | None = Field(
        default=None, max_length=MAX_FEEDBACK_ENTITIES, description=_ENTITIES_DOC
    )
    items: list[FeedbackItem] | None = Field(default=None, max_length=10_000)
    source: str = Field(default="human", pattern=r"^(human|fallback)$")

    @model_validator(mode="after")
    def _label_or_entities(self) -> FeedbackRequest:
        _one_answer(self.label, self.entities)
        return self

    def all_items(self) -> list[FeedbackItem]:
        found = list(self.items or [])
        if self.request_id is not None and (self.label is not None or self.entities is not None):
            found.append(
                FeedbackItem(request_id=self.request_id, label=self.label, entities=self.entities)
            )
        return found


class FeedbackResponse(BaseModel):
    accepted: int
    specialist: str
    proposed_labels: list[str] = Field(
        default_factory=list,
        description="Labels of this call the champion does not know (labels_policy: open; an "
        "extractor's: entity labels): stored, and learned at a retrain once each has "
        "training.min_examples_per_label examples.",
    )


class ServedOut(BaseModel):
    version: int
    adapter_id: str


class SpecialistOut(BaseModel):
    name: str
    task: str = Field(
        default="classification",
        description="'classification' (a label per text) or 'extraction' (entities per text).",
    )
    status: str = Field(description="'serving', or why it is not.")
    champion: ServedOut | None = None
    challenger: ServedOut | None = None
    labels: list[str] = Field(
        default_factory=list,
        description="The champion's labels: a classifier's intents, an extractor's entity labels.",
    )
    escalation_threshold: float = 0.0
    requests: int = 0
    escalations: int = 0
    estimated_cost_per_1k: float = 0.0
    estimated_cost_per_1k_fallback_only: float = 0.0
    cost_per_correct: float | None = Field(
        default=None,
        description="Estimated spend per correct answer: (specialist calls + its fallback "
        "calls) / answers that were right, over the newest 10,000 stored requests. Right is "
        "counted where a person labelled the request and expected elsewhere (the champion's "
        "calibrated confidence; the fallback's accuracy). None until known.",
    )
    fallback_only_cost_per_correct: float | None = Field(
        default=None,
        description="The same figure if the fallback answered everything: its price per "
        "request / its accuracy (measured on labelled escalations, else "
        "LIFECYCLE_FALLBACK_ACCURACY).",
    )
    correct_measured_on: int = Field(
        default=0,
        description="Requests behind cost_per_correct that a person labelled (the rest are "
        "expected, not counted).",
    )
    answer_accuracy: float | None = Field(
        default=None,
        description="Share of answers expected right, as clients got them (fallback's included).",
    )
    monitor_verdict: str | None = Field(
        default=None,
        description="The monitor's latest verdict on record (OK, WARN, DRIFT, QUALITY_DROP, "
        "NEEDS_LABELS; RESOLVED after a problem closed); None: no monitor alert yet.",
    )
    proposed_labels: dict[str, int] = Field(
        default_factory=dict,
        description="Labels people gave in feedback that the champion does not know (an "
        "extractor's: entity labels), with how many requests got each (most first). A retrain "
        "adds each one with at least training.min_examples_per_label examples to the head. Read "
        "from the traffic store off the request path, so it may lag the newest feedback by a "
        "registry poll.",
    )


class SpecialistsResponse(BaseModel):
    specialists: list[SpecialistOut]
    registry_up: bool


class ReviewItem(BaseModel):
    request_id: str
    text: str | None = Field(description="None when the gateway stores no texts (privacy).")
    predicted: str = Field(description="The champion's answer, returned to the client.")
    entities: list[EntityOut] | None = Field(
        default=None,
        description="An extractor's spans as the champion found them (correct them through the "
        "feedback route's entities); None for a classifier.",
    )
    confidence: float
    model_version: int


class ReviewResponse(BaseModel):
    specialist: str
    items: list[ReviewItem]


class LabelRequestItem(BaseModel):
    request_id: str
    text: str | None = Field(description="None when the gateway stores no texts (privacy).")
    reason: str = Field(
        description="Why it is worth a label: 'out_of_scope' (unlike the champion's training "
        "data; see cluster), 'disagreement' (champion and challenger differ in shadow: only "
        "such pairs move the promotion gate), 'low_confidence', 'surge' (answered with a label "
        "the champion now gives far more often than on its reference rows: a new intent may "
        "hide in it)."
    )
    detail: str = Field(description="The reason in words, e.g. 'out of scope, cluster 2'.")
    predicted: str = Field(description="The champion's label.")
    confidence: float = Field(description="The champion's confidence.")
    model_version: int
    challenger_label: str | None = Field(
        default=None, description="The challenger's label (disagreements only)."
    )
    cluster: int | None = Field(
        default=None,
        description="Cluster of similar out-of-scope requests (0 is the largest); None outside "
        "any cluster or for other reasons.",
    )
    ood_score: float | None = None


class LabelRequestsResponse(BaseModel):
    specialist: str
    items: list[LabelRequestItem]
    text_withheld: bool = Field(
        default=False,
        description="True when the store keeps no texts (LIFECYCLE_STORE_TEXT hash or none): "
        "items carry ids only, and the texts must come from the client's own records.",
    )
    note: str | None = None


class AdminResult(BaseModel):
    ok: bool
    detail: dict[str, object] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: str = Field(description="'ok' while the process runs.")


class Readiness(BaseModel):
    """Readiness; 503 with the same body while a specialist is not serving."""

    ready: bool
    serving: list[str] = Field(description="Specialists with a champion loaded.")
    unavailable: dict[str, str] = Field(description="Specialists not serving, with why.")
    registry_up: bool
    registry_error: str | None = None
    traffic_store_up: bool
    runtime: str = Field(
        default="fp32",
        description="What the champions' model workers run the base encoder's linear layers "
        "in: fp32, int8 (LIFECYCLE_QUANTIZE) or bf16 (a GPU).",
    )
