"""Stage 2, genuine quality labels: balanced k-means++ subsets of the pool, one fine-tune config
and launcher per subset, and collecting the Arena results of those fine-tunes into labels.

May import: selector.core, selector.data, selector.scoring.
"""
