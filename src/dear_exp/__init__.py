"""dear-exp: DEAR (Dissect and Prune) experiments with Hydra and Lightning."""

__version__ = "0.1.0"
