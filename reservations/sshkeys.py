"""Parse OpenSSH public keys the way ``ssh-keygen -lf`` reads them, and fingerprint them.

A key line is ``<type> <base64 blob> [comment]``. The blob is a sequence of SSH wire-format
strings (RFC 4251: a 32-bit big-endian length, then that many bytes) whose first string repeats
the type; the rest depends on the type (RFC 4253, 5656, 8709 and OpenSSH's PROTOCOL.u2f). We
read every field, so a truncated, padded or mislabelled key is refused before it reaches a pod.
"""

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

ECDSA_CURVES = {
    "ecdsa-sha2-nistp256": ("nistp256", 65),
    "ecdsa-sha2-nistp384": ("nistp384", 97),
    "ecdsa-sha2-nistp521": ("nistp521", 133),
}
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", *ECDSA_CURVES, SK_ED25519, SK_ECDSA)
_CURVE_OF = {**ECDSA_CURVES, SK_ECDSA: ECDSA_CURVES["ecdsa-sha2-nistp256"]}
MIN_RSA_BITS = 2048
MAX_KEY_LINE = 16_384
_ED25519_LENGTH = 32


class InvalidKey(ValueError):
    """The text is not an OpenSSH public key we accept; the message says why."""


@dataclass(frozen=True)
class PublicKey:
    """A parsed public key: its type, wire blob, comment and ``SHA256:…`` fingerprint."""

    key_type: str
    blob: bytes
    comment: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def line(self) -> str:
        """The key as one authorized_keys line, normalised."""
        encoded = base64.b64encode(self.blob).decode()
        return f"{self.key_type} {encoded} {self.comment}".rstrip()


def parse_public_key(text: str) -> PublicKey:
    """Return the key in ``text`` (one OpenSSH public key line), or raise InvalidKey."""
    text = text.strip()
    if not text:
        raise InvalidKey("Paste a public key, such as the contents of ~/.ssh/id_ed25519.pub.")
    if len(text) > MAX_KEY_LINE:
        raise InvalidKey("That is too long to be a public key.")
    if "\n" in text or "\r" in text:
        raise InvalidKey("Paste one key at a time, on a single line.")
    if "PRIVATE KEY" in text:
        raise InvalidKey(
            "That is a private key. Never share it: paste the .pub file's contents instead."
        )
    key_type, _, rest = text.partition(" ")
    encoded, _, comment = rest.strip().partition(" ")
    if key_type not in KEY_TYPES:
        raise InvalidKey(
            f"Unsupported key type {key_type[:40]!r}: use one of {', '.join(KEY_TYPES)}. "
            "(Options before the key type are not accepted.)"
        )
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey("The key's body is not valid base64; copy the whole line.") from None
    reader = _WireReader(blob)
    embedded_type = reader.text()
    if embedded_type != key_type:
        raise InvalidKey(
            f"The key says it is {key_type} but its body holds a {embedded_type[:40] or 'blank'} "
            "key; copy the line again."
        )
    _read_key_fields(key_type, reader)
    if reader.remaining:
        raise InvalidKey("The key's body has extra bytes after the key; copy the line again.")
    return PublicKey(key_type=key_type, blob=blob, comment=" ".join(comment.split()))


def _read_key_fields(key_type: str, reader: "_WireReader") -> None:
    """Read (and check) the fields that follow the type in the key's blob."""
    if key_type in ("ssh-ed25519", SK_ED25519):
        if len(reader.string()) != _ED25519_LENGTH:
            raise InvalidKey("The Ed25519 key has the wrong length; copy the line again.")
    elif key_type == "ssh-rsa":
        exponent, modulus = reader.mpint(), reader.mpint()
        if exponent < 3 or modulus <= 0:
            raise InvalidKey("The RSA key's numbers are not valid; copy the line again.")
        if modulus.bit_length() < MIN_RSA_BITS:
            raise InvalidKey(
                f"RSA keys need at least {MIN_RSA_BITS} bits; this one has "
                f"{modulus.bit_length()}. An Ed25519 key (ssh-keygen -t ed25519) is better."
            )
    else:
        curve, point_length = _CURVE_OF[key_type]
        if reader.text() != curve:
            raise InvalidKey("The ECDSA key names the wrong curve; copy the line again.")
        point = reader.string()
        if len(point) != point_length or point[0] != 0x04:
            raise InvalidKey("The ECDSA key's point is not valid; copy the line again.")
    if key_type.startswith("sk-"):
        application = reader.text()
        if not application.startswith("ssh:"):
            raise InvalidKey("The security-key key has no ssh: application; copy it again.")


class _WireReader:
    """Read SSH wire-format fields from a blob, refusing to run past its end."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.blob) - self.offset

    def string(self) -> bytes:
        if self.remaining < 4:
            raise InvalidKey("The key's body is cut short; copy the whole line.")
        (length,) = struct.unpack_from(">I", self.blob, self.offset)
        start = self.offset + 4
        if length > len(self.blob) - start:
            raise InvalidKey("The key's body is cut short; copy the whole line.")
        self.offset = start + length
        return self.blob[start : self.offset]

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError:
            raise InvalidKey("The key's body is garbled; copy the line again.") from None

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)
