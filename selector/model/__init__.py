"""Stage 3a, the learned selector: the self-attention network (reference and default modes,
checkpoints), the scikit-learn shaped estimator around it (``training.Selector``: fit, predict,
score, load, save), leave-one-subset-out cross-validation, ``igpt4 train-selector``, and the
synthetic feature pools its tests and the smoke set use.

May import: selector.core, selector.data, selector.scoring, selector.labels.
"""
