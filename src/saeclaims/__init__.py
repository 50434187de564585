"""sae-claims: interpretability claims about SAEs as statistical unit tests."""

__version__ = "0.1.0"
