#!/usr/bin/python3
"""What the independent verifiers (verify_pyjwt.py, verify_jwcrypto.py) check around their
library: the token's shape, the header, the JWK, the claims, and how they report. The signature
itself is always checked by the library. Standard library only; nothing of tokensign.
"""

import argparse
import base64
import hashlib
import json
import re
import sys
import time

HEADER_MEMBERS = ("alg", "kid", "typ")
FETCH_TIMEOUT_S = 10
_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")


class Reject(Exception):
    def __init__(self, stage, message):
        super().__init__(f"{stage}: {message}")


def emit(obj, code):
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def fail_setup(message):
    emit({"ok": False, "error": f"setup: {message}"}, 2)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors are "could not run", not "rejected"
        fail_setup(f"usage: {message}")


def parse_args(argv, library):
    p = _Parser(description=f"Verify a JWT against a live JWKS with {library}.")
    for name in ("token", "jwks-url", "iss", "aud", "alg", "kid", "typ"):
        p.add_argument(f"--{name}", required=True)
    return p.parse_args(argv)


def b64url_decode(segment, what):
    """Strict RFC 7515 base64url: URL alphabet, no padding, canonical."""
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise Reject("format", f"{what} is not unpadded base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise Reject("format", f"{what} is not canonical base64url")
    return raw


def strict_json_object(raw, what):
    """UTF-8 JSON object, no duplicate member names at any depth, no NaN/Infinity."""

    def pairs(items):
        obj = {}
        for k, v in items:
            if k in obj:
                raise Reject("format", f"{what} repeats the member {k!r}")
            obj[k] = v
        return obj

    def bad_constant(c):
        raise Reject("format", f"{what} holds the non-JSON constant {c}")

    try:
        text = raw.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=pairs, parse_constant=bad_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise Reject("format", f"{what} is not UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise Reject("format", f"{what} is not a JSON object")
    return obj


def split_token(token):
    parts = token.split(".")
    if len(parts) != 3:
        raise Reject("format", f"compact JWS must have 3 parts, has {len(parts)}")
    header = strict_json_object(b64url_decode(parts[0], "protected header"), "protected header")
    payload = strict_json_object(b64url_decode(parts[1], "payload"), "payload")
    if not b64url_decode(parts[2], "signature"):
        raise Reject("format", "empty signature")
    return header, payload


def check_header(header, args):
    extra = sorted(set(header) - set(HEADER_MEMBERS))
    if extra:
        raise Reject("header", f"protected header has members other than alg, kid, typ: {extra}")
    for name in HEADER_MEMBERS:
        want = getattr(args, name)
        if name not in header:
            raise Reject("header", f"protected header lacks {name!r}")
        if header[name] != want:
            raise Reject("header", f"protected header {name} is {header[name]!r}, expected {want!r}")


# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
# Members that would make a JWK a private or secret key (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
# tokensign's JWKs (SPEC §5, docs/api.md): exactly these members, in this order, per key type.
_JWK_MEMBERS = {
    "EC": ("kid", "kty", "alg", "use", "crv", "x", "y"),
    "RSA": ("kid", "kty", "alg", "use", "n", "e"),
    "OKP": ("kid", "kty", "alg", "use", "crv", "x"),
}
# The key each alg needs (RFC 7518 §3, RFC 8037 §3.1): kty, crv, coordinate octets.
_ALG_KEY = {
    "ES256": ("EC", "P-256", 32),
    "ES384": ("EC", "P-384", 48),
    "RS256": ("RSA", None, None),
    "PS256": ("RSA", None, None),
    "EdDSA": ("OKP", "Ed25519", 32),
}
_RSA_MIN_BITS = 2048  # RFC 7518 §3.3, §3.5


def rfc7638_thumbprint(jwk):
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise Reject("key", f"JWK {jwk.get('kid')!r} has no thumbprint members for kty {jwk.get('kty')!r}")
    text = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def key_octets(jwk, kid, name):
    """A base64url key member as bytes; a malformed one makes the key unfit."""
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise Reject("key", f"JWK {kid!r} member {name!r} is not a non-empty string")
    try:
        return b64url_decode(value, f"JWK member {name!r}")
    except Reject as e:
        raise Reject("key", f"JWK {kid!r}: {e}") from None


def check_key_shape(jwk, kid, alg):
    """The JWK is of the key type alg needs, with exactly the members tokensign publishes, in
    its fixed order, and well-formed key material."""
    if alg not in _ALG_KEY:
        raise Reject("key", f"no key type known for alg {alg!r}")
    kty, crv, coord = _ALG_KEY[alg]
    if jwk.get("kty") != kty:
        raise Reject("key", f"JWK {kid!r} has kty {jwk.get('kty')!r}; {alg} needs {kty!r}")
    if crv is not None and jwk.get("crv") != crv:
        raise Reject("key", f"JWK {kid!r} has crv {jwk.get('crv')!r}; {alg} needs {crv!r}")
    members = tuple(jwk)
    if members != _JWK_MEMBERS[kty]:
        raise Reject("key", f"JWK {kid!r} has the members {list(members)}, expected exactly "
                            f"{list(_JWK_MEMBERS[kty])} in that order")
    if kty == "RSA":
        n, e = key_octets(jwk, kid, "n"), key_octets(jwk, kid, "e")
        if n[0] == 0 or e[0] == 0:
            raise Reject("key", f"JWK {kid!r}: n or e has a leading zero octet (RFC 7518 §6.3.1)")
        if len(n) * 8 < _RSA_MIN_BITS:
            raise Reject("key", f"JWK {kid!r}: RSA modulus of {len(n) * 8} bits, below {_RSA_MIN_BITS}")
    else:
        for name in ("x", "y") if kty == "EC" else ("x",):
            if len(key_octets(jwk, kid, name)) != coord:
                raise Reject("key", f"JWK {kid!r}: {name} is not {coord} octets")


def check_signature_size(token, jwk, alg):
    """RFC 7518: an ECDSA signature is R||S of twice the coordinate size, an EdDSA one 64
    octets, an RSA one exactly as long as the modulus (leading zero octets kept)."""
    sig = b64url_decode(token.split(".")[2], "signature")
    kty, _, coord = _ALG_KEY[alg]
    want = len(key_octets(jwk, jwk.get("kid"), "n")) if kty == "RSA" else 2 * coord
    if len(sig) != want:
        raise Reject("signature", f"{alg} signature of {len(sig)} octets, expected {want}")


def check_jwk(jwks, kid, alg):
    """The JWK the token names must be a public signing key for this alg whose
    kid is its RFC 7638 thumbprint."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise Reject("jwks", "JWKS is not an object with a 'keys' array")
    found = [k for k in jwks["keys"] if isinstance(k, dict) and k.get("kid") == kid]
    if len(found) != 1:
        raise Reject("key", f"{len(found)} keys with kid {kid!r} in the JWKS")
    jwk = found[0]
    private = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if private:
        raise Reject("key", f"JWK {kid!r} holds private key members {private}")
    if jwk.get("alg", alg) != alg:
        raise Reject("key", f"JWK {kid!r} is for alg {jwk.get('alg')!r}, not {alg!r}")
    if jwk.get("use", "sig") != "sig":
        raise Reject("key", f"JWK {kid!r} has use {jwk.get('use')!r}, not 'sig'")
    check_key_shape(jwk, kid, alg)
    thumb = rfc7638_thumbprint(jwk)
    if thumb != kid:
        raise Reject("key", f"kid {kid!r} is not the RFC 7638 thumbprint of its key ({thumb!r})")
    return jwk


def check_claims(claims, args):
    """Belt and braces over the library's own checks (jwcrypto, for one, allows exp == now)."""
    if claims.get("iss") != args.iss:
        raise Reject("claims", f"iss is {claims.get('iss')!r}, expected {args.iss!r}")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if not auds or not all(isinstance(a, str) for a in auds) or args.aud not in auds:
        raise Reject("claims", f"aud {aud!r} does not hold {args.aud!r}")
    exp = claims.get("exp")
    if type(exp) is not int:
        raise Reject("claims", f"exp {exp!r} is not an integer NumericDate")
    if exp <= time.time():
        raise Reject("claims", f"exp {exp} is not in the future")
