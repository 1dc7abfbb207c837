"""Multi-Modality-Arena-compatible evaluation: the Arena's datasets, prompts, sampling, metric and
output files (``answers/{model}/{time}/{dataset}.json`` + ``result.json``), with resumable runs.

Modules: :mod:`.datasets` (with :mod:`.layouts`, :mod:`.sampling`, :mod:`.records`),
:mod:`.metric`, :mod:`.testers` (:mod:`.tester_api`, :mod:`.minigpt4_tester`, :mod:`.minigpt4_host`),
:mod:`.runner`, :mod:`.cli`. Nothing
is imported here, so ``import eval_arena.cli`` stays instant.
"""
