"""Inference: loading a run or model, generation with streaming, chat."""
