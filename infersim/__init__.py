"""infersim: predict how large language models behave when served on real hardware."""

__version__ = "0.1.0"
