"""edgeq: does dynamic-range quantization break your model on the real device?"""

__version__ = "0.1.0"
