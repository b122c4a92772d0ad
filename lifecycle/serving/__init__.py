"""The gateway (FastAPI): imports FastAPI, so only the serving command loads it."""
