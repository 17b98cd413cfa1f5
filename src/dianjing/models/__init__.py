"""Models: loading (HF folder, hub id, GGUF), adapters (PEFT)."""
