"""SSH public keys are parsed like ``ssh-keygen -lf`` reads them; anything else is refused."""

import base64
import struct

import pytest

from reservations.sshkeys import InvalidKey, parse_public_key
from tests.reservations.conftest import ECDSA, ECDSA_FINGERPRINT, ED25519, ED25519_FINGERPRINT


def _wire(*fields: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


SK_ED25519 = (
    f"sk-ssh-ed25519@openssh.com {_wire(b'sk-ssh-ed25519@openssh.com', bytes(range(32)), b'ssh:')}"
    " yubikey"
)
# ssh-keygen -lf prints this for the key above.
SK_ED25519_FINGERPRINT = "SHA256:/p0CbeE3dk2SyW1OXXsThGc12ezDVD8eGw2/vtztDfk"


@pytest.mark.parametrize(
    ("line", "fingerprint", "key_type"),
    [
        (ED25519, ED25519_FINGERPRINT, "ssh-ed25519"),
        (ECDSA, ECDSA_FINGERPRINT, "ecdsa-sha2-nistp256"),
        (SK_ED25519, SK_ED25519_FINGERPRINT, "sk-ssh-ed25519@openssh.com"),
    ],
)
def test_fingerprint_matches_ssh_keygen(line, fingerprint, key_type):
    key = parse_public_key(line)
    assert key.fingerprint == fingerprint
    assert key.key_type == key_type


def test_surrounding_whitespace_and_comment_spacing_are_normalised():
    key = parse_public_key(f"  {ED25519.replace(' me@host', '   me@host')}\n")
    assert key.comment == "me@host x"
    assert key.line == ED25519


def test_key_without_comment_is_accepted():
    key = parse_public_key(ED25519.rsplit(" ", 2)[0])
    assert key.comment == ""
    assert key.fingerprint == ED25519_FINGERPRINT


ED25519_BODY = ED25519.split()[1]
E65537 = (65537).to_bytes(3, "big")


def _key(key_type: str, *fields: bytes) -> str:
    return f"{key_type} {_wire(key_type.encode(), *fields)}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Paste a public key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "Unsupported key type 'ssh-dss'"),
        (f'command="rm -rf /" {ED25519}', "Unsupported key type"),
        ("ssh-ed25519 not*base64 me", "not valid base64"),
        (f"ssh-rsa {ED25519_BODY} me", "says it is ssh-rsa but its body holds a ssh-ed25519"),
        (f"ssh-ed25519 {ED25519_BODY[:-8]} me", "cut short"),
        (f"ssh-ed25519 {ED25519_BODY[:-1]} me", "not valid base64"),
        (_key("ssh-ed25519", bytes(31)), "wrong length"),
        (_key("ssh-ed25519", bytes(32), b"extra"), "extra bytes"),
        (_key("ssh-ed25519"), "cut short"),
        (_key("ssh-rsa", E65537, bytes(129)), "numbers are not valid"),
        (_key("ssh-rsa", E65537, bytes(1) + (2**1023).to_bytes(128, "big")), "at least 2048"),
        (_key("ecdsa-sha2-nistp256", b"nistp384", b"\x04" + bytes(64)), "wrong curve"),
        (_key("ecdsa-sha2-nistp256", b"nistp256", bytes(65)), "point is not valid"),
        (_key("sk-ssh-ed25519@openssh.com", bytes(32), b"web:x"), "no ssh: application"),
        (f"{ED25519}\n{ECDSA}", "one key at a time"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ("ssh-ed25519 " + "A" * 20_000, "too long"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(text, message):
    with pytest.raises(InvalidKey, match=message):
        parse_public_key(text)
