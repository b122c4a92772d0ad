"""The MLflow layer: registered versions, aliases, lineage, runs and artifacts. The only package
that touches an MlflowClient.
"""
