"""advclaims: claims about adversarial examples as executable, statistical tests."""

__version__ = "0.1.0"
