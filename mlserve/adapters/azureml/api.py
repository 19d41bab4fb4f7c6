"""azure-ai-ml for the azureml adapter: lazy import, the credential, one ``MLClient``, waiting
for long-running operations, and error translation.

``Azure(target, secrets)`` imports azure-ai-ml and azure-identity (the ``azure`` extra:
``MissingDependency``, exit 3, without them), resolves the subscription (the target's, else
AZURE_SUBSCRIPTION_ID) and takes azure-identity's ``DefaultAzureCredential`` (environment,
workload identity, managed identity, Azure CLI...). ``check()`` asks it for a token once, so a
machine without credentials is exit 3 with the fix before anything is built. ARM requests are
retried by azure-core (``MAX_ATTEMPTS`` in all, honouring ``Retry-After`` on 429), then ``call``
turns what is left into ``mlserve.errors``:

=============================================  ======================================  ====
Azure error                                    mlserve error                           exit
=============================================  ======================================  ====
no credential in the chain, 401                MissingCredentials (the fix)             3
403 AuthorizationFailed                        MissingCredentials (the role to grant)   3
BadArgument naming the instance type           InvalidInput (Azure's message)           2
QuotaExceeded / OutOfQuota                     ProviderError naming the quota           1
404 ResourceNotFound / ResourceGroupNotFound   ProviderError (check the target)         1
429 or 5xx after the retries                   ProviderError ("retried N times")        1
anything else, the service unreachable         ProviderError (code and message)         1
=============================================  ======================================  ====

Messages are Azure's own, with secret values blanked; no azure type or traceback leaves this
module. azure-ai-ml prints a dot to stdout at each poll of an operation and logs at INFO:
``quiet()`` keeps both off mlserve's output while an operation runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
from typing import Any, Callable

from ...errors import (DeployError, InvalidInput, MissingCredentials, ProviderError,
                       missing_extra)

#: Seconds between looks at a long operation (its state for the progress line): quick at first,
#: then every MAX_POLL seconds (a 10-minute deployment costs ~70 reads, not 1,200).
FIRST_POLL, MAX_POLL = 0.3, 10.0
#: ARM attempts per request (azure-core's RetryPolicy: exponential backoff, Retry-After on 429).
MAX_ATTEMPTS = 4
CREDENTIALS_FIX = ("sign in for azure-identity's default chain: AZURE_CLIENT_ID, AZURE_TENANT_ID "
                   "and AZURE_CLIENT_SECRET for a service principal, a managed or workload "
                   "identity, or `az login`")
SUBSCRIPTION_FIX = "set the target's subscription_id, or AZURE_SUBSCRIPTION_ID"
_QUOTA = {"QuotaExceeded", "OutOfQuota", "SubscriptionQuotaExceeded"}
_DENIED = {"AuthorizationFailed", "LinkedAuthorizationFailed", "Forbidden"}
_MISSING = {"ResourceNotFound", "ResourceGroupNotFound", "NotFound", "WorkspaceNotFound",
            "UserError"}


def _sdk():
    try:
        import azure.ai.ml  # noqa: F401
        import azure.core.exceptions  # noqa: F401
        import azure.identity  # noqa: F401
    except ImportError as exc:
        raise missing_extra("azure", getattr(exc, "name", None) or "azure-ai-ml") from None
    import azure.ai.ml
    import azure.core.exceptions
    import azure.identity
    return azure


@contextlib.contextmanager
def quiet():
    """azure-ai-ml's poll dots (stdout) and INFO logs away from mlserve's output."""
    loggers = [logging.getLogger(n) for n in ("azure", "azure.ai.ml", "azure.identity")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class Azure:
    """The Azure side of one command (see the module docstring)."""

    def __init__(self, target: Any, secrets: dict[str, str] | None = None) -> None:
        self.azure = _sdk()
        self.subscription = target.subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID")
        self.resource_group, self.workspace = target.resource_group, target.workspace
        self.secrets = [v for v in (secrets or {}).values() if v]
        if not self.subscription:
            raise MissingCredentials("no Azure subscription for the azureml target",
                                     fix=SUBSCRIPTION_FIX)
        with quiet():
            self.credential = self.azure.identity.DefaultAzureCredential()
            self.ml = self.azure.ai.ml.MLClient(
                self.credential, self.subscription, self.resource_group, self.workspace,
                retry_total=MAX_ATTEMPTS - 1, retry_backoff_factor=0.5, retry_backoff_max=20)
        self._checked = False

    def check(self) -> None:
        """A token from the default chain, once per command (exit 3 when there is none)."""
        if self._checked:
            return
        scope = self.ml._base_url.rstrip("/") + "/.default" if getattr(
            self.ml, "_base_url", None) else "https://management.azure.com/.default"
        self.call("get a token", lambda: self.credential.get_token(scope))
        self._checked = True

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` (an SDK call) with its errors translated; ``what`` names it in messages."""
        exceptions = self.azure.core.exceptions
        try:
            with quiet():
                return fn()
        except exceptions.ClientAuthenticationError as exc:
            raise MissingCredentials(f"Azure refused the credentials to {what}: "
                                     f"{self._said(exc)}", fix=CREDENTIALS_FIX) from None
        except exceptions.HttpResponseError as exc:
            raise self.translate(exc, what) from None
        except exceptions.AzureError as exc:
            raise ProviderError(f"Azure ML {what} failed: {self._said(exc)}",
                                fix="check the network and the Azure endpoint, then run the "
                                    "command again") from None
        except self.azure.ai.ml.exceptions.MlException as exc:
            raise InvalidInput(f"Azure ML refused to {what}: {self._said(exc)}",
                               fix="correct the target's options in mlserve.yaml") from None

    def wait(self, what: str, poller: Any, deadline: float, progress: Any = None,
             describe: Callable[[], str] | None = None) -> Any:
        """The result of a long-running operation (an ``LROPoller``), polled until ``deadline``
        (``time.monotonic()``); ``progress.log`` hears each new state ``describe()`` says."""
        shown, delay = None, FIRST_POLL
        with quiet():
            while not poller.done():
                if time.monotonic() > deadline:
                    raise DeployError(f"{what} was not done by the target's health_timeout",
                                      fix="see `mlserve status` and `mlserve logs`; raise the "
                                          "target's health_timeout if Azure is just slow")
                if describe is not None and progress is not None:
                    now = self.call(what, describe)
                    if now != shown:
                        progress.log(now)
                        shown = now
                self.call(what, lambda: poller.wait(delay))
                delay = min(delay * 1.5, MAX_POLL)
        return self.call(what, poller.result)

    def translate(self, exc: Any, what: str):
        """The ``MlserveError`` of an ``HttpResponseError`` (see the module docstring)."""
        code = str(getattr(getattr(exc, "error", None), "code", None) or "")
        status = int(getattr(exc, "status_code", None) or 0)
        said = self._said(exc)
        text = f"Azure ML refused to {what} ({code or status}): {said}"
        if code in _DENIED or status == 403:
            return MissingCredentials(text, fix="grant the identity a role on the workspace "
                                      "that may do this (e.g. AzureML Data Scientist), or use "
                                      "credentials that have one")
        if status == 401:
            return MissingCredentials(text, fix=CREDENTIALS_FIX)
        if code in _QUOTA or "quota" in said.lower():
            return ProviderError(f"an Azure quota stops {what}: {said}",
                                 fix="request more quota for the SKU's VM family in the Azure "
                                     "portal (Azure Machine Learning > Quotas), or choose a "
                                     "smaller or other instance_type / fewer replicas",
                                 details=text)
        if status == 429 or status >= 500:
            return ProviderError(f"{what} kept failing after {MAX_ATTEMPTS} attempts with "
                                 f"backoff ({code or status}): {said}",
                                 fix="run the command again later; the previous release keeps "
                                     "serving")
        if code in _MISSING or status == 404:
            return ProviderError(text, fix="check the target's subscription_id, resource_group "
                                 "and workspace (and that the workspace exists)")
        if re.search(r"instance.?type|sku", said, re.I) and status == 400:
            return InvalidInput(text, where="instance_type",
                                fix="use a SKU managed online endpoints support (see the "
                                    "target's instance_type) and deploy again")
        if status == 400:
            return InvalidInput(text, fix="correct the target's options in mlserve.yaml")
        return ProviderError(text, fix="see Azure's message above")

    def _said(self, exc: Any) -> str:
        """Azure's message: the ARM error's ``message``, else the exception's first line
        without azure-core's ``(Code)`` prefix; secrets blanked, at most 600 characters."""
        error = getattr(exc, "error", None)
        text = str(getattr(error, "message", None) or getattr(exc, "message", None) or exc)
        text = re.sub(r"^\(\w+\)\s*", "", text.strip()).split("\n", 1)[0]
        return self.blank(" ".join(text.split()))[:600]

    def blank(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "***")
        return text
