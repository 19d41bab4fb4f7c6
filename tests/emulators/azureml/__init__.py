"""An Azure Machine Learning managed online endpoints emulator for tests (see README.md)."""
