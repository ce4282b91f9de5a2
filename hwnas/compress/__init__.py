"""Compression jobs: the prune → fine-tune → check loop and fine-tuning with distillation,
run on tasks (`hwnas.tasks`: real models with real data and a metric)."""
