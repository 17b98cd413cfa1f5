"""dianjing (點睛): instruction fine-tuning of pre-trained language models."""

__version__ = "0.1.0"
