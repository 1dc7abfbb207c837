"""The toy world's judges, standing in for what the real pipeline measures by hand or by
fine-tuning: :func:`planted_auc` (how well an indicator tells the planted bad samples from the
good ones) and :func:`oracle_labels` (a documented formula of each subset's planted bad samples
instead of fine-tuning MiniGPT-4 on it and averaging four benchmark accuracies)."""
from __future__ import annotations

import zlib
from typing import Dict, Mapping, Optional, Sequence

from selector.app.toy.world import BAD_KINDS, ToyPool
from selector.core.errors import InputError


def planted_auc(pool: ToyPool, values: Mapping[str, Optional[float]],
                higher_is_better: bool = True) -> Dict[str, Optional[float]]:
    """How well one indicator tells bad samples from good ones: ROC AUC of ``-value`` (so 1.0
    means every bad sample scores below every good one, 0.5 is chance) over all bad samples and
    per kind (each kind against all good samples). Samples without a value are left out."""
    from sklearn.metrics import roc_auc_score

    scored = [i for i in pool.ids if values.get(i) is not None]
    sign = -1.0 if higher_is_better else 1.0
    result: Dict[str, Optional[float]] = {}
    for name, kinds in [("all", set(BAD_KINDS))] + [(k, {k}) for k in BAD_KINDS]:
        ids = [i for i in scored if pool.kinds[i] is None or pool.kinds[i] in kinds]
        truth = [pool.bad[i] for i in ids]
        result[name] = (round(float(roc_auc_score(truth, [sign * values[i] for i in ids])), 4)
                        if 0 < sum(truth) < len(truth) else None)
    return result


# -- the synthetic oracle ----------------------------------------------------------------------

#: Oracle constants, in "mean benchmark accuracy" points. A subset of only good samples scores
#: BASE + GOOD_GAIN; each bad sample takes a good one's place (its share of GOOD_GAIN is lost)
#: and on top of that teaches the fine-tuned model something harmful, by kind:
#: off_topic: answering without looking at the image, which every VQA benchmark punishes;
#: wrong_colour: hallucinated attributes (GQA and OKVQA ask about colours and attributes);
#: wrong_count: hallucinated counts (counting is a smaller share of the questions);
#: repetitive: degenerate looping answers, which break the benchmarks' answer matching;
#: truncated: only the style suffers; short-answer benchmarks barely notice.
ORACLE_BASE = 30.0
ORACLE_GOOD_GAIN = 3.0
ORACLE_PENALTY = {"off_topic": 2.5, "wrong_colour": 2.0, "wrong_count": 1.5, "repetitive": 1.5,
                  "truncated": 0.5}
#: run-to-run spread of one fine-tune's mean accuracy (standard deviation, points)
ORACLE_NOISE = 0.1


def oracle_labels(subsets: Mapping[str, Sequence[str]], pool: ToyPool, seed: int = 0,
                  noise: float = ORACLE_NOISE) -> Dict[str, float]:
    """The synthetic stand-in for "fine-tune MiniGPT-4 on the subset and average its accuracy on
    four benchmarks": with f_good and f_kind the fractions of the subset's samples that are good
    or of each bad kind,

        label = ORACLE_BASE + ORACLE_GOOD_GAIN * f_good - sum_k ORACLE_PENALTY[k] * f_k + e,
        e ~ N(0, noise^2)

    linear in the fractions (as a fine-tune's accuracy roughly is in a small share of bad data),
    with kind-specific harm (see the constants) and fine-tuning noise. The noise of a subset
    depends only on the seed and the subset's name, so labels do not change with dict order."""
    import numpy as np

    labels: Dict[str, float] = {}
    for name, members in subsets.items():
        if not members:
            raise InputError(f"oracle labels: subset {name!r} is empty")
        unknown = [i for i in members if str(i) not in pool.kinds]
        if unknown:
            raise InputError(f"oracle labels: subset {name!r}: sample {unknown[0]!r} is not in "
                             f"the toy pool {pool.folder}")
        kinds = [pool.kinds[str(i)] for i in members]
        good = sum(kind is None for kind in kinds) / len(kinds)
        harm = sum(ORACLE_PENALTY[kind] for kind in kinds if kind is not None) / len(kinds)
        rng = np.random.default_rng([seed, zlib.crc32(str(name).encode("utf-8"))])
        labels[str(name)] = round(ORACLE_BASE + ORACLE_GOOD_GAIN * good - harm
                                  + float(rng.normal(scale=noise)), 4)
    return labels
