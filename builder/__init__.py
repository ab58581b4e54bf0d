"""onie-builder: build ONIE-style network installer environments from YAML recipes."""

__version__ = "0.1.0"
