"""One specialist as a plain MLflow pyfunc (models-from-code), for bench/gateway.py.

This is the "obvious" way to serve a specialist: ``mlflow models serve`` on a
pyfunc that loads the shipped MiniLM base and one LoRA adapter folder (logged as
the artifact ``specialist``), one model per server, one request per forward pass.
bench/gateway.py logs it with

    mlflow.pyfunc.log_model(name=..., python_model="bench/pyfunc_specialist.py",
                            artifacts={"specialist": adapter_folder})

and compares its throughput with the gateway's on the same texts.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

ADAPTER_ID = "specialist"


class SpecialistPyfunc(PythonModel):
    """Input: a DataFrame with a ``text`` column. Output: ``label`` and ``confidence`` per row."""

    def load_context(self, context: Any) -> None:
        from lifecycle.model.host import AdapterHost

        self.host = AdapterHost("minilm")
        self.host.load_adapter(ADAPTER_ID, context.artifacts["specialist"])

    # model_input is left unannotated on purpose: MLflow 3 reads a type hint there as the
    # model's signature and converts inputs to match; the logged signature does that job.
    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = [str(t) for t in model_input["text"].tolist()]
        predictions = self.host.predict(texts, ADAPTER_ID)
        return pd.DataFrame(
            {
                "label": [p.label for p in predictions],
                "confidence": [p.confidence for p in predictions],
            }
        )


mlflow.models.set_model(SpecialistPyfunc())
