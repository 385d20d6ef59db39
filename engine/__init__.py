"""Headless engine of the FusterCluck workbench: profiles, data, tokenizer, model, training.

Importing this package imports neither torch nor sentencepiece; the modules that need them
import them where the work happens.
"""

__version__ = "0.1.0"
