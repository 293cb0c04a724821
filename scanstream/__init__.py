"""scanstream: strategy scans whose status and results are folds over one Redis Stream per scan."""

__version__ = "0.1.0"
