"""Declarative deployment state reconciler: desired-state.yaml in, a converged host out."""

__version__ = "0.1.0"
