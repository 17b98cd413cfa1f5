"""Specialist (non-generative) task heads and their evaluation metrics."""
