"""``selector``: the trained InstructionGPT-4 selector as a selection method (default and
reference modes). Its scores are the checkpoint's predictions; the keep step is the paper's
diversity rule, and a reference-mode checkpoint keeps the original's ``int(score)`` ranking with
truncated, unfilled quotas (the released selection, reproduced exactly)."""
from __future__ import annotations

from selector.core.errors import InputError
from selector.selection.methods import Method, MethodInputs, MethodScores, register


@register("selector")
class TrainedSelector(Method):
    """Scores from a ``train-selector`` checkpoint (or the released .pth), ``model.*`` scoring
    settings applied (score_rounds, score_seed), learned ones checked against the checkpoint."""

    diversity = True

    def score(self, inputs: MethodInputs) -> MethodScores:
        from selector.core.jsonio import text_encoding
        from selector.model.fit import apply_model_settings, requested_model_settings
        from selector.model.training import Selector

        if inputs.argument is not None:
            raise InputError(f"--method selector:{inputs.argument}: selector takes no argument "
                             "(its checkpoint is --checkpoint)")
        selector = inputs.loaded_model
        checkpoint = inputs.checkpoint
        if selector is None:
            if checkpoint is None:
                raise InputError("select needs --checkpoint (or --baseline)")
            with text_encoding(None):  # the checkpoint is ours (UTF-8), whatever --encoding says
                selector = Selector.load(checkpoint)
        requested = requested_model_settings(inputs.all_settings, inputs.model_keys)
        used_model = apply_model_settings(selector, requested, checkpoint)
        pool = inputs.pool
        selector.check_fits(pool.image.shape[1], pool.text.shape[1], pool.indicator_names,
                            str(inputs.pool_path))
        scores = selector.predict(pool.features, progress=True)
        return MethodScores(scores, details={"mode": selector.mode, "model": used_model},
                            reference_rule=selector.mode == "reference")
