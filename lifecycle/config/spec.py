"""The specialists file: what each specialist is and how it is kept good.

One pydantic model validates the whole YAML file. Errors name the file and the
field (``specialists.yaml: specialists[0].lora.r: ...``) so that a person can
fix the file without reading code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifecycle.config.errors import ConfigError

#: Names become MLflow model names, metric labels and URL segments: keep them boring.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_BASE_MODEL = "minilm"
#: The task kinds a specialist may have (``lifecycle.tasks`` holds what differs between them).
TaskName = Literal["classification", "extraction"]
TASKS: tuple[str, ...] = ("classification", "extraction")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Strict):
    r: int = Field(default=8, ge=1, le=256, description="LoRA rank.")
    alpha: int = Field(default=16, ge=1, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = Field(
        default=("query", "value"), min_length=1, description="Module names that get adapters."
    )


class TrainingSpec(_Strict):
    epochs: int = Field(
        default=3, ge=1, le=100, description="Most epochs; early stopping may end sooner."
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    learning_rate: float = Field(default=2e-3, gt=0, lt=1)
    head_learning_rate: float = Field(default=5e-3, gt=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_length: int = Field(default=64, ge=8, le=512, description="Tokens kept per text.")
    patience: int = Field(
        default=1, ge=0, description="Evaluations without improvement before stopping."
    )
    min_delta: float = Field(
        default=0.002, ge=0, description="Validation-loss decrease that counts as an improvement."
    )
    evals_per_epoch: int = Field(default=2, ge=1, le=20)
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    seed: int = 0
    replay_ratio: float = Field(
        default=1.0, ge=0, description="Rows of older data mixed in per new row when retraining."
    )
    replay_rows: int = Field(
        default=0,
        ge=0,
        description="At a retrain, replay at least this many rows of the champion's training "
        "set (as many as it has), when replay_ratio x the new rows gives fewer; 0: the ratio "
        "alone.",
    )
    recent_weight: float = Field(
        default=2.0,
        ge=1.0,
        le=10.0,
        description="At a retrain, new labelled rows that arrived after the champion was "
        "registered count this many times (duplicated in the training rows, rounded).",
    )
    min_holdout_rows: int = Field(
        default=20,
        ge=1,
        description="Held-out new labelled rows needed for a retrain to compare the candidate "
        "with the champion; with fewer, the candidate becomes challenger unchecked.",
    )
    min_examples_per_label: int = Field(
        default=10,
        ge=1,
        description="A proposed label (one the champion does not know) joins the head at a "
        "retrain once it has this many usable labels; until then its rows wait.",
    )
    wait_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A retrain waits (NEEDS_LABELS, naming the labels and how many more each "
        "needs) while proposed labels short of min_examples_per_label hold at least this "
        "share of the labelled requests: a new intent that is a real part of the traffic is "
        "learned once it can be. Rarer ones (a typo, a one-off) train without them. 0: never "
        "wait.",
    )


class GeneratorData(_Strict):
    """Training data from the built-in ticket generator."""

    kind: Literal["generator"] = "generator"
    n: int = Field(default=2000, ge=20)
    seed: int = 0


class FileData(_Strict):
    """Training data from a CSV, JSONL or Parquet file: text and label for a classifier,
    text and entities (character spans) for an extractor."""

    kind: Literal["file"] = "file"
    path: Path
    text_column: str = "text"
    label_column: str = "label"
    entities_column: str = Field(
        default="entities",
        description="Extraction only: the column of entity lists ({label, start, end}); a "
        "JSON string in CSV and Parquet files.",
    )


DataSpec = Annotated[GeneratorData | FileData, Field(discriminator="kind")]


class MonitoringSpec(_Strict):
    window_size: int = Field(default=500, ge=10, description="Requests per monitoring window.")
    min_window: int = Field(default=100, ge=10, description="Fewer requests: NEEDS_DATA.")
    false_alarm_rate: float = Field(default=0.01, gt=0, lt=0.5, description="Per window.")
    schedule: str = Field(default="*/10 * * * *", description="Cron of the monitor flow.")
    quality_drop: float = Field(
        default=0.05, gt=0, lt=1, description="Accuracy drop (absolute) that asks for retraining."
    )
    min_labels: int = Field(
        default=100, ge=10, description="People's labels in a window before quality is measured."
    )
    out_of_scope_rate: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="Share of held-out in-scope requests the out-of-scope detector flags: its "
        "threshold is calibrated for this rate at training time.",
    )
    discovery_min_cluster: int = Field(
        default=10, ge=1, description="Smallest cluster of out-of-scope requests reported."
    )


class EscalationSpec(_Strict):
    confidence_threshold: float = Field(
        default=0.0, ge=0, le=1, description="Below this confidence a request goes to the fallback."
    )
    fallback: Literal["none", "openai", "review"] = "none"
    on_out_of_scope: Literal["fallback", "review", "none"] = Field(
        default="none",
        description="A request the detector flags out of scope: 'fallback' sends it to the "
        "fallback (as a low confidence does), 'review' queues it for a person's label, "
        "'none' answers it as usual (flagged out_of_scope either way).",
    )


class PromotionSpec(_Strict):
    min_samples: int = Field(
        default=200,
        ge=10,
        description="The gate's unit of patience: an undecided challenger is rejected at "
        "max_samples labelled shadow pairs (default 2x this); shadow failures reject once "
        "this many shadow calls were made.",
    )
    max_samples: int | None = Field(
        default=None,
        ge=10,
        description="Labelled shadow pairs at which a challenger the sequential test has not "
        "decided is rejected (no evidence of improvement); default 2 x min_samples.",
    )
    supersede_factor: float = Field(
        default=2.0,
        gt=0,
        description="Retire a waiting challenger once people's labels that arrived since its "
        "training exceed this times those it was trained on, so that a retrain uses them.",
    )
    margin: float = Field(default=0.0, ge=0, lt=1, description="Non-inferiority margin (accuracy).")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="Significance of the gate.")
    shadow_sample_rate: float = Field(default=1.0, gt=0, le=1)
    auto_promote: bool = True
    max_latency_ratio: float = Field(
        default=1.5,
        ge=1,
        description="Veto a challenger slower than this times the champion (same texts, same "
        "batches, timed side by side before promoting).",
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="Veto a challenger whose shadow calls failed more often than this.",
    )

    @model_validator(mode="after")
    def _cap_above_minimum(self) -> PromotionSpec:
        if self.max_samples is not None and self.max_samples < self.min_samples:
            raise ValueError(
                f"max_samples ({self.max_samples}) must be >= min_samples ({self.min_samples})"
            )
        return self

    @property
    def sample_cap(self) -> int:
        """Labelled pairs at which an undecided challenger is rejected."""
        return self.max_samples if self.max_samples is not None else 2 * self.min_samples


class SpecialistSpec(_Strict):
    name: str = Field(description="Registered model name in MLflow; lowercase, digits, - and _.")
    description: str = ""
    task: TaskName = Field(
        default="classification",
        description="'classification' (one label per text) or 'extraction' (character-span "
        "entities per text). Specialists of both kinds share one base model and one gateway.",
    )
    base_model: str = Field(
        default=DEFAULT_BASE_MODEL,
        description="'minilm' (the shipped all-MiniLM-L6-v2), a local folder, or a hub id.",
    )
    labels: tuple[str, ...] | None = Field(
        default=None, description="Label set; default: the labels found in the training data."
    )
    entities: tuple[str, ...] | None = Field(
        default=None,
        description="Extraction only: the entity labels (fields) it extracts; default: the "
        "labels found in the training data. Open or closed by labels_policy, as intents are.",
    )
    required: tuple[str, ...] = Field(
        default=(),
        description="Extraction only: fields every request should yield; an answer missing "
        "one is escalated as a low confidence is, and counted by the monitor.",
    )
    labels_policy: Literal["open", "closed"] = Field(
        default="open",
        description="'open': feedback may propose labels (intents, or entity labels of an "
        "extractor) the champion does not know (stored, and learned at a retrain once they "
        "have training.min_examples_per_label examples); `labels` / `entities` is then a "
        "starting set. 'closed': feedback outside the label set is refused.",
    )
    out_of_scope_label: str | None = Field(
        default=None,
        description="A label meaning 'none of my intents' (e.g. none_of_these), trained like any "
        "other; when the champion answers it, the answer says out_of_scope: true.",
    )
    data: DataSpec = Field(default_factory=GeneratorData)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    escalation: EscalationSpec = Field(default_factory=EscalationSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)

    @model_validator(mode="after")
    def _fits_task(self) -> SpecialistSpec:
        if self.task == "classification":
            for field in ("entities", "required"):
                if getattr(self, field):
                    raise ValueError(f"{field} is for task: extraction; this is a classifier")
            return self
        if self.labels is not None or self.out_of_scope_label is not None:
            raise ValueError(
                "an extraction specialist declares `entities`, not `labels` or `out_of_scope_label`"
            )
        if self.escalation.fallback == "openai":
            raise ValueError(
                "escalation.fallback: openai asks a model to pick one of the labels, which an "
                "extractor has not; use fallback: review (a person corrects the spans)"
            )
        declared = self.entities or ()
        missing = [f for f in self.required if declared and f not in declared]
        if missing:
            raise ValueError(f"required fields {missing} are not among the entities")
        return self

    @property
    def label_set(self) -> tuple[str, ...] | None:
        """The declared label set of its task: intents, or entity labels."""
        return self.entities if self.task == "extraction" else self.labels

    @field_validator("entities")
    @classmethod
    def _distinct_entities(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from lifecycle.labels.feedback import label_problem

        if value is None:
            return None
        if not value:
            raise ValueError("an entity set needs at least 1 label")
        if len(set(value)) != len(value):
            raise ValueError("entities must be distinct")
        for label in value:
            problem = label_problem(label)
            if problem is not None or "+" in label:
                raise ValueError(f"{label!r} is not a valid entity label: {problem or 'no +'}")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid specialist name: use 1-63 lowercase letters, "
                "digits, '-' or '_', starting with a letter or digit"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if len(value) < 2:
            raise ValueError("a label set needs at least 2 labels")
        if len(set(value)) != len(value):
            raise ValueError("labels must be distinct")
        if any(not label.strip() for label in value):
            raise ValueError("labels must not be empty")
        return value

    @field_validator("out_of_scope_label")
    @classmethod
    def _valid_out_of_scope_label(cls, value: str | None) -> str | None:
        from lifecycle.labels.feedback import label_problem

        problem = None if value is None else label_problem(value)
        if problem is not None:
            raise ValueError(f"not a valid label: {problem}")
        return value


class SpecialistsFile(_Strict):
    specialists: list[SpecialistSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SpecialistsFile:
        names = [s.name for s in self.specialists]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"specialist names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def get(self, name: str) -> SpecialistSpec:
        for spec in self.specialists:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.specialists)
        raise ConfigError(f"no specialist named {name!r}; the specialists file declares: {known}")


def load_specialists(path: str | Path) -> SpecialistsFile:
    """Read and validate a specialists file; relative data paths resolve against its folder."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"specialists file {path} not found; create it (see README) or set "
            "LIFECYCLE_SPECIALISTS_FILE"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'specialists' list at the top")
    try:
        parsed = SpecialistsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc
    return _resolve_paths(parsed, base=path.parent)


def format_validation_error(exc: ValidationError) -> str:
    """``specialists[0].lora.r: Input should be greater than or equal to 1``, one per problem."""
    parts = []
    for err in exc.errors():
        location = ""
        for item in err["loc"]:
            if isinstance(item, int):
                location += f"[{item}]"
            elif item in ("generator", "file"):  # discriminator tags add noise, not meaning
                continue
            else:
                location += f".{item}" if location else str(item)
        parts.append(f"{location or '(top)'}: {err['msg']}")
    return "; ".join(parts)


def _resolve_paths(parsed: SpecialistsFile, *, base: Path) -> SpecialistsFile:
    resolved = []
    for spec in parsed.specialists:
        if isinstance(spec.data, FileData) and not spec.data.path.is_absolute():
            data = spec.data.model_copy(update={"path": (base / spec.data.path).resolve()})
            spec = spec.model_copy(update={"data": data})
        resolved.append(spec)
    return parsed.model_copy(update={"specialists": resolved})
