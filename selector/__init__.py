"""InstructionGPT-4 data selection, framework-free (numpy, torch, scikit-learn).

Subpackages in the order the data flows; a stage imports only ``core`` and the stages before it
(``tests/project/test_architecture.py`` enforces it):

    core -> data -> scoring -> labels -> model -> selection -> report -> app

Importing this package imports nothing heavy: the modules import torch, open_clip, transformers or
openai only where they need them, so ``igpt4 --help`` is instant.
"""
__version__ = "0.1.0"
