"""Request and response bodies of the gateway's HTTP API (documented in OpenAPI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PredictRequest(BaseModel):
    """One text or many; each gets its own request id."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(
        min_length=1,
        description="Texts to classify. Each must hold a non-blank character; limits on count "
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


class PredictionOut(BaseModel):
    request_id: str = Field(description="Use it to send the true label later (feedback).")
    label: str
    confidence: float = Field(description="Calibrated probability of the label (0-1).")
    model_version: int = Field(description="Registry version of the champion that answered.")
    escalated: bool = Field(description="The champion was unsure and the fallback was asked.")
    source: str = Field(
        description="Who gave the label: 'specialist', or the fallback ('openai', 'review')."
    )
    flagged: bool = Field(
        default=False,
        description="The fallback failed or timed out, so the champion's answer stands.",
    )


class PredictResponse(BaseModel):
    specialist: str
    predictions: list[PredictionOut]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")
    label: str = Field(min_length=1, max_length=200)


class FeedbackRequest(BaseModel):
    """True labels for earlier requests: one, or a list under ``items``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(
        default=None, min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$"
    )
    label: str | None = Field(default=None, min_length=1, max_length=200)
    items: list[FeedbackItem] | None = Field(default=None, max_length=10_000)
    source: str = Field(default="human", pattern=r"^(human|fallback)$")

    def all_items(self) -> list[FeedbackItem]:
        found = list(self.items or [])
        if self.request_id is not None and self.label is not None:
            found.append(FeedbackItem(request_id=self.request_id, label=self.label))
        return found


class FeedbackResponse(BaseModel):
    accepted: int
    specialist: str


class ServedOut(BaseModel):
    version: int
    adapter_id: str


class SpecialistOut(BaseModel):
    name: str
    status: str = Field(description="'serving', or why it is not.")
    champion: ServedOut | None = None
    challenger: ServedOut | None = None
    labels: list[str] = Field(default_factory=list)
    escalation_threshold: float = 0.0
    requests: int = 0
    escalations: int = 0
    estimated_cost_per_1k: float = 0.0
    estimated_cost_per_1k_fallback_only: float = 0.0


class SpecialistsResponse(BaseModel):
    specialists: list[SpecialistOut]
    registry_up: bool


class ReviewItem(BaseModel):
    request_id: str
    text: str | None = Field(description="None when the gateway stores no texts (privacy).")
    predicted: str = Field(description="The champion's answer, returned to the client.")
    confidence: float
    model_version: int


class ReviewResponse(BaseModel):
    specialist: str
    items: list[ReviewItem]


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
