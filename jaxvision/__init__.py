"""jaxvision: a JAX-native, pure-functional research codebase for computer vision."""

__version__ = "0.1.0"
