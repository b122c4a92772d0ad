"""Alembic revisions of the traffic store (a package so that it ships in the wheel)."""
