"""The one seam to the image registry: what digest does the tracked tag point at right now?

ECR is asked with boto3 ``describe_images``; any other OCI registry with a manifest ``HEAD``
(the ``Docker-Content-Digest`` header). Every failure is "unknown" (``None``), never an exception
that stops a reconcile tick: with an unknown digest nothing rotates.
"""

import logging
import re
from dataclasses import dataclass

import boto3
import botocore.config
import botocore.exceptions
import requests
from django.conf import settings

logger = logging.getLogger(__name__)

_ECR_HOST = re.compile(r"^(?P<account>\d+)\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")
_CONTEXT_TAG = re.compile(r"^latest-(?P<hash>[0-9a-f]{6,64})$")
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass(frozen=True)
class TagDigest:
    """What a tag points at, and the immutable ref that names the same image."""

    repo: str
    tag: str
    digest: str
    context_hash: str

    @property
    def immutable_ref(self) -> str:
        """``repo:latest-<context hash>`` when the build pushed one, else ``repo@sha256:…``."""
        if self.context_hash:
            return f"{self.repo}:latest-{self.context_hash}"
        return f"{self.repo}@{self.digest}"


def split_repository(repo: str) -> tuple[str, str]:
    """Split ``host/path/name`` into the registry host and the repository path."""
    host, _, path = repo.partition("/")
    if not path or ("." not in host and ":" not in host and host != "localhost"):
        raise ValueError(f"{repo!r} is not a registry/repository reference.")
    return host, path


def current_digest(repo: str, tag: str) -> TagDigest | None:
    """Return what ``repo:tag`` points at now, or None when the registry cannot say."""
    try:
        if settings.REGISTRY_KIND == "ecr":
            return _ecr_digest(repo, tag)
        return _oci_digest(repo, tag)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        logger.warning("registry: cannot resolve %s:%s: %s", repo, tag, exc)
    except requests.RequestException as exc:
        logger.warning("registry: cannot resolve %s:%s: %s", repo, tag, exc)
    except ValueError as exc:
        logger.warning("registry: %s", exc)
    return None


def _ecr_client(region: str):
    return boto3.client(
        "ecr",
        region_name=region,
        endpoint_url=settings.ECR_ENDPOINT_URL or None,
        config=botocore.config.Config(
            connect_timeout=settings.KUBERNETES_REQUEST_TIMEOUT,
            read_timeout=settings.KUBERNETES_REQUEST_TIMEOUT,
            retries={"max_attempts": 1},
        ),
    )


def _ecr_digest(repo: str, tag: str) -> TagDigest | None:
    host, path = split_repository(repo)
    match = _ECR_HOST.match(host)
    if match is None:
        raise ValueError(f"{host!r} is not an ECR registry host; set REGISTRY_KIND=oci.")
    response = _ecr_client(match["region"]).describe_images(
        registryId=match["account"], repositoryName=path, imageIds=[{"imageTag": tag}]
    )
    details = response.get("imageDetails", [])
    if not details:
        return None
    image = details[0]
    return TagDigest(
        repo=repo,
        tag=tag,
        digest=image["imageDigest"],
        context_hash=_context_hash(image.get("imageTags", [])),
    )


def _oci_digest(repo: str, tag: str) -> TagDigest | None:
    host, path = split_repository(repo)
    headers = {"Accept": _MANIFEST_TYPES}
    if settings.REGISTRY_TOKEN:
        headers["Authorization"] = f"Bearer {settings.REGISTRY_TOKEN}"
    # Like Docker, speak plain http only to a registry on this machine.
    scheme = "http" if host.partition(":")[0] in ("localhost", "127.0.0.1") else "https"
    response = requests.head(
        f"{scheme}://{host}/v2/{path}/manifests/{tag}",
        headers=headers,
        timeout=settings.KUBERNETES_REQUEST_TIMEOUT,
    )
    response.raise_for_status()
    digest = response.headers.get("Docker-Content-Digest", "")
    if not digest.startswith("sha256:"):
        return None
    return TagDigest(repo=repo, tag=tag, digest=digest, context_hash="")


def _context_hash(tags: list[str]) -> str:
    hashes = sorted(match["hash"] for tag in tags if (match := _CONTEXT_TAG.match(tag)))
    return hashes[0] if hashes else ""
