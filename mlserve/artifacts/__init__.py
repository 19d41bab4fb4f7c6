"""Artifacts a release is built into beyond files: container images (``image``: build, push)
and the registry credentials a push needs (``registry``). See each module's docstring for its
API; nothing here imports the docker SDK or boto3 until a function runs."""
