"""Lifecycle and drift monitor for task-specific LoRA specialists.

Importing this package is cheap: heavy libraries (torch, transformers, mlflow,
evidently, prefect) are imported only inside the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"
