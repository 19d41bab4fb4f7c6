"""mlserve's one vocabulary: the words every module, adapter and output uses, as enums.

A provider's own state names ("InService", "Creating", a host's "not running") are mapped onto
``DeployState`` at the adapter's edge (``ProviderInfo.state``); nothing past the edge compares
strings. Each enum is a ``str`` so that JSON output, the journal and tables print the value.
Pure: imports nothing of mlserve, cheap enough for the CLI's start-up.
"""

from __future__ import annotations

import enum


class _Word(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class DeployState(_Word):
    """Where a deployment (or one resource of it) stands, as mlserve reports it."""

    NOT_DEPLOYED = "NOT DEPLOYED"   # nothing found at the provider, nothing in the journal
    PENDING = "PENDING"             # created, not answering yet (loading, starting, updating)
    BUILDING = "BUILDING"           # an artifact is being built or pushed
    READY = "READY"                 # answering /health (every host, every replica)
    DEGRADED = "DEGRADED"           # answering, but not everywhere (some hosts down)
    FAILED = "FAILED"               # there, but not answering or not running
    UNREACHABLE = "UNREACHABLE"     # the provider could not be asked
    DELETED = "DELETED"             # removed by mlserve delete
    UNKNOWN = "UNKNOWN"             # a provider state mlserve has no word for yet


class Feature(_Word):
    """What a provider can do; each provider declares, per feature, None or the reason it cannot."""

    DEPLOY = "deploy"               # mlserve deploys it (else: build only)
    ROLLBACK = "rollback"
    LOGS = "logs"
    ZERO_DOWNTIME = "zero_downtime"
    REPLICAS = "replicas"           # scaling.max_replicas > 1
    AUTOSCALING = "autoscaling"     # scaling between min and max by load
    SCALE_TO_ZERO = "scale_to_zero"  # scaling.min_replicas == 0
    GPU = "gpu"                     # resources.gpu
    SECRETS = "secrets"             # manifest secrets reach the model without being stored
    FLEET = "fleet"                 # several hosts behind one target


class ArtifactKind(_Word):
    """What a provider is handed."""

    FILES = "files"                 # a release directory (local, ssh)
    IMAGE = "image"                 # a container image
    COG = "cog"                     # a Cog project (Replicate)
    TRUSS = "truss"                 # a Truss (Baseten)
    USER_DATA = "user-data"         # cloud-init user-data (VMs)


class Action(_Word):
    """What a deploy would do to a target (``mlserve plan``)."""

    NONE = "none"
    CREATE = "create"
    UPDATE = "update"
