"""google-cloud-aiplatform for the vertex adapter: lazy import, Application Default
Credentials, one REST client per service, retries, error translation and a count of calls.

``Gcp(target, secrets)`` imports the SDK (the ``gcp`` extra: ``MissingDependency``, exit 3,
without it), finds Application Default Credentials (``google.auth.default``: the
GOOGLE_APPLICATION_CREDENTIALS file, gcloud's ADC file, or the attached service account) and
the project (the target's, else ADC's, else GOOGLE_CLOUD_PROJECT); either missing is
``MissingCredentials`` (exit 3) with the fix. Clients are ``aiplatform_v1``'s GAPIC clients
over REST (``api_transport="rest"``) at ``https://REGION-aiplatform.googleapis.com`` or the
target's ``api_endpoint``. ``call`` retries throttling and 5xx answers with exponential backoff
(``MAX_ATTEMPTS`` attempts) and turns what is left into ``mlserve.errors``:

==========================================  =====================================  ====
Google error (canonical status)             mlserve error                          exit
==========================================  =====================================  ====
no ADC, no project; UNAUTHENTICATED         MissingCredentials (the gcloud fix)      3
PERMISSION_DENIED                           MissingCredentials (the IAM role fix)    3
INVALID_ARGUMENT (machine type...)          InvalidInput (Google's message)          2
RESOURCE_EXHAUSTED naming a quota metric    ProviderError naming the quota           1
NOT_FOUND                                   ProviderError (what, and the fix)        1
throttling (429), 5xx after the retries     ProviderError ("N attempts")             1
anything else, endpoint unreachable         ProviderError (status and message)       1
==========================================  =====================================  ====

Messages are Google's own, with secret values blanked; no google type or traceback leaves the
adapter. ``gcp.calls`` lists each method called (``Service.Method``, once however often it
was retried) and ``gcp.attempts`` every HTTP request: the benchmark's figures, and how tests
check that a no-op deploy only reads.
"""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any

from ...errors import (InvalidInput, MissingCredentials, ProviderError, missing_extra)

MAX_ATTEMPTS = 5
#: backoff before attempt n+1: BASE_DELAY * 2**n seconds, with +-25% jitter, at most MAX_DELAY
BASE_DELAY, MAX_DELAY = 0.5, 16.0
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
CREDENTIALS_FIX = ("run `gcloud auth application-default login`, or set "
                   "GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run where "
                   "a service account is attached")
