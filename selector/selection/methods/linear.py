"""``linear``: a ridge model on the indicators, fitted to the subset labels.

The data are train-selector's (:func:`selector.model.fit.labelled_subsets`: the same files
refused the same way) and the model is the cross-validation table's ``linear`` row
(:mod:`selector.model.baselines`: standardised subset means of the indicators, scikit-learn
``Ridge(alpha)``, ``alpha`` from ``methods.linear.alpha``), fitted on all labelled subsets. Each
sample's score is the model applied to that sample's own indicator values; as the model is
linear, a subset's mean score is the model's prediction for it. The manifest records the
coefficients and the leave-one-subset-out Spearman of the same model (the table's row).
"""
from __future__ import annotations

import numpy as np

from selector.core.errors import InputError
from selector.selection.methods import Method, MethodInputs, MethodScores, register


@register("linear")
class Linear(Method):
    """Ridge on the indicators, fitted to the labelled subsets (``--subsets``, ``--labels``)."""

    def score(self, inputs: MethodInputs) -> MethodScores:
        from selector.model.baselines import fit_linear
        from selector.model.fit import labelled_subsets
        from selector.model.training import indicator_means, linear_row

        if inputs.argument is not None:
            raise InputError(f"--method linear:{inputs.argument}: linear takes no argument (its "
                             "alpha is methods.linear.alpha)")
        if inputs.subsets is None or inputs.labels is None:
            raise InputError("--method linear needs the labelled subsets it is fitted to: give "
                             "--subsets and --labels")
        pool = inputs.pool
        if not pool.indicator_names:
            raise InputError(f"--method linear: {inputs.pool_path or 'the pool'} has no "
                             "indicators to fit")
        alpha = float(inputs.settings.get("alpha", 1.0))
        data = labelled_subsets(pool, inputs.subsets, inputs.labels)
        means = indicator_means(data)
        stacked = np.stack([means[name] for name in pool.indicator_names], axis=1)
        fitted = fit_linear(stacked, data.labels, alpha, pool.indicator_names)
        scores = fitted.predict(pool.indicators)
        row, _ = linear_row(data, alpha)
        return MethodScores(scores, details={
            **fitted.to_dict(), "subsets": len(data),
            "loso": {key: row[key] for key in ("spearman", "spearman_p", "pearson",
                                               "pearson_p")}})
