"""Experiment modules: one per paper figure or table, run as `python -m experiments.<name>`."""
