"""Training: data loading and splits, LoRA training, evaluation, the retraining plan and train-and-
register.
"""
