"""Pulumi component resources: one per module, each with its Args beside it."""
