#!/usr/bin/env node
// Verify a tokensign JWT with panva's `jose` (npm, pinned in package-lock.json),
// fetching the issuer's LIVE JWKS with createRemoteJWKSet.
//
//   node verify_jose.mjs --token T --jwks-url URL --iss ISS --aud AUD \
//                        --alg ALG --kid KID --typ TYP
// (--name=VALUE works too, as in the Python verifiers, where a value starting with "-"
// needs it.)
//
// Prints exactly one JSON line on stdout:
//   {"ok":true,"claims":{...}}          exit 0: the token verifies
//   {"ok":false,"error":"STAGE: ..."}   exit 1: the token is rejected
//   {"ok":false,"error":"setup: ..."}   exit 2: the verifier could not run
//                                       (jose not installed, bad usage)
// STAGE is one of format, header, jwks, key, signature, claims (see
// verify_pyjwt.py); "internal" is a verifier bug and still a rejection.
//
// Standalone on purpose: depends on nothing of tokensign.

const HEADER_MEMBERS = ['alg', 'kid', 'typ'];
const FETCH_TIMEOUT_MS = 10000;
// Members that would make a JWK a private or secret key.
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const OPTIONS = ['token', 'jwks-url', 'iss', 'aud', 'alg', 'kid', 'typ'];
// tokensign's JWKs (SPEC §5, docs/api.md): exactly these members, in this order, per key type.
const JWK_MEMBERS = {
  EC: ['kid', 'kty', 'alg', 'use', 'crv', 'x', 'y'],
  RSA: ['kid', 'kty', 'alg', 'use', 'n', 'e'],
  OKP: ['kid', 'kty', 'alg', 'use', 'crv', 'x'],
};
// The key each alg needs (RFC 7518 §3, RFC 8037 §3.1): kty, crv, coordinate octets.
const ALG_KEY = {
  ES256: ['EC', 'P-256', 32],
  ES384: ['EC', 'P-384', 48],
  RS256: ['RSA', null, null],
  PS256: ['RSA', null, null],
  EdDSA: ['OKP', 'Ed25519', 32],
};
const RSA_MIN_BITS = 2048; // RFC 7518 §3.3, §3.5

class Reject extends Error {
  constructor(stage, message) {
    super(`${stage}: ${message}`);
  }
}

function emit(obj, code) {
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code));
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(argv[i]);
    if (!m || !OPTIONS.includes(m[1])) throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
    let value = m[2];
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Error(`--${m[1]} needs a value`);
      value = argv[++i];
    }
    if (m[1] in args) throw new Error(`--${m[1]} given twice`);
    args[m[1]] = value;
  }
  const missing = OPTIONS.filter((o) => !(o in args));
  if (missing.length) throw new Error(`missing ${missing.map((o) => '--' + o).join(', ')}`);
  return args;
}

// Strict RFC 7515 base64url: URL alphabet, no padding, canonical.
function b64urlDecode(segment, what) {
  if (!/^[A-Za-z0-9_-]*$/.test(segment) || segment.length % 4 === 1) {
    throw new Reject('format', `${what} is not unpadded base64url`);
  }
  const raw = Buffer.from(segment, 'base64url');
  if (raw.toString('base64url') !== segment) {
    throw new Reject('format', `${what} is not canonical base64url`);
  }
  return raw;
}

function jsonObject(raw, what) {
  let obj;
  try {
    obj = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch (e) {
    throw new Reject('format', `${what} is not UTF-8 JSON: ${e.message}`);
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new Reject('format', `${what} is not a JSON object`);
  }
  return obj;
}

function splitToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Reject('format', `compact JWS must have 3 parts, has ${parts.length}`);
  const header = jsonObject(b64urlDecode(parts[0], 'protected header'), 'protected header');
  jsonObject(b64urlDecode(parts[1], 'payload'), 'payload');
  if (b64urlDecode(parts[2], 'signature').length === 0) throw new Reject('format', 'empty signature');
  return header;
}

