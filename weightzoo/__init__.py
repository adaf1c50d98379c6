"""weightzoo: build, store, share and learn from zoos of trained neural networks."""
__version__ = "0.1.0"
