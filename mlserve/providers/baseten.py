"""``baseten``: Baseten, packaged with Truss. Build only."""

from ..vocab import ArtifactKind
from .base import ProviderInfo, build_only

INFO = ProviderInfo(
    name="baseten",
    title="Baseten",
    layer="model-endpoint",
    options="mlserve.targets:BasetenTarget",
    artifact=ArtifactKind.TRUSS,
    default_format="truss",
    features=build_only("this version renders the Truss (`mlserve build`); push it with "
                        "`truss push`"),
    # No state names yet: they are mapped when the adapter that reads them arrives.
)
