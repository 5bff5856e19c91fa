"""The image registry: moto's ECR server on loopback, pushed to and read with real boto3.

The product reads digests with ``describe_images`` against :attr:`Registry.endpoint_url`; the
kubelet resolves references with ``batch_get_image`` against the same server, so while the
registry is down, both fail. A push is a rebuild: ``latest`` moves to a new digest and an
immutable ``latest-<context hash>`` tag names the same digest. Each image's manifest lists its
layers, which is how the kubelet knows what a node still has to download.
"""

import contextlib
import hashlib
import json
import logging
import random
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from clustersim.images import ImageRef, Layer, Manifest

ACCOUNT = "123456789012"
REGION = "us-east-1"
# Dummy credentials for boto3 against moto, for whoever's environment has none.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
# How a first build splits into layers, bottom (base OS) to top (the project's own files).
# A rebuild keeps the bottom layers and replaces the top ones.
_FIRST_BUILD_LAYERS = (0.04, 0.30, 0.20, 0.15, 0.11, 0.08, 0.07, 0.05)
_REBUILT_LAYERS = 3
# Images from other registries (busybox, python:3.11-slim) are made up: one layer of this size.
FOREIGN_IMAGE_BYTES = 100 * 10**6
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
_LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class PullError(Exception):
    """A reference could not be resolved; the message reads as containerd's would."""


def repository_uri(repository: str, account: str = ACCOUNT, region: str = REGION) -> str:
    """Return an ECR repository URI: ``<account>.dkr.ecr.<region>.amazonaws.com/<name>``."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{repository}"


class _MotoServer(ThreadedMotoServer):
    """moto's threaded server, noticing a stop within 50 ms rather than its default 500 ms.

    Every test stops a registry, and registry outages stop and start one.
    """

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=0.05)


class Registry:
    """One ECR repository on a moto server, and the layer plan of the images pushed to it.

    moto keeps its data in process-wide backends, so two sims in one process must use
    different repository names; ``start`` empties this sim's repository.
    """

    def __init__(self, repository: str, rng: random.Random) -> None:
        self.repository = repository
        self.uri = repository_uri(repository)
        self._rng = rng
        self._port = 0  # bound on the first start, then kept across outages
        self._server: _MotoServer | None = None
        self._client: Any = None
        self._layers: tuple[Layer, ...] = ()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    @property
    def endpoint_url(self) -> str:
        """Return the URL to give boto3 as ``endpoint_url``."""
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        """Start serving on a free port and create an empty repository."""
        self.set_serving(True)
        self._client = boto3.client(
            "ecr",
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            config=botocore.config.Config(
                retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10
            ),
        )
        with contextlib.suppress(self._client.exceptions.RepositoryNotFoundException):
            self._client.delete_repository(repositoryName=self.repository, force=True)
        self._client.create_repository(repositoryName=self.repository)

    def stop(self) -> None:
        """Stop serving."""
        self.set_serving(False)

    def set_serving(self, serving: bool) -> None:
        """Start or stop the server on the same port; its data stays (a registry outage)."""
        if serving and self._server is None:
            self._server = _MotoServer(ip_address="127.0.0.1", port=self._port, verbose=False)
            self._server.start()
            self._port = self._server.get_host_and_port()[1]
        elif not serving and self._server is not None:
            self._server.stop()
            self._server = None

    def push(
        self, size_bytes: int, context_hash: str | None = None, changed_fraction: float = 0.3
    ) -> tuple[str, str]:
        """Push a rebuild; return its digest and its immutable ``latest-<hash>`` tag.

        The rebuild keeps the previous image's bottom layers up to ``1 - changed_fraction`` of
        its size and adds new top layers for the rest; a first push is all new layers.
        """
        layers = self._plan_layers(size_bytes, changed_fraction)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                # moto reports config.size as describe_images' imageSizeInBytes, where ECR
                # reports the sum of the layers, so the config carries that sum.
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": sum(layer.size for layer in layers),
                    "digest": self._random_digest(),
                },
                "layers": [
                    {"mediaType": _LAYER_TYPE, "size": layer.size, "digest": layer.digest}
                    for layer in layers
                ],
            }
        )
        tag = f"latest-{context_hash or format(self._rng.getrandbits(32), '08x')}"
        response = self._client.put_image(
            repositoryName=self.repository, imageManifest=manifest, imageTag="latest"
        )
        self._client.put_image(repositoryName=self.repository, imageManifest=manifest, imageTag=tag)
        self._layers = layers
        return response["image"]["imageId"]["imageDigest"], tag

    def resolve(self, ref: ImageRef) -> Manifest:
        """Return what ``ref`` names in its registry now, or raise :class:`PullError`."""
        if ref.host != self.uri.partition("/")[0]:
            digest = "sha256:" + hashlib.sha256(ref.name.encode()).hexdigest()
            return Manifest(ref.repository, digest, (Layer(digest, FOREIGN_IMAGE_BYTES),))
        image_id = {"imageDigest": ref.digest} if ref.digest else {"imageTag": ref.tag}
        try:
            response = self._client.batch_get_image(repositoryName=ref.path, imageIds=[image_id])
        except botocore.exceptions.EndpointConnectionError:
            raise PullError(
                f'failed to resolve reference "{ref.name}": failed to do request: Head '
                f'"https://{ref.host}/v2/{ref.path}/manifests/{ref.digest or ref.tag}": '
                f"dial tcp {self.endpoint_url.removeprefix('http://')}: connect: connection refused"
            ) from None
        except botocore.exceptions.ClientError:
            raise PullError(
                f'failed to resolve reference "{ref.name}": {ref.name}: not found'
            ) from None
        if not response["images"]:
            raise PullError(f'failed to resolve reference "{ref.name}": {ref.name}: not found')
        image = response["images"][0]
        layers = json.loads(image["imageManifest"])["layers"]
        return Manifest(
            ref.repository,
            image["imageId"]["imageDigest"],
            tuple(Layer(layer["digest"], layer["size"]) for layer in layers),
        )

    def _plan_layers(self, size_bytes: int, changed_fraction: float) -> tuple[Layer, ...]:
        kept: list[Layer] = []
        budget = (1 - changed_fraction) * size_bytes
        for layer in self._layers:
            if sum(k.size for k in kept) + layer.size > budget:
                break
            kept.append(layer)
        fresh = size_bytes - sum(layer.size for layer in kept)
        shares = _FIRST_BUILD_LAYERS if not kept else (1 / _REBUILT_LAYERS,) * _REBUILT_LAYERS
        sizes = [int(fresh * share) for share in shares]
        sizes[-1] += fresh - sum(sizes)
        return tuple(kept) + tuple(Layer(self._random_digest(), size) for size in sizes)

    def _random_digest(self) -> str:
        return f"sha256:{self._rng.getrandbits(256):064x}"
