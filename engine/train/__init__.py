"""The trainer subprocess, `python -m engine.train RUN_DIR`, and its components.

trainer.py is the short loop; checkpoint.py, device.py, lr_schedule.py, data.py, evaluate.py
and watch.py are the parts it drives. Importing this package does not import torch.
"""
