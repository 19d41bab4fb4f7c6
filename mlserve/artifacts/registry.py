"""Registry credentials for a push: the user's docker config, or Amazon ECR through boto3.

``registry_of(repository) -> str`` names the registry host a repository lives on (``docker.io``
for Docker Hub names). ``credentials_for(registry) -> Credentials | None`` finds what a push to it
sends, obtained only when that registry is used:

- a host matching ``ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com[.cn]``: a token from ECR's
  ``get_authorization_token`` (boto3, the ``aws`` extra; AWS credentials from the usual variables,
  profile or role; ``AWS_ENDPOINT_URL`` is honoured);
- any other host: the user's docker config (``$DOCKER_CONFIG/config.json`` or
  ``~/.docker/config.json``): ``credHelpers``/``credsStore`` (``docker-credential-HELPER get``) and
  ``auths`` (base64 ``user:password``), read by the docker SDK's own resolver;
- ``None`` when neither has anything (a registry without authentication needs none).

``refused(registry, credentials)`` is the ``MissingCredentials`` (exit 3) for a registry that
asked for credentials: the fix is ``docker login REGISTRY``, or the AWS variables for ECR.
``Credentials`` never shows its password: its ``repr`` hides it, and no message, log line or
journal entry is built from it.
"""

from __future__ import annotations

import base64
import re
import warnings
from dataclasses import dataclass, field

from ..errors import MissingCredentials, missing_extra

# [0-9], not \d: \d matches any Unicode digit ("١٢٣..."), which no AWS account id has.
ECR_HOST = re.compile(r"(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)"
                      r"\.amazonaws\.com(?:\.cn)?")
AWS_FIX = ("set AWS credentials for the account that owns the registry (AWS_ACCESS_KEY_ID and "
           "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and make sure they may call "
           "ecr:GetAuthorizationToken")


@dataclass(frozen=True)
class Credentials:
    """What a push sends to one registry, and where it came from (for messages)."""

    username: str
    password: str = field(repr=False)
    registry: str
    source: str             # "docker config", "credential helper NAME", "Amazon ECR"

    def auth_config(self) -> dict:
        """The docker SDK's ``auth_config`` for ``push`` (an identity token has no username)."""
        if not self.username:
            return {"identitytoken": self.password, "serveraddress": self.registry}
        return {"username": self.username, "password": self.password,
                "serveraddress": self.registry}


def registry_of(repository: str) -> str:
    """The registry host of ``repository`` (``docker.io`` for a Docker Hub name)."""
    first, sep, _ = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def credentials_for(registry: str) -> Credentials | None:
    """The credentials a push to ``registry`` sends, or None (see the module docstring)."""
    if ECR_HOST.fullmatch(registry):
        return ecr_credentials(registry)
    return docker_config_credentials(registry)


def docker_config_credentials(registry: str) -> Credentials | None:
    """From the user's docker config; None when it has nothing for ``registry``."""
    try:
        import docker.auth
        import docker.errors
    except ImportError:
        raise missing_extra("docker", "docker") from None
    from docker.utils.config import find_config_file
    path = find_config_file() or "~/.docker/config.json"
    try:
        config = docker.auth.load_config()
        helper = config.get_credential_store(registry)
    except Exception as exc:      # the SDK's parser raises whatever the file makes it meet
        raise _unreadable(registry, path, exc) from None
    try:
        with warnings.catch_warnings():     # the SDK warns of a missing helper, then fails: we say it
            warnings.simplefilter("ignore")
            found = config.resolve_authconfig(registry)
    except docker.errors.DockerException as exc:
        # The helper failed (not installed, locked keychain): say which, never what it printed.
        raise MissingCredentials(
            f"the docker credential helper docker-credential-{helper} failed for {registry}",
            fix=f"install docker-credential-{helper} or run `docker login {registry}`",
            details=type(exc).__name__) from None
    except Exception as exc:
        raise _unreadable(registry, path, exc) from None
    # ``auths`` entries come back with lower-case keys, a helper's answer with capitalised ones.
    found = {key.lower(): value for key, value in (found or {}).items()}
    secret = found.get("password") or found.get("identitytoken")
    if not secret:
        return None
    source = f"credential helper docker-credential-{helper}" if helper else "docker config"
    return Credentials(found.get("username") or "", secret, registry, source)


def _unreadable(registry: str, path: str, exc: Exception) -> MissingCredentials:
    # Only the exception's type: its text may quote the file, which holds credentials.
    return MissingCredentials(f"cannot read the credentials for {registry} from {path} "
                              f"({type(exc).__name__})",
                              fix=f"fix or remove its entry for {registry}, then run "
                                  f"`docker login {registry}`")


def ecr_credentials(registry: str) -> Credentials:
    """A push token for an ECR registry, from ``get_authorization_token``."""
    match = ECR_HOST.fullmatch(registry)
    if match is None:
        raise ValueError(f"{registry} is not an Amazon ECR registry")
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise missing_extra("aws", "boto3") from None
    try:
        client = boto3.client("ecr", region_name=match["region"])
        reply = client.get_authorization_token(registryIds=[match["account"]])
        token = reply["authorizationData"][0]["authorizationToken"]
    except (botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError) as exc:
        raise MissingCredentials(f"no AWS credentials to obtain a push token for {registry}",
                                 fix=AWS_FIX, details=type(exc).__name__) from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise MissingCredentials(f"Amazon ECR refused a push token for {registry} ({code})",
                                 fix=AWS_FIX) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise MissingCredentials(f"cannot obtain a push token for {registry} from Amazon ECR "
                                 f"({type(exc).__name__})", fix=AWS_FIX) from None
    username, _, password = base64.b64decode(token).decode().partition(":")
    return Credentials(username, password, registry, "Amazon ECR")


def refused(registry: str, credentials: Credentials | None, said: str) -> MissingCredentials:
    """The error for a registry that refused the push for want of (valid) credentials."""
    if ECR_HOST.fullmatch(registry):
        fix = AWS_FIX
    else:
        fix = f"run `docker login {registry}` (or fix the entry for {registry} in your docker config)"
    if credentials is None:
        what = f"{registry} needs credentials to push and none are configured for it"
    else:
        what = f"{registry} refused the credentials from the {credentials.source}"
    return MissingCredentials(what, fix=fix, details=without_secret(said, credentials))


def without_secret(text: str, credentials: Credentials | None) -> str:
    """``text`` (a registry's message) with the password blanked, should a server echo it."""
    if credentials and credentials.password:
        text = text.replace(credentials.password, "***")
    return text
