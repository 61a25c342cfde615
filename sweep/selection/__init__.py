"""Choosing lambda from the stored trials: the registry of rules (``rules.py``) and the paired
statistics, plausible range and smoothed curve they rest on (``paired.py``).

Every figure a user sees (``sweep best``, the report, the dashboard figure, ``best_lambda``)
comes from one computation here. Selection never prints and never trains.
"""
