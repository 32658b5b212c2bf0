"""Training utilities: LARS, learning-rate / momentum schedules, batched GPU augmentations."""