function checkHeader(header, args, jose) {
  // jose's own reading of the header must agree with ours.
  const libHeader = jose.decodeProtectedHeader(args.token);
  if (JSON.stringify(libHeader) !== JSON.stringify(header)) {
    throw new Reject('header', `jose read the header as ${JSON.stringify(libHeader)}, we read ${JSON.stringify(header)}`);
  }
  const extra = Object.keys(header).filter((k) => !HEADER_MEMBERS.includes(k)).sort();
  if (extra.length) {
    throw new Reject('header', `protected header has members other than alg, kid, typ: ${JSON.stringify(extra)}`);
  }
  for (const name of HEADER_MEMBERS) {
    if (!(name in header)) throw new Reject('header', `protected header lacks ${JSON.stringify(name)}`);
    if (header[name] !== args[name]) {
      throw new Reject('header', `protected header ${name} is ${JSON.stringify(header[name])}, expected ${JSON.stringify(args[name])}`);
    }
  }
}

// A base64url key member as bytes; a malformed one makes the key unfit.
function keyOctets(jwk, kid, name) {
  const value = jwk[name];
  if (typeof value !== 'string' || !value) throw new Reject('key', `JWK ${kid} member ${name} is not a non-empty string`);
  try {
    return b64urlDecode(value, `JWK member ${name}`);
  } catch (e) {
    throw new Reject('key', `JWK ${kid}: ${e.message}`);
  }
}

// The JWK is of the key type alg needs, with exactly the members tokensign publishes, in its
// fixed order, and well-formed key material.
function checkKeyShape(jwk, kid, alg) {
  if (!Object.hasOwn(ALG_KEY, alg)) throw new Reject('key', `no key type known for alg ${alg}`);
  const [kty, crv, coord] = ALG_KEY[alg];
  if (jwk.kty !== kty) throw new Reject('key', `JWK ${kid} has kty ${JSON.stringify(jwk.kty)}; ${alg} needs ${kty}`);
  if (crv !== null && jwk.crv !== crv) throw new Reject('key', `JWK ${kid} has crv ${JSON.stringify(jwk.crv)}; ${alg} needs ${crv}`);
  const members = Object.keys(jwk);
  if (JSON.stringify(members) !== JSON.stringify(JWK_MEMBERS[kty])) {
    throw new Reject('key', `JWK ${kid} has the members ${JSON.stringify(members)}, expected exactly ${JSON.stringify(JWK_MEMBERS[kty])} in that order`);
  }
  if (kty === 'RSA') {
    const n = keyOctets(jwk, kid, 'n');
    const e = keyOctets(jwk, kid, 'e');
    if (n[0] === 0 || e[0] === 0) throw new Reject('key', `JWK ${kid}: n or e has a leading zero octet (RFC 7518 §6.3.1)`);
    if (n.length * 8 < RSA_MIN_BITS) throw new Reject('key', `JWK ${kid}: RSA modulus of ${n.length * 8} bits, below ${RSA_MIN_BITS}`);
  } else {
    for (const name of kty === 'EC' ? ['x', 'y'] : ['x']) {
      if (keyOctets(jwk, kid, name).length !== coord) throw new Reject('key', `JWK ${kid}: ${name} is not ${coord} octets`);
    }
  }
}

// RFC 7518: an ECDSA signature is R||S of twice the coordinate size, an EdDSA one 64 octets, an
// RSA one exactly as long as the modulus (leading zero octets kept).
function checkSignatureSize(token, jwk, alg) {
  const sig = b64urlDecode(token.split('.')[2], 'signature');
  const [kty, , coord] = ALG_KEY[alg];
  const want = kty === 'RSA' ? keyOctets(jwk, jwk.kid, 'n').length : 2 * coord;
  if (sig.length !== want) throw new Reject('signature', `${alg} signature of ${sig.length} octets, expected ${want}`);
}

async function checkJwk(jwks, kid, alg, jose) {
  if (!jwks || !Array.isArray(jwks.keys)) throw new Reject('jwks', "JWKS is not an object with a 'keys' array");
  const found = jwks.keys.filter((k) => k && typeof k === 'object' && k.kid === kid);
  if (found.length !== 1) throw new Reject('key', `${found.length} keys with kid ${JSON.stringify(kid)} in the JWKS`);
  const jwk = found[0];
  const priv = PRIVATE_MEMBERS.filter((m) => m in jwk);
  if (priv.length) throw new Reject('key', `JWK ${kid} holds private key members ${JSON.stringify(priv)}`);
  if ((jwk.alg ?? alg) !== alg) throw new Reject('key', `JWK ${kid} is for alg ${JSON.stringify(jwk.alg)}, not ${alg}`);
  if ((jwk.use ?? 'sig') !== 'sig') throw new Reject('key', `JWK ${kid} has use ${JSON.stringify(jwk.use)}, not "sig"`);
  checkKeyShape(jwk, kid, alg);
  const thumb = await jose.calculateJwkThumbprint(jwk, 'sha256');
  if (thumb !== kid) throw new Reject('key', `kid ${kid} is not the RFC 7638 thumbprint of its key (${thumb})`);
  return jwk;
}

