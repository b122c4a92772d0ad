"""Alerts to on-call.

``message`` (the alert as data), ``texts`` (what each alert says), ``slack`` (its Block Kit
rendering), ``dedup`` (when a person needs to hear it, pure), ``delivery`` (the webhook POSTs,
with retries) and ``alerter`` (``Alerter.notify``, which ties them to the traffic store).
"""
