"""A SageMaker emulator that runs the endpoint's image on the real Docker engine: see
README.md. Started by ``tests.infra.sagemaker`` (``python -m tests.emulators.sagemaker``)."""
