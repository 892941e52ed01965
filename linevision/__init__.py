"""linevision: real-time production-line vision for lithium-ion battery cell inspection."""

__version__ = "0.1.0"
