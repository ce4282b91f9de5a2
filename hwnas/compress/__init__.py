"""Compression: pruning, quantization and the real subjects they are measured on."""
