"""Docker HEALTHCHECK for the mlserve runtime: exit 0 when GET /health answers 200.

Same port resolution as the runtime: AIP_HTTP_PORT (Vertex AI), then MLSERVE_PORT, then 8080.
"""

import os
import sys
import urllib.request

port = os.environ.get("AIP_HTTP_PORT") or os.environ.get("MLSERVE_PORT") or "8080"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as reply:
        sys.exit(0 if reply.status == 200 else 1)
except Exception:  # noqa: BLE001 - any failure means unhealthy
    sys.exit(1)
