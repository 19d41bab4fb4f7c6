"""A Vertex AI emulator for the ``vertex`` provider's tests (see README.md)."""
