"""boto3 for the sagemaker adapter: lazy import, one client per service, retries, error
translation and a count of the calls made.

``Aws(region, secrets)`` imports boto3 (the ``aws`` extra: ``MissingDependency``, exit 3, without
it), resolves the region (the target's, else AWS_REGION / AWS_DEFAULT_REGION / the profile's)
and the credentials; either missing is ``MissingCredentials`` (exit 3) naming the fix.
``aws.client(service)`` is one client per service with botocore's ``standard`` retry mode:
throttling and 5xx answers are retried with exponential backoff and jitter (``MAX_ATTEMPTS``
attempts), then ``call`` turns what is left into ``mlserve.errors``:

==========================================  =====================================  ====
SageMaker / AWS error                       mlserve error                          exit
==========================================  =====================================  ====
no credentials, no region                   MissingCredentials (the fix)            3
AccessDenied(Exception), bad/expired token  MissingCredentials (the IAM fix)        3
ValidationException (unknown instance...)   InvalidInput (SageMaker's message)      2
ResourceLimitExceeded                       ProviderError naming the quota          1
throttling, 5xx after the retries           ProviderError ("retried N times")       1
anything else, endpoint unreachable         ProviderError (code and message)        1
==========================================  =====================================  ====

Messages are SageMaker's own, with secret values blanked (a model's environment could be
echoed); no botocore type or traceback leaves this module. ``aws.calls`` lists every API
operation made (``service:Operation``, counted once however often it was retried) and
``aws.attempts`` every HTTP request sent: the benchmark's figures, and how tests check that a
no-op deploy only reads.
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import (InvalidInput, MissingCredentials, ProviderError, missing_extra)

#: Attempts per call (botocore's standard mode: exponential backoff with jitter, base 1 s, cap
#: 20 s) for throttling, 5xx and connection errors.
MAX_ATTEMPTS = 5
CREDENTIALS_FIX = ("set AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                   "AWS_PROFILE, or run where an instance role applies)")
REGION_FIX = ("set the target's `region`, or AWS_REGION / AWS_DEFAULT_REGION, or a region in "
              "the AWS profile")
_DENIED = {"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
           "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
           "InvalidSignatureException", "SignatureDoesNotMatch", "MissingAuthenticationToken"}
_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException",
              "RequestLimitExceeded", "ServiceUnavailable", "InternalFailure",
              "InternalServerError", "InternalServerException"}


def _sdk():
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError:
        raise missing_extra("aws", "boto3") from None
    return boto3, botocore


class Aws:
    """The AWS side of one command (see the module docstring)."""

    def __init__(self, region: str | None, secrets: dict[str, str] | None = None) -> None:
        boto3, botocore = _sdk()
        self._botocore = botocore
        self.session = boto3.session.Session(region_name=region)
        self.region = self.session.region_name
        self.secrets = [v for v in (secrets or {}).values() if v]
        self.calls: list[str] = []
        self.attempts = 0
        self._clients: dict[str, Any] = {}
        if not self.region:
            raise MissingCredentials("no AWS region for the sagemaker target", fix=REGION_FIX)
        if self.session.get_credentials() is None:
            raise MissingCredentials("no AWS credentials found for the sagemaker target",
                                     fix=CREDENTIALS_FIX)

    def client(self, service: str):
        if service not in self._clients:
            config = self._botocore.config.Config(
                retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                connect_timeout=10, read_timeout=70, user_agent_extra="mlserve")
            client = self.session.client(service, config=config)
            client.meta.events.register("before-call", self._count_call)
            client.meta.events.register("before-send", self._count_attempt)
            self._clients[service] = client
        return self._clients[service]

    def _count_call(self, model=None, **_: Any) -> None:
        self.calls.append(f"{model.service_model.service_name}:{model.name}")

    def _count_attempt(self, **_: Any) -> None:
        self.attempts += 1

    def call(self, service: str, operation: str, **params: Any) -> dict:
        """``client(service).<operation>(**params)`` with its errors translated."""
        method = getattr(self.client(service), _snake(operation))
        try:
            return method(**params)
        except self._botocore.exceptions.ClientError as exc:
            raise self.translate(exc, operation, service) from None
        except (self._botocore.exceptions.NoCredentialsError,
                self._botocore.exceptions.PartialCredentialsError):
            raise MissingCredentials("no AWS credentials found for the sagemaker target",
                                     fix=CREDENTIALS_FIX) from None
        except self._botocore.exceptions.NoRegionError:
            raise MissingCredentials("no AWS region for the sagemaker target",
                                     fix=REGION_FIX) from None
        except self._botocore.exceptions.BotoCoreError as exc:
            raise ProviderError(f"{service} {operation} failed: {self.blank(str(exc))}",
                                fix="check the network and the AWS endpoint, then run the "
                                    "command again") from None

    def code(self, exc) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    def translate(self, exc, operation: str, service: str = "sagemaker"):
        """The ``MlserveError`` of a botocore ``ClientError`` (see the module docstring)."""
        code = self.code(exc)
        said = self.blank(str(exc.response.get("Error", {}).get("Message", "")))[:500]
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        who = _SERVICES.get(service, service)
        text = f"{who} refused {operation} ({code}): {said}" if said else \
            f"{who} refused {operation} ({code})"
        if code in _DENIED:
            return MissingCredentials(text, fix=f"allow the AWS identity to call {operation} "
                                      "(an IAM policy), or use credentials that may")
        if code == "ValidationException":
            return InvalidInput(text, fix="correct the target's options in mlserve.yaml "
                                "(instance_type, role, serverless...) and deploy again")
        if code == "ResourceLimitExceeded":
            quota = _quota(said)
            return ProviderError(
                f"an AWS quota stops {operation}: {quota or said}",
                fix=f"ask for more in Service Quotas (Amazon SageMaker: "
                    f"{quota or 'the quota named above'}), or choose a smaller or other "
                    "instance_type / fewer replicas", details=text)
        if code in _THROTTLED or status >= 500 or status == 429:
            return ProviderError(f"{operation} kept failing after {MAX_ATTEMPTS} attempts with "
                                 f"backoff ({code or status}): {said}",
                                 fix="run the command again later; the previous release keeps "
                                     "serving")
        return ProviderError(text, fix=f"see {who}'s message above")

    def blank(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "***")
        return text


_SERVICES = {"sagemaker": "SageMaker", "sagemaker-runtime": "SageMaker Runtime",
             "application-autoscaling": "Application Auto Scaling", "logs": "CloudWatch Logs"}


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def _quota(message: str) -> str | None:
    """The quota a ResourceLimitExceeded message names ("The account-level service limit
    'ml.g5.xlarge for endpoint usage' is 0 Instances...")."""
    found = re.search(r"limit '([^']{1,200})'", message)
    return found.group(1) if found else None
