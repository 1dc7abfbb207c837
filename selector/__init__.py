"""InstructionGPT-4 data selection, framework-free (numpy, torch, scikit-learn).

Importing this package imports nothing heavy: the modules import torch, open_clip, transformers or
openai only where they need them, so ``igpt4 --help`` is instant.
"""
__version__ = "0.1.0"
