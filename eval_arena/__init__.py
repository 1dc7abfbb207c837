"""Multi-Modality-Arena-compatible evaluation (GQA, IconQA, OKVQA, ScienceQA, ...).

Depends on ``selector.data`` only; never on the selector's model or the host stacks.
"""
