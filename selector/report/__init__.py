"""Stage 5, telling: the self-contained HTML report of a selection (indicators, correlations,
clusters, cross-validation, example cards).

May import: every earlier stage.
"""