// Belt and braces over the library's own checks.
function checkClaims(claims, args) {
  if (claims.iss !== args.iss) throw new Reject('claims', `iss is ${JSON.stringify(claims.iss)}, expected ${JSON.stringify(args.iss)}`);
  const auds = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!auds.length || !auds.every((a) => typeof a === 'string') || !auds.includes(args.aud)) {
    throw new Reject('claims', `aud ${JSON.stringify(claims.aud)} does not hold ${JSON.stringify(args.aud)}`);
  }
  if (!Number.isSafeInteger(claims.exp)) throw new Reject('claims', `exp ${JSON.stringify(claims.exp)} is not an integer NumericDate`);
  if (claims.exp <= Date.now() / 1000) throw new Reject('claims', `exp ${claims.exp} is not in the future`);
}

const STAGE_BY_CODE = {
  ERR_JWS_INVALID: 'format',
  ERR_JWT_INVALID: 'format',
  ERR_JOSE_ALG_NOT_ALLOWED: 'header',
  ERR_JOSE_NOT_SUPPORTED: 'header',
  ERR_JWKS_INVALID: 'jwks',
  ERR_JWKS_TIMEOUT: 'jwks',
  ERR_JOSE_GENERIC: 'jwks', // fetchJwks: non-200 answer or body not JSON
  ERR_JWKS_NO_MATCHING_KEY: 'key',
  ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'key',
  ERR_JWK_INVALID: 'key',
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'signature',
  ERR_JWT_CLAIM_VALIDATION_FAILED: 'claims',
  ERR_JWT_EXPIRED: 'claims',
};

async function verify(args, jose) {
  const header = splitToken(args.token);
  checkHeader(header, args, jose);

  let url;
  try {
    url = new URL(args['jwks-url']);
  } catch (e) {
    throw new Reject('jwks', `bad JWKS URL: ${e.message}`);
  }
  const JWKS = jose.createRemoteJWKSet(url, { timeoutDuration: FETCH_TIMEOUT_MS });
  let result;
  try {
    result = await jose.jwtVerify(args.token, JWKS, {
      issuer: args.iss,
      audience: args.aud,
      algorithms: [args.alg],
      typ: args.typ,
      requiredClaims: ['iss', 'aud', 'exp'],
      clockTolerance: 0,
    });
  } catch (e) {
    let stage = STAGE_BY_CODE[e?.code];
    // jose refuses an RSA key below 2048 bits with a plain TypeError: the key is unfit.
    if (!stage && e instanceof TypeError && /modulusLength/.test(e.message)) stage = 'key';
    if (!stage && e?.code && /^E[A-Z]+$/.test(e.code)) stage = 'jwks'; // ECONNREFUSED etc. from http.get
    throw new Reject(stage ?? 'internal', `${e?.code ?? e?.name}: ${e?.message}`);
  }
  // Our own checks run after the library's, so that a rejection the tests
  // see is the library's wherever the library checks the point at all.
  const ph = result.protectedHeader;
  if (JSON.stringify(ph) !== JSON.stringify(header)) {
    throw new Reject('header', `jose verified the header ${JSON.stringify(ph)}, we read ${JSON.stringify(header)}`);
  }
  const jwk = await checkJwk(JWKS.jwks(), args.kid, args.alg, jose);
  checkSignatureSize(args.token, jwk, args.alg);
  checkClaims(result.payload, args);
  return result.payload;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    return emit({ ok: false, error: `setup: usage: ${e.message}` }, 2);
  }
  let jose;
  try {
    jose = await import('jose');
  } catch (e) {
    return emit({ ok: false, error: `setup: jose is not installed (${e.message}); run npm ci in tests/interop` }, 2);
  }
  try {
    const claims = await verify(args, jose);
    emit({ ok: true, claims }, 0);
  } catch (e) {
    if (e instanceof Reject) emit({ ok: false, error: e.message }, 1);
    else emit({ ok: false, error: `internal: ${e?.name}: ${e?.message}` }, 1);
  }
}

main();
