"""The model: its shape (config.py, presets), the Llama-compatible decoder, parameter and memory
budgets (info.py), Hugging Face tensor names, and KV-cache generation.

config.py is a leaf the profile layer reads; the rest may import the core and `engine.data`
(token ids), never jobs, eval, train or export. Importing this package does not import torch.
"""
