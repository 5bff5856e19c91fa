"""Image references, and what one node's container runtime holds."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``repo:tag`` or ``repo@sha256:…``, normalised like containerd."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "ImageRef":
        """Parse ``ref``; a bare Docker Hub name gains ``docker.io/library/`` and ``:latest``."""
        name, _, digest = ref.partition("@")
        last_slash = name.rfind("/")
        tag = None
        if ":" in name[last_slash + 1 :]:
            name, _, tag = name.rpartition(":")
        first, _, rest = name.partition("/")
        if not rest:
            name = f"docker.io/library/{name}"
        elif "." not in first and ":" not in first and first != "localhost":
            name = f"docker.io/{name}"
        if tag is None and not digest:
            tag = "latest"
        return cls(name, tag, digest or None)

    @property
    def host(self) -> str:
        """Return the registry host."""
        return self.repository.partition("/")[0]

    @property
    def path(self) -> str:
        """Return the repository path within its registry."""
        return self.repository.partition("/")[2]

    @property
    def name(self) -> str:
        """Return the normalised reference, as a node lists it."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag}"

    @property
    def default_pull_policy(self) -> str:
        """Return Kubernetes' default: Always for ``:latest`` or no tag, else IfNotPresent."""
        if self.digest is None and self.tag == "latest":
            return "Always"
        return "IfNotPresent"


@dataclass(frozen=True)
class Layer:
    """One layer of an image, shared by every image that contains the same digest."""

    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a registry says a reference resolves to."""

    repository: str
    digest: str
    layers: tuple[Layer, ...]

    @property
    def size(self) -> int:
        """Return the image's size in bytes (the sum of its layers)."""
        return sum(layer.size for layer in self.layers)

    @property
    def image_id(self) -> str:
        """Return the ``imageID`` a container status reports: ``repo@sha256:…``."""
        return f"{self.repository}@{self.digest}"


@dataclass
class _HeldImage:
    manifest: Manifest
    tags: set[str] = field(default_factory=set)


class NodeImages:
    """The images and layers one node holds, and which tags point at which image there.

    A tag is local: after ``repo:latest`` was pulled once, the node keeps resolving it to the
    digest it pulled until something pulls that tag again (the PR #202 incident).
    """

    def __init__(self) -> None:
        self._images: dict[str, _HeldImage] = {}  # by image ID
        self._layers: set[str] = set()

    def lookup(self, ref: ImageRef) -> Manifest | None:
        """Return the held image ``ref`` names locally, or None."""
        for held in self._images.values():
            if held.manifest.repository != ref.repository:
                continue
            if ref.digest == held.manifest.digest or (ref.tag and ref.tag in held.tags):
                return held.manifest
        return None

    def missing_bytes(self, manifest: Manifest) -> int:
        """Return how many bytes of ``manifest`` this node would have to download."""
        return sum(layer.size for layer in manifest.layers if layer.digest not in self._layers)

    def add(self, manifest: Manifest, tag: str | None) -> None:
        """Record a finished pull; the tag moves here from any older image of the repository."""
        held = self._images.setdefault(manifest.image_id, _HeldImage(manifest))
        self._layers.update(layer.digest for layer in manifest.layers)
        if tag:
            for other in self._images.values():
                if other.manifest.repository == manifest.repository:
                    other.tags.discard(tag)
            held.tags.add(tag)

    def node_status(self) -> list[dict]:
        """Return ``node.status.images``: names (digest first, then tags) and sizes."""
        images = sorted(self._images.values(), key=lambda held: -held.manifest.size)
        return [
            {
                "names": [held.manifest.image_id]
                + [f"{held.manifest.repository}:{tag}" for tag in sorted(held.tags)],
                "sizeBytes": held.manifest.size,
            }
            for held in images
        ]