PROJECT_FIX = "set the target's `project`, or GOOGLE_CLOUD_PROJECT"
_RETRIED = {"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
_URL_PREFIX = re.compile(r"^(?:GET|POST|PATCH|PUT|DELETE) \S+: ")
_QUOTA = re.compile(r"exceed quota limits?:?\s*([A-Za-z0-9_./-]+)")


def _sdk():
    try:
        import google.api_core.exceptions as exceptions
        import google.auth
        import google.auth.exceptions
        from google.cloud import aiplatform_v1
    except ImportError:
        raise missing_extra("gcp", "google-cloud-aiplatform") from None
    return google.auth, exceptions, aiplatform_v1


def status_of(exc) -> str:
    """The canonical status name of a ``GoogleAPICallError`` ("NOT_FOUND")."""
    code = getattr(exc, "grpc_status_code", None)
    if code is not None:
        return getattr(code, "name", str(code))
    return {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
            404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
            500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(
        getattr(exc, "code", 0) or 0, "UNKNOWN")


class Gcp:
    """The Google Cloud side of one command (see the module docstring)."""

    def __init__(self, target, secrets: dict[str, str] | None = None) -> None:
        auth, self.exceptions, self.v1 = _sdk()
        self.secrets = [v for v in (secrets or {}).values() if v]
        self.region = target.region
        self.calls: list[str] = []
        self.attempts = 0
        self._clients: dict[str, Any] = {}
        try:
            self.credentials, adc_project = auth.default(scopes=SCOPES)
        except auth.exceptions.DefaultCredentialsError as exc:
            raise MissingCredentials("no Google Application Default Credentials for the vertex "
                                     "target", fix=CREDENTIALS_FIX,
                                     details=self.blank(str(exc))[:500]) from None
        self.project = target.project or adc_project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not self.project:
            raise MissingCredentials("no Google Cloud project for the vertex target",
                                     fix=PROJECT_FIX)
        self.api_endpoint = target.api_endpoint or \
            f"https://{self.region}-aiplatform.googleapis.com"
        self.logging_endpoint = target.logging_endpoint or "https://logging.googleapis.com"
        self._auth = auth

    @property
    def location(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def client(self, service: str):
        """``aiplatform_v1``'s ``{Model,Endpoint,Prediction}ServiceClient`` over REST."""
        if service not in self._clients:
            from google.api_core.client_options import ClientOptions
            cls = getattr(self.v1, f"{service}ServiceClient")
            client = cls(credentials=self.credentials, transport="rest",
                         client_options=ClientOptions(api_endpoint=self.api_endpoint))
            client._transport._session.hooks["response"].append(self._count_attempt)
            if service != "Prediction":     # its long-running operations' own REST session
                client._transport.operations_client._transport._session.hooks[
                    "response"].append(self._count_attempt)
            self._clients[service] = client
        return self._clients[service]

    def _count_attempt(self, response, *_, **__):
        self.attempts += 1
        return response

    def call(self, service: str, method: str, **request: Any):
        """``client(service).<method>(**request)``, retried, with its errors translated."""
        fn = getattr(self.client(service), _snake(method))
        self.calls.append(f"{service}.{method}")
        for attempt in range(MAX_ATTEMPTS):
            try:
                return fn(**request)
            except self.exceptions.GoogleAPICallError as exc:
                if not self._retried(exc) or attempt == MAX_ATTEMPTS - 1:
                    raise self.translate(exc, method) from None
            except self._auth.exceptions.GoogleAuthError as exc:
                raise MissingCredentials(f"Google refused the credentials for {method}: "
                                         f"{self.blank(str(exc))[:300]}",
                                         fix=CREDENTIALS_FIX) from None
            except OSError as exc:          # requests' ConnectionError is an OSError
                if attempt == MAX_ATTEMPTS - 1:
                    raise ProviderError(f"Vertex AI {method} failed: could not reach "
                                        f"{self.api_endpoint} ({type(exc).__name__})",
                                        fix="check the network and the target's api_endpoint, "
                                            "then run the command again") from None
            delay = min(BASE_DELAY * 2 ** attempt, MAX_DELAY)
            time.sleep(delay * random.uniform(0.75, 1.25))
        raise AssertionError("unreachable")

    def _retried(self, exc) -> bool:
        return status_of(exc) in _RETRIED and not _QUOTA.search(self.said(exc))

    def said(self, exc) -> str:
        """Google's message of ``exc``, without the URL the REST transport puts first."""
        return self.blank(_URL_PREFIX.sub("", str(getattr(exc, "message", exc) or "")))[:600]

    def translate(self, exc, method: str, retried: bool = True):
        """The ``MlserveError`` of a ``GoogleAPICallError`` (see the module docstring)."""
        status, said = status_of(exc), self.said(exc)
        text = f"Vertex AI refused {method} ({status}): {said}"
        if status in ("UNAUTHENTICATED",):
            return MissingCredentials(text, fix=CREDENTIALS_FIX)
        if status == "PERMISSION_DENIED":
            return MissingCredentials(text, fix=f"grant the ADC identity a role that allows "
                                      f"{method} in project {self.project} (roles/aiplatform.user), "
                                      "and check the project and region exist")
        quota = _QUOTA.search(said)
        if status == "RESOURCE_EXHAUSTED" and quota:
            return ProviderError(f"a Google Cloud quota stops {method}: {quota.group(1)}",
                                 fix=f"ask for more {quota.group(1)} in region {self.region} "
                                     "(console: IAM & Admin > Quotas), or choose a smaller "
                                     "machine_type or fewer replicas", details=text)
        if status == "INVALID_ARGUMENT":
            return InvalidInput(text, fix="correct the target's options in mlserve.yaml "
                                "(machine_type, accelerator, region...) and deploy again")
        if status == "NOT_FOUND":
            return ProviderError(text, fix=f"check the target's project ({self.project}) and "
                                 f"region ({self.region}); `mlserve status` shows what exists")
        if status in _RETRIED and retried:
            return ProviderError(f"{method} kept failing after {MAX_ATTEMPTS} attempts with "
                                 f"backoff ({status}): {said}",
                                 fix="run the command again later; the previous release keeps "
                                     "serving")
        return ProviderError(text, fix="see Vertex AI's message above")

    def wait(self, operation, method: str, deadline: float) -> Any:
        """Poll a long-running ``operation`` until done (GetOperation, backing off from 0.1 s
        to 10 s) or ``deadline`` (monotonic: then None); its result, or its error translated
        (``translate``, not retried: the operation has failed for good)."""
        delay = 0.1
        while True:
            self.calls.append("Operations.GetOperation")
            try:
                done = operation.done()
            except self.exceptions.GoogleAPICallError as exc:
                if not self._retried(exc):
                    raise self.translate(exc, "GetOperation") from None
                done = False
            if done:
                break
            if time.monotonic() > deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 1.5, 10.0)
        error = operation.exception()
        if error is not None:
            raise self.translate(error, method, retried=False)
        return operation.result()

    def session(self):
        """An authorized ``requests`` session (Cloud Logging's REST API)."""
        from google.auth.transport.requests import AuthorizedSession
        session = AuthorizedSession(self.credentials)
        session.hooks["response"].append(self._count_attempt)
        return session

    def blank(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "***")
        return text


def _snake(method: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()
