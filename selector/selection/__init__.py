"""Stage 3b and 4, choosing: the paper's rule (diversity clusters, quotas, top-k), clustering,
``igpt4 select`` / ``reference-select`` and writing a selection, the cached selection a training
run uses (what the LAVIS builder calls), and the smoke set.

May import: every earlier stage (core, data, scoring, labels, model).
"""
