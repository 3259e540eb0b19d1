"""leakbench: an evaluation harness for leakage-aware modelling."""

__version__ = "0.1.0"
