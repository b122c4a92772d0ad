"""Promotion rules, pure: the gate's statistics, the sequential test, the guardrail."""
