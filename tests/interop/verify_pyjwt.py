#!/usr/bin/python3
"""Verify a tokensign JWT with PyJWT (Debian python3-jwt 2.6), fetching the
issuer's live JWKS with PyJWKClient.

    verify_pyjwt.py --token T --jwks-url URL --iss ISS --aud AUD \
                    --alg ALG --kid KID --typ TYP

Each option also takes the form --name=VALUE, which a value starting with "-" needs
(a base64url kid may start with "-"; argparse would read "--kid -abc" as two options).

Prints exactly one JSON line on stdout:
    {"ok":true,"claims":{...}}                 exit 0: the token verifies
    {"ok":false,"error":"STAGE: ..."}          exit 1: the token is rejected
    {"ok":false,"error":"setup: ..."}          exit 2: the verifier could not run
                                               (missing library, bad usage)
STAGE names why the token was rejected, so that tests can tell a right
rejection from an accident: format (not a well-formed compact JWS),
header (protected header is not exactly {alg, kid, typ} with the expected
values), jwks (the JWKS could not be fetched or parsed), key (no key in the
JWKS for the token's kid, or that key is unfit), signature (the signature does
not verify), claims (iss, aud, exp).

It is run as a subprocess with /usr/bin/python3 and depends on nothing of tokensign: only on
its library and on verify_common.py beside it (the checks both verifiers share).
"""

import importlib
import socket
import sys

from verify_common import (FETCH_TIMEOUT_S, Reject, check_claims, check_header, check_jwk,
                           check_signature_size, emit, fail_setup, parse_args, split_token)


def verify(args):
    try:
        import jwt
        from jwt import exceptions as jex
    except ImportError as e:
        fail_setup(f"PyJWT is not importable ({e}); install python3-jwt")
    try:
        importlib.import_module("cryptography")  # PyJWT needs it for ES*/RS*/PS*/EdDSA
    except ImportError as e:
        fail_setup(f"cryptography is not importable ({e}); install python3-cryptography")

    header, _ = split_token(args.token)
    check_header(header, args)

    client = jwt.PyJWKClient(args.jwks_url)
    try:
        raw_jwks = client.fetch_data()  # also primes the client's JWKS cache
    except (jex.PyJWKClientError, ValueError, OSError) as e:
        raise Reject("jwks", f"{type(e).__name__}: {e}") from None
    try:
        signing_key = client.get_signing_key_from_jwt(args.token)
    except (jex.PyJWKClientError, jex.PyJWKSetError, jex.PyJWKError) as e:
        raise Reject("key", f"{type(e).__name__}: {e}") from None
    except (jex.PyJWTError, ValueError, OSError) as e:
        raise Reject("jwks", f"{type(e).__name__}: {e}") from None

    try:
        claims = jwt.decode(
            args.token,
            signing_key.key,
            algorithms=[args.alg],
            audience=args.aud,
            issuer=args.iss,
            leeway=0,
            options={
                "verify_signature": True,
                "verify_exp": True,
                "verify_aud": True,
                "verify_iss": True,
                "require": ["exp", "iss", "aud"],
            },
        )
    except jex.InvalidSignatureError as e:
        raise Reject("signature", f"{type(e).__name__}: {e}") from None
    except jex.InvalidAlgorithmError as e:
        raise Reject("header", f"{type(e).__name__}: {e}") from None
    except jex.InvalidKeyError as e:  # the kid's key is not of the type the alg needs
        raise Reject("key", f"{type(e).__name__}: {e}") from None
    except (
        jex.ExpiredSignatureError,
        jex.InvalidAudienceError,
        jex.InvalidIssuerError,
        jex.MissingRequiredClaimError,
        jex.ImmatureSignatureError,
        jex.InvalidIssuedAtError,
    ) as e:
        raise Reject("claims", f"{type(e).__name__}: {e}") from None
    except jex.DecodeError as e:
        raise Reject("format", f"{type(e).__name__}: {e}") from None
    except jex.PyJWTError as e:
        raise Reject("claims", f"{type(e).__name__}: {e}") from None

    # The header the library saw must be the one we checked.
    lib_header = jwt.get_unverified_header(args.token)
    if lib_header != header:
        raise Reject("header", f"PyJWT read the header as {lib_header!r}, we read {header!r}")
    # Our own checks run after the library's, so that a rejection the tests
    # see is the library's wherever the library checks the point at all.
    jwk = check_jwk(raw_jwks, args.kid, args.alg)
    check_signature_size(args.token, jwk, args.alg)
    check_claims(claims, args)
    return claims


def main(argv):
    args = parse_args(argv, "PyJWT")
    socket.setdefaulttimeout(FETCH_TIMEOUT_S)  # PyJWKClient's urlopen has no timeout
    try:
        claims = verify(args)
    except Reject as e:
        emit({"ok": False, "error": str(e)}, 1)
    except Exception as e:  # a verifier bug is a rejection too, never a pass
        emit({"ok": False, "error": f"internal: {type(e).__name__}: {e}"}, 1)
    emit({"ok": True, "claims": claims}, 0)


if __name__ == "__main__":
    main(sys.argv[1:])
