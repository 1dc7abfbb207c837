"""The indicator cache seen from the samples: a sample's content hash and the chunked scoring loop.

:mod:`selector.core.cache` keeps results by hash; here a :class:`~selector.data.samples.Sample`
gets its hash (its turns and its image file's bytes: an edited caption or image recomputes only
that sample) and :func:`score_cached` computes, chunk by chunk, only the values an indicator is
missing from the cache, committing each chunk in one transaction (a ``kill -9`` keeps every
finished chunk; a rerun ends with the same table as an uninterrupted run). Failures
(:class:`~selector.core.cache.Failure`) are returned for the run, never stored. An indicator that
``needs_image`` is not run on a text-only sample: it gets a "not applicable" value
(:func:`not_applicable`), stored like any value, so a rerun does not try it again.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from selector.core.cache import NOT_APPLICABLE, Failure, IndicatorValue, Store, settings_hash
from selector.core.distributed import Ranks
from selector.core.fingerprint import Fingerprint
from selector.data.samples import Sample
from selector.scoring.indicators import Indicator


def sample_hash(sample: Sample, image_bytes: bool = True) -> str:
    """Content hash of a sample: its turns and (by default) its image file's bytes."""
    digest = Fingerprint().update([[t.role, t.text] for t in sample.turns])
    if sample.image is None:  # text-only: no file, and no image reference to stand for one
        digest.update({"image": None})
    elif image_bytes and sample.image.is_file():
        digest.update_file(sample.image)
    else:
        digest.update_text(str(sample.image_ref))
    return digest.hexdigest(32)


def not_applicable(sample: Sample) -> IndicatorValue:
    """The value an image-only indicator gets for a text-only sample (not a problem of it)."""
    return IndicatorValue(sample.id, None, f"{NOT_APPLICABLE}text-only sample (no image)")


def score_cached(store: Store, indicator: Indicator, samples: Sequence[Sample],
                 chunk_size: int = 256, hashes: Optional[Sequence[str]] = None,
                 ranks: Optional[Ranks] = None) -> List[IndicatorValue]:
    """Values for every sample, computing only those missing from the store, chunk by chunk.

    Failures (:class:`Failure` problems) are returned for this run but not stored: the next run
    computes them again. Under a launcher (``ranks``) each process computes its share of the
    missing samples and all of them return the merged values once every share is stored (a
    sample that failed on another process comes back as a failure)."""
    settings = indicator.settings()
    key = settings_hash(indicator.name, settings)
    hashes = list(hashes) if hashes is not None else [sample_hash(s) for s in samples]
    ranks = ranks or Ranks(launched=False)
    # per-request results (GPT replies) are committed as they come; before read_together, whose
    # barrier makes every rank see the cache after attach_store's clean-up
    indicator.attach_store(store)
    cached = ranks.read_together(lambda: store.get(indicator.name, key, hashes))
    todo = ranks.mine([i for i, digest in enumerate(hashes) if digest not in cached])
    if getattr(indicator, "needs_image", False):  # settled here: no model loads for them
        skipped = [i for i in todo if not samples[i].has_image]
        if skipped:
            values = [not_applicable(samples[i]) for i in skipped]
            store.put(indicator.name, key, settings, [(hashes[i], v) for i, v in
                                                      zip(skipped, values)])
            cached.update((hashes[i], v) for i, v in zip(skipped, values))
            todo = [i for i in todo if samples[i].has_image]
    chunk_size = indicator.chunk_size or chunk_size
    for start in range(0, len(todo), chunk_size):
        rows = todo[start:start + chunk_size]
        values = indicator.score([samples[i] for i in rows])
        store.put(indicator.name, key, settings, [(hashes[i], v) for i, v in zip(rows, values)])
        cached.update((hashes[i], v) for i, v in zip(rows, values))
    if ranks.world_size > 1:
        ranks.wait()
        cached = {**cached, **store.get(indicator.name, key, hashes)}
    failed = IndicatorValue("", None, Failure("not computed: failed on another process (a rerun "
                                              "retries it)"))
    return [IndicatorValue(s.id, cached.get(d, failed).value, cached.get(d, failed).problem,
                           cached.get(d, failed).detail) for s, d in zip(samples, hashes)]
