#!/usr/bin/python3
"""Verify a tokensign JWT with jwcrypto (Debian python3-jwcrypto), fetching the
issuer's live JWKS with urllib and loading it with jwcrypto.jwk.JWKSet.

    verify_jwcrypto.py --token T --jwks-url URL --iss ISS --aud AUD \
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

import json
import sys

from verify_common import (FETCH_TIMEOUT_S, Reject, check_claims, check_header, check_jwk,
                           check_signature_size, emit, fail_setup, parse_args, split_token)


def fetch_jwks(url):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_S) as resp:
            if resp.status != 200:
                raise Reject("jwks", f"GET {url} answered {resp.status}")
            return resp.read()
    except urllib.error.HTTPError as e:
        raise Reject("jwks", f"GET {url} answered {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise Reject("jwks", f"GET {url} failed: {e}") from None


def verify(args):
    try:
        from jwcrypto import jwk as jjwk
        from jwcrypto import jws as jjws
        from jwcrypto import jwt as jjwt
        from jwcrypto.common import JWException
    except ImportError as e:
        fail_setup(f"jwcrypto is not importable ({e}); install python3-jwcrypto")

    header, _ = split_token(args.token)
    check_header(header, args)

    body = fetch_jwks(args.jwks_url)
    try:
        keyset = jjwk.JWKSet.from_json(body)
    except (JWException, ValueError, TypeError) as e:
        raise Reject("jwks", f"JWKSet.from_json: {type(e).__name__}: {e}") from None
    try:
        raw_jwks = json.loads(body)
    except ValueError as e:
        raise Reject("jwks", f"JWKS is not JSON: {e}") from None

    # check_claims given: exp, iss and aud must be present; iss must equal,
    # aud must equal or (array) contain the expected value.
    t = jjwt.JWT(algs=[args.alg], check_claims={"iss": args.iss, "aud": args.aud, "exp": None})
    t.leeway = 0
    try:
        # The whole key set, as a relying party would pass it: jwcrypto picks
        # the key by the header's kid and fails if the set has none.
        t.deserialize(args.token, keyset)
    except jjwt.JWTMissingKey as e:
        raise Reject("key", f"{type(e).__name__}: {e}") from None
    except jjws.InvalidJWSSignature as e:
        raise Reject("signature", f"{type(e).__name__}: {e}") from None
    except jjws.InvalidJWSObject as e:
        raise Reject("format", f"{type(e).__name__}: {e}") from None
    except (
        jjwt.JWTExpired,
        jjwt.JWTNotYetValid,
        jjwt.JWTMissingClaim,
        jjwt.JWTInvalidClaimValue,
        jjwt.JWTInvalidClaimFormat,
    ) as e:
        raise Reject("claims", f"{type(e).__name__}: {e}") from None
    except (JWException, ValueError) as e:
        raise Reject("signature", f"{type(e).__name__}: {e}") from None

    lib_header = json.loads(t.header)
    if lib_header != header:
        raise Reject("header", f"jwcrypto read the header as {lib_header!r}, we read {header!r}")
    claims = json.loads(t.claims)
    # Our own checks run after the library's, so that a rejection the tests
    # see is the library's wherever the library checks the point at all.
    jwk = check_jwk(raw_jwks, args.kid, args.alg)
    check_signature_size(args.token, jwk, args.alg)
    lib_thumb = jjwk.JWK(**jwk).thumbprint()
    if lib_thumb != args.kid:
        raise Reject("key", f"kid {args.kid!r} is not jwcrypto's thumbprint of its key ({lib_thumb!r})")
    check_claims(claims, args)
    return claims


def main(argv):
    args = parse_args(argv, "jwcrypto")
    try:
        claims = verify(args)
    except Reject as e:
        emit({"ok": False, "error": str(e)}, 1)
    except Exception as e:  # a verifier bug is a rejection too, never a pass
        emit({"ok": False, "error": f"internal: {type(e).__name__}: {e}"}, 1)
    emit({"ok": True, "claims": claims}, 0)


if __name__ == "__main__":
    main(sys.argv[1:])
