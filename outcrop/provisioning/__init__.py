"""Provisioned throughput: capacity bought in model units, serving foundation and custom models."""
