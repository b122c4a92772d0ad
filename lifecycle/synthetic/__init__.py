"""Synthetic traffic for the demo, tests and benches: scenarios, ticket templates, the simulated
clients and people, recorded traffic.
"""
