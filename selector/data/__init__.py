"""Instruction data as it comes: the sample model and the readers and writers of both kinds
(cc_sbu_align folders, LLaVA-style conversations), with every bad-input case refused in one line.

May import: selector.core.
"""
