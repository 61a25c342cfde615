"""Running a study to its target: ``sweep run`` (``run.py``), the worker's loop (``loop.py``),
admission under the study lock (``admission.py``), one trial at a time (``single.py``),
population batches (``batch.py``), and the heartbeats and tell both of those share (``heartbeats.py``).

Workers never see tensor shapes: what a trial trains is the objectives' business.
"""
