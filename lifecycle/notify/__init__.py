"""Alerts: the message model, the alert texts, Slack rendering, dedup rules and delivery."""
