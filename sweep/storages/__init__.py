"""The SQL store: opening it from a URL (``store.py``), riding out outages (``outage.py``), the study
lock (``lock.py``), the one writer of reports and attributes (``writes.py``), and every use of
Optuna's private internals (``optuna_compat.py``, each with a test).

Storages import nothing of the rest of lambda-sweep but the config and the errors.
"""
