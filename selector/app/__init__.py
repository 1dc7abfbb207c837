"""What a user runs: the ``igpt4`` command line, the whole pipeline from one recipe, the demo and
its toy world.

May import: anything, including lavis_plugins and eval_arena. Nothing imports it.
"""
