"""Stage 1, scoring every sample: indicators (CLIP, reward, length, GPT score) and embedders behind
registries, the per-sample cache, ``igpt4 score``, the pool-wide PCA and the pool file it writes
(the selector's input), GPT reply parsing, and the reader of the released artifacts.

May import: selector.core, selector.data.
"""
