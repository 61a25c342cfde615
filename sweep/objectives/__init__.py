"""Where an Optuna trial meets training: which objective a study uses (``scheme.py``), holdout,
k-fold CV and Laplace evidence trials, what a population batch trains per trial (``batched.py``),
the prepared data and folds (``prepared.py``) and a trial's stored attributes (``attrs.py``).

Objectives never import the run loop: workers call them.
"""
