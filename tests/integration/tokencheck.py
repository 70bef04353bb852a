#!/usr/bin/python3
"""tokencheck: an independent checker of what tokensignd keeps in the token (SPEC §6).

It reads every object of the token with p11probe, parses the key records (CKO_DATA,
CKA_APPLICATION "tokensign", CKA_VALUE a JSON record, the highest "seq" of a CKA_ID wins),
joins them with the key pairs, and re-derives every key's state at a given time with its own
implementation of the lifecycle rules (not a call into the daemon):

- keys sorted by activates_at, then kid;
- pending: activates_at > t;
- the candidate is the key with the latest activates_at <= t (ties: the smaller kid); it is
  active while t < its retires_at + prepublish (the grace period when no successor is ready),
  otherwise nothing signs (fail closed);
- every other started key is retired; it stopped signing at min(retires_at + prepublish, the
  next later activation), or at its own activates_at when it lost an equal-start tie (it never
  signed); the candidate past its grace stopped at retires_at + prepublish;
- a retired key may be destroyed at stopped + max(max_token_ttl of its record, configured
  max-token-ttl) + 60 s (SKEW); after that it is "expired".

Use as a module (the tests do) or from the shell:

    tokencheck.py MODULE TOKEN_LABEL PIN_FILE CONFIG_FILE [--now T] [--unsettled]

which prints the derived schedule and every broken invariant, and exits 1 if there is one.

Everything returns plain data and lists of problem strings, so that a test can print the whole
context (the derived table, the raw records) when it fails.
"""

import copy
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time

import harness

SKEW = 60
RECORD_FIELDS = {"v": int, "issuer": str, "iss": str, "kid": str, "alg": str, "id": str,
                 "seq": int, "created_at": int, "activates_at": int, "retires_at": int,
                 "max_token_ttl": int}
RECORD_VERSION = 2
APPLICATION = "tokensign"

CKK_EC = 3
CKK_EC_EDWARDS = 0x40

# DER OID of the curve (CKA_EC_PARAMS) -> (JWK crv, coordinate length)
CURVES = {
    "06082a8648ce3d030107": ("P-256", 32),
    "06052b81040022": ("P-384", 48),
    "06052b81040023": ("P-521", 66),
    "06032b6570": ("Ed25519", 32),
    "130c656477617264733235353139": ("Ed25519", 32),  # PrintableString "edwards25519"
}

# The attributes a private key must read back with (design.md; SPEC §6).
SAFE_PRIVATE = {"token": True, "private": True, "sensitive": True, "sign": True,
                "extractable": False, "decrypt": False, "unwrap": False, "derive": False,
                "never_extractable": True, "always_sensitive": True, "local": True}


# ---- configuration ----

_DUR = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text):
    m = _DUR.match(str(text))
    if not m:
        raise ValueError("not a duration: %r" % (text,))
    return int(m.group(1)) * _UNIT[m.group(2)]


class Timing:
    """What the lifecycle of one issuer depends on, from its configuration section."""

    def __init__(self, name, conf):
        self.name = name
        self.iss = conf.get("iss")
        self.alg = conf.get("algorithm", "ES256")
        try:
            self.period = parse_duration(conf["rotation-period"])
            self.prepublish = parse_duration(conf["prepublish"])
            self.max_token_ttl = parse_duration(conf["max-token-ttl"])
        except KeyError as e:
            raise ValueError("issuer %s: tokencheck needs %s in its configuration"
                             % (name, e.args[0]))

    def __repr__(self):
        return "Timing(%s: period=%d prepublish=%d max_token_ttl=%d)" % (
            self.name, self.period, self.prepublish, self.max_token_ttl)


def timings_of(issuers):
    """{name: Timing} from a harness-style {name: {key: value}} dict."""
    return {name: Timing(name, conf) for name, conf in issuers.items()}


def rescan_interval(issuers):
    """The daemon's rescan interval: half the shortest prepublish, clamped to 1..30 s."""
    t = timings_of(issuers)
    r = min([30] + [x.prepublish // 2 for x in t.values()])
    return max(1, r)


def read_config(path):
    """{issuer name: {key: value}} from a tokensignd.conf (only the issuer sections)."""
    out, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.split(";")[0].split("#")[0].strip()
            if not line:
                continue
            m = re.match(r"^\[issuer:([^\]]+)\]$", line)
            if m:
                cur = out.setdefault(m.group(1), {})
                continue
            if line.startswith("["):
                cur = None
                continue
            if cur is not None and "=" in line:
                k, _, v = line.partition("=")
                cur[k.strip()] = v.strip()
    return out


# ---- public keys: the JWK the token's public key gives, computed here ----

def _der_octets(hexstr):
    """The content of a DER OCTET STRING (CKA_EC_POINT), or the bytes as they are."""
    b = bytes.fromhex(hexstr)
    if len(b) >= 2 and b[0] == 0x04:
        n, off = b[1], 2
        if n & 0x80:
            k = n & 0x7F
            n, off = int.from_bytes(b[2:2 + k], "big"), 2 + k
        if off + n == len(b):
            return b[off:]
    return b


def jwk_of_public(obj):
    """The public JWK members of a public-key object from p11probe, or None if unsupported."""
    params = obj.get("ec_params")
    point = obj.get("ec_point")
    if not params or not point or params not in CURVES:
        return None
    crv, n = CURVES[params]
    raw = _der_octets(point)
    if crv == "Ed25519":
        return {"kty": "OKP", "crv": crv, "x": harness.b64url_encode(raw)} \
            if len(raw) == 32 else None
    if len(raw) != 1 + 2 * n or raw[0] != 0x04:
        return None
    return {"kty": "EC", "crv": crv, "x": harness.b64url_encode(raw[1:1 + n]),
            "y": harness.b64url_encode(raw[1 + n:])}


def thumbprint(jwk):
    """RFC 7638 SHA-256 thumbprint (written here again, not harness.jwk_thumbprint)."""
    req = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
    members = {k: jwk[k] for k in req[jwk["kty"]]}
    canon = "{" + ",".join('"%s":"%s"' % (k, members[k]) for k in sorted(members)) + "}"
    return harness.b64url_encode(hashlib.sha256(canon.encode("ascii")).digest())


# ---- the token's contents ----

class Key:
    """One key as its current record describes it, joined with its key pair."""

    def __init__(self, rec, obj):
        self.rec = rec
        self.obj = obj  # the data object (p11probe line)
        for f in RECORD_FIELDS:
            setattr(self, f, rec[f])
        self.priv = None
        self.pub = None
        self.jwk = None
        # derived (see derive())
        self.state = None
        self.stopped_at = None
        self.destroy_after = None

    def row(self):
        return "%-8s %s kid=%s created=%d activates=%d retires=%d stopped=%s destroy=%s " \
               "seq=%d id=%s" % (self.state, self.issuer, self.kid, self.created_at,
                                 self.activates_at, self.retires_at, self.stopped_at,
                                 self.destroy_after, self.seq, self.id)

    def __repr__(self):
        return "<Key %s>" % self.row()


class TokenView:
    """Everything p11probe saw, sorted into current records, stale revisions, key pairs,
    orphans and malformed objects. Structural problems found while reading are in .problems."""

    def __init__(self, objs, when=None):
        self.objs = objs
        self.when = time.time() if when is None else when
        self.problems = []
        self.keys = []              # current records (Key), every issuer
        self.stale = []             # superseded revisions (record dicts)
        self.privs, self.pubs = {}, {}  # id -> object
        self.malformed = []
        self.others = []            # objects that are not ours
        self.incomplete = []        # key objects without label or id yet
        by_id = {}
        for o in objs:
            cls = o.get("class")
            if cls == "private_key":
                self._add_half(self.privs, o, "private key")
            elif cls == "public_key":
                self._add_half(self.pubs, o, "public key")
            elif cls == "data" and o.get("application") == APPLICATION:
                rec = self._parse_record(o)
                if rec is not None:
                    by_id.setdefault(rec["id"], []).append((rec, o))
            else:
                if cls != "data" or o.get("application") is None:
                    self.incomplete.append(o)  # half-written, or not ours at all
                self.others.append(o)
        for rid, revs in by_id.items():
            revs.sort(key=lambda ro: ro[0]["seq"], reverse=True)
            if len(revs) > 1 and revs[0][0]["seq"] == revs[1][0]["seq"]:
                self.problems.append("two records of key id %s with the same seq %d: %r / %r"
                                     % (rid, revs[0][0]["seq"], revs[0][0], revs[1][0]))
            top, obj = revs[0]
            for rec, _ in revs[1:]:
                self.stale.append(rec)
                if rec["kid"] != top["kid"] or rec["issuer"] != top["issuer"]:
                    self.problems.append("revisions of key id %s disagree on kid/issuer: %r vs %r"
                                         % (rid, rec, top))
            self.keys.append(Key(top, obj))
        kids = {}
        for k in self.keys:
            k.priv, k.pub = self.privs.get(k.id), self.pubs.get(k.id)
            if k.pub is not None:
                k.jwk = jwk_of_public(k.pub)
            if k.kid in kids:
                self.problems.append("kid %s has two current records (ids %s and %s)"
                                     % (k.kid, kids[k.kid], k.id))
            kids[k.kid] = k.id
        recorded = {k.id for k in self.keys}
        self.orphans = sorted((set(self.privs) | set(self.pubs)) - recorded)
        self.dangling = [k for k in self.keys if k.priv is None or k.pub is None]

    def _add_half(self, table, o, what):
        label = o.get("label") or ""
        if o.get("label") is None or o.get("id") is None:
            self.incomplete.append(o)  # being made right now (SoftHSM writes it in steps)
            if o.get("id") is None:
                return  # no id to join it to a record by
        if not label.startswith("tokensign:"):
            self.others.append(o)
            return
        if o.get("id") in table:
            self.problems.append("two %ss with CKA_ID %s" % (what, o.get("id")))
        table[o.get("id")] = o

    def _parse_record(self, o):
        try:
            rec = json.loads(o.get("value") or "")
        except ValueError:
            self.malformed.append(o)
            self.problems.append("record %r: CKA_VALUE is not JSON: %r"
                                 % (o.get("label"), (o.get("value") or "")[:200]))
            return None
        bad = [f for f, t in RECORD_FIELDS.items()
               if not isinstance(rec, dict) or not isinstance(rec.get(f), t)
               or isinstance(rec.get(f), bool)]
        if bad or rec.get("v") != RECORD_VERSION or not re.fullmatch(r"[0-9a-f]{32}", rec["id"]):
            self.malformed.append(o)
            self.problems.append("record %r is malformed (fields %s): %r"
                                 % (o.get("label"), bad, rec))
            return None
        if o.get("label") != "tokensign:%s:%s" % (rec["issuer"], rec["kid"]):
            self.problems.append("record label %r does not name its issuer and kid: %r"
                                 % (o.get("label"), rec))
        if o.get("private") is not True or o.get("token") is not True:
            self.problems.append("record %r is not a private token object" % o.get("label"))
        return rec

    def issuer_keys(self, issuer):
        return sorted((k for k in self.keys if k.issuer == issuer),
                      key=lambda k: (k.activates_at, k.kid))

    def kids(self):
        return {k.kid for k in self.keys}

    def by_kid(self, kid):
        for k in self.keys:
            if k.kid == kid:
                return k
        return None

    def dump(self):
        out = ["token objects at %.3f: %d current records, %d stale, %d orphan ids, %d others"
               % (self.when, len(self.keys), len(self.stale), len(self.orphans),
                  len(self.others))]
        for k in sorted(self.keys, key=lambda k: (k.issuer, k.activates_at, k.kid)):
            out.append("  record: " + json.dumps(k.rec, sort_keys=True))
        for r in self.stale:
            out.append("  stale: %r" % r)
        for i in self.orphans:
            out.append("  orphan key id: %s (priv %s, pub %s)"
                       % (i, i in self.privs, i in self.pubs))
        for o in self.others:
            out.append("  other object: %s" % json.dumps(o, sort_keys=True)[:300])
        return "\n".join(out)


def read(daemon):
    """The TokenView of a harness.Daemon's token, read now. p11probe lists the handles first
    and reads each object after: an object destroyed meanwhile is left out, so one read of a
    token that a running daemon changes may show, say, a record whose key pair went after the
    record was read. Use read_stable() for a view to judge."""
    running = daemon.proc is not None and daemon.proc.poll() is None
    return read_raw(daemon.module, daemon.token_label, daemon.pin_file, daemon.env,
                    getattr(daemon, "spawned_at", None) if running else None)


def read_stable(daemon, budget=4.0):
    """A TokenView from two successive reads that saw the same objects: no object was made
    or destroyed while the first was read, so it is one state of the token. A running daemon
    changes the token only around its scheduled transitions and rescans, a few times in a
    rotation period, so two reads agree within a few attempts; after `budget` seconds the
    last read is returned (and the problems it shows stand)."""
    deadline = time.time() + budget
    prev = read(daemon)
    while True:
        cur = read(daemon)
        if canon(prev.objs) == canon(cur.objs) or time.time() > deadline:
            return prev if canon(prev.objs) == canon(cur.objs) else cur
        prev = cur


# p11probe tolerates an object destroyed between its listing and its reads when SoftHSM says
# CKR_OBJECT_HANDLE_INVALID. When another process deletes the object's file between SoftHSM's
# validity check and its read of CKA_CLASS, SoftHSM answers CKR_ATTRIBUTE_VALUE_INVALID (0x13)
# instead (the class reads as CKO_VENDOR_DEFINED, which it cannot wrap). A daemon running
# maintenance while we probe causes exactly that, so a failed probe is taken again.
#
# The same answer, for good, comes from an object whose creation was killed half-way: SoftHSM's
# file backend writes NNN.object with only its generation counter (8 bytes) at creation and
# the attributes at the commit that follows, so a SIGKILL in between leaves an object without
# attributes (8 bytes, or 0 when the kill came before the counter was written). A search with
# a template (all the daemon ever does) never matches it; a listing
# without one (p11probe) finds it and p11probe stops at it, on purpose: an object it cannot
# read is never silently skipped. Such files are moved out of the token directory (into
# quarantine/ next to it) and listed in QUARANTINED *before* every probe, as soon as they are
# certainly dead: written before the daemon we read through was started (it is the only
# process that could still be committing them; the files of a killed predecessor are
# abandoned). A file a running process wrote may be a creation in progress, which commits
# within milliseconds: it is moved only after a probe failed on it and it has stayed
# attribute-less for EMPTY_OBJECT_AGE.
# A probe takes long enough on a loaded machine (60 objects, 0.2-0.5 s) that a daemon deleting
# expired keys every second or two can make several in a row meet a vanishing object.
PROBE_ATTEMPTS = 12
QUARANTINED = []
EMPTY_OBJECT_AGE = 0.25  # seconds: a live creation commits within milliseconds
# A file shorter than this holds no complete attribute: its 8-byte generation counter (or not
# even that: a kill between creating and first writing the file left one of 0 bytes) and at
# most part of CKA_CLASS, which SoftHSM writes first (type, kind and value, 8 bytes each).
MIN_OBJECT_SIZE = 32
MTIME_SLACK = 0.02  # file times come from the kernel's coarse clock, up to a tick behind
# An object file SoftHSM cannot read on its own and left unchanged this long is debris, whoever
# wrote it: a creation in progress rewrites its file within milliseconds.
STUCK_OBJECT_AGE = 1.0


def _softhsm_tokendir(env):
    conf = (env or os.environ).get("SOFTHSM2_CONF")
    try:
        with open(conf) as f:
            for line in f:
                k, _, v = line.partition("=")
                if k.strip() == "directories.tokendir":
                    return v.strip()
    except (OSError, TypeError):
        pass
    return None


def quarantine_empty_objects(env, written_before=None):
    """Moves attribute-less SoftHSM object files (see above; shorter than MIN_OBJECT_SIZE) out
    of the token directory: those last written before `written_before` (a time.time() value),
    or, without it, at least EMPTY_OBJECT_AGE ago. Returns how many it moved."""
    top = _softhsm_tokendir(env)
    if not top or not os.path.isdir(top):
        return 0
    if written_before is None:
        written_before = time.time() - EMPTY_OBJECT_AGE
    moved = 0
    for sub in os.listdir(top):
        d = os.path.join(top, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if not name.endswith(".object") or name == "token.object":
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if st.st_size >= MIN_OBJECT_SIZE or st.st_mtime >= written_before:
                continue
            moved += _quarantine(top, path)
    return moved


def _quarantine(top, path):
    """Moves an object file and its lock file to quarantine/ beside the token directory top;
    1 if it did, 0 if the file was gone already."""
    qdir = os.path.join(os.path.dirname(top), "quarantine")
    os.makedirs(qdir, exist_ok=True)
    try:
        os.rename(path, os.path.join(qdir, os.path.basename(path)))
    except FileNotFoundError:
        return 0
    lock = path[:-len(".object")] + ".lock"
    if os.path.exists(lock):
        os.rename(lock, os.path.join(qdir, os.path.basename(lock)))
    QUARANTINED.append((time.time(), path))
    return 1


def quarantine_unreadable_objects(module, label, pin_file, env, written_before):
    """The exact version of quarantine_empty_objects(), for when a probe keeps failing on an
    object that is not short enough for the size rule (a SIGKILL during SoftHSM's commit can
    leave any prefix of the attributes): each object file last written before
    `written_before` is put alone into a scratch copy of the token (token.object, generation)
    and probed there; SoftHSM itself says which ones it cannot read, and only those are moved
    to quarantine/. Returns how many it moved."""
    top = _softhsm_tokendir(env)
    if not top or not os.path.isdir(top):
        return 0
    moved = 0
    for sub in os.listdir(top):
        d = os.path.join(top, sub)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if not name.endswith(".object") or name == "token.object":
                continue
            try:
                if os.stat(path).st_mtime >= written_before:
                    continue
            except FileNotFoundError:
                continue
            scratch = tempfile.mkdtemp(prefix="tokencheck-one-")
            try:
                one = os.path.join(scratch, "tokens", sub)
                os.makedirs(one)
                for keep in ("token.object", "generation", name):
                    if os.path.exists(os.path.join(d, keep)):
                        shutil.copy2(os.path.join(d, keep), os.path.join(one, keep))
                conf = os.path.join(scratch, "softhsm2.conf")
                with open(conf, "w") as f:
                    f.write("directories.tokendir = %s\nobjectstore.backend = file\n"
                            "log.level = ERROR\n" % os.path.join(scratch, "tokens"))
                e = dict(env or os.environ)
                e["SOFTHSM2_CONF"] = conf
                try:
                    harness.p11probe(module, label, pin_file, e)
                    continue
                except harness.HarnessError as err:
                    if "0x00000013" not in str(err):
                        continue
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            moved += _quarantine(top, path)
    return moved


def _tokendir_listing(env):
    """The token directory's object files with size and mtime, for a failure message."""
    top = _softhsm_tokendir(env)
    out = ["token files at %.3f:" % time.time()]
    for sub in sorted(os.listdir(top)) if top and os.path.isdir(top) else []:
        d = os.path.join(top, sub)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            try:
                st = os.stat(os.path.join(d, name))
            except FileNotFoundError:
                continue
            out.append("  %s %d bytes, mtime %.3f" % (name, st.st_size, st.st_mtime))
    return "\n".join(out)


def read_raw(module, label, pin_file, env=None, live_since=None):
    """The TokenView of a token, read now. live_since: when the process that may be writing
    the token (the daemon we read through) was started; None if unknown."""
    for attempt in range(PROBE_ATTEMPTS):
        if live_since is not None:
            quarantine_empty_objects(env, live_since - MTIME_SLACK)
        t0 = time.time()
        try:
            objs = harness.p11probe(module, label, pin_file, env)
        except harness.HarnessError as e:
            # SoftHSM reading files another process is writing: an object it cannot parse
            # (0x13), or the token itself not found (its token.object caught mid-write)
            transient = "0x00000013" in str(e) or "no token labelled" in str(e)
            if attempt == PROBE_ATTEMPTS - 1 or not transient:
                raise harness.HarnessError("%s\n(attempt %d; live_since %s) %s"
                                           % (e, attempt + 1, live_since, _tokendir_listing(env)))
            read_raw.retried += 1
            time.sleep(0.05)
            if attempt >= 1 and not quarantine_empty_objects(env) and attempt >= 2:
                # Judged: files of a killed predecessor, and any file left unchanged for
                # STUCK_OBJECT_AGE (a restart can come within milliseconds of the kill, so the
                # predecessor's last file may look newer than live_since - MTIME_SLACK).
                before = time.time() - STUCK_OBJECT_AGE
                if live_since is not None:
                    before = max(before, live_since - MTIME_SLACK)
                if not quarantine_unreadable_objects(module, label, pin_file, env, before):
                    time.sleep(EMPTY_OBJECT_AGE)
            continue
        return TokenView(objs, (t0 + time.time()) / 2)


read_raw.retried = 0


# ---- the lifecycle, derived ----

class Schedule:
    """One issuer's keys with their states at `now` (an integer second)."""

    def __init__(self, keys, timing, now):
        self.now = now
        self.timing = timing
        self.keys = derive(keys, timing, now)
        self.active = next((k for k in self.keys if k.state == "active"), None)
        self.pending = [k for k in self.keys if k.state == "pending"]
        self.retired = [k for k in self.keys if k.state == "retired"]
        self.expired = [k for k in self.keys if k.state == "expired"]

    def published(self):
        """The kids that belong in the JWKS, in JWKS order."""
        return [k.kid for k in self.keys if k.state != "expired"]

    def state_of(self, kid):
        for k in self.keys:
            if k.kid == kid:
                return k.state
        return None

    def dump(self):
        return "\n".join(["schedule of %s at %d:" % (self.timing.name, self.now)] +
                         ["  " + k.row() for k in self.keys])


def candidate(keys, now):
    """The key with the latest activates_at not after now; equal starts: the smaller kid."""
    started = [k for k in keys if k.activates_at <= now]
    if not started:
        return None
    latest = max(k.activates_at for k in started)
    return min((k for k in started if k.activates_at == latest), key=lambda k: k.kid)


def derive(keys, timing, now):
    """Copies of keys with .state/.stopped_at/.destroy_after set, in schedule order. `now` is
    an integer second (the daemon works in whole seconds)."""
    now = int(now)
    pp = timing.prepublish
    ks = sorted((copy.copy(k) for k in keys), key=lambda k: (k.activates_at, k.kid))
    cand = candidate(ks, now)
    for k in ks:
        ttl = max(k.max_token_ttl, timing.max_token_ttl)
        if k.activates_at > now:
            k.state, k.stopped_at = "pending", k.retires_at
        elif k is cand and now < k.retires_at + pp:
            k.state, k.stopped_at = "active", k.retires_at
        else:
            k.state = "retired"
            if k is cand:
                k.stopped_at = k.retires_at + pp
            elif any(o.activates_at == k.activates_at and o.kid < k.kid for o in ks):
                k.stopped_at = k.activates_at  # lost an equal-start tie: never signed
            else:
                later = [o.activates_at for o in ks if o.activates_at > k.activates_at]
                k.stopped_at = min([k.retires_at + pp] + later)
        k.destroy_after = k.stopped_at + ttl + SKEW
        if k.state == "retired" and k.destroy_after <= now:
            k.state = "expired"
    return ks


def schedules(view, issuers, now):
    """{issuer: Schedule} for every configured issuer."""
    return {name: Schedule(view.issuer_keys(name), t, now)
            for name, t in timings_of(issuers).items()}


# ---- invariants ----

class Result:
    def __init__(self, view, scheds, now):
        self.view = view
        self.scheds = scheds
        self.now = now
        self.problems = []
        self.notes = []

    @property
    def ok(self):
        return not self.problems

    def active(self, issuer):
        a = self.scheds[issuer].active
        return a.kid if a else None

    def pending(self, issuer):
        return [k.kid for k in self.scheds[issuer].pending]

    def report(self):
        out = ["tokencheck at %d: %d problem(s)" % (self.now, len(self.problems))]
        out += ["  PROBLEM: " + p for p in self.problems]
        out += ["  note: " + n for n in self.notes]
        out.append(self.view.dump())
        for s in self.scheds.values():
            out.append(s.dump())
        return "\n".join(out)


def check(view, issuers, now=None, settled=True, prepub_exempt=None, allow_fail_closed=True,
          expired_grace=2):
    """Checks the invariants of SPEC §6 / design.md on a TokenView at `now` (default: when it
    was read). Returns a Result; result.problems is empty when everything holds.

    settled: the daemon has had a maintenance pass (a rescan) since the last change, so
      half-made objects, superseded revisions, extra pending keys and expired keys are gone.
    prepub_exempt: a function Key -> bool for keys allowed to activate before
      created_at + prepublish (the first key of an issuer, rotate --now, revoke).
    allow_fail_closed: an issuer without an active key is accepted only when the records show
      the fail-closed case the SPEC allows (the candidate is past its grace and no successor
      could have been published for prepublish yet); it is reported in notes.
    expired_grace: seconds a key may stay past destroy_after before it counts as lingering.
    """
    now = int(view.when if now is None else now)
    timings = timings_of(issuers)
    scheds = schedules(view, issuers, now)
    res = Result(view, scheds, now)
    P = res.problems
    P.extend(view.problems)
    exempt = prepub_exempt or (lambda k: False)

    for k in view.keys:
        t = timings.get(k.issuer)
        if t is None:
            P.append("record of an unconfigured issuer %r: %r" % (k.issuer, k.rec))
            continue
        if t.iss and k.iss != t.iss:
            P.append("key %s records iss %r, issuer %s is configured with %r"
                     % (k.kid, k.iss, k.issuer, t.iss))
        if k.alg != t.alg:
            P.append("key %s records alg %s, configured %s" % (k.kid, k.alg, t.alg))
        if k.retires_at < k.activates_at:
            P.append("key %s retires (%d) before it activates (%d)"
                     % (k.kid, k.retires_at, k.activates_at))
        if k.created_at > view.when + 1:
            P.append("key %s created_at %d is in the future (read at %.1f)"
                     % (k.kid, k.created_at, view.when))
        if k.max_token_ttl != t.max_token_ttl:
            P.append("key %s records max_token_ttl %d, configured %d"
                     % (k.kid, k.max_token_ttl, t.max_token_ttl))
        if k.activates_at < k.created_at + t.prepublish and not exempt(k):
            P.append("key %s activates at %d, before created_at %d + prepublish %d: it signs "
                     "before relying parties can have it" % (k.kid, k.activates_at,
                                                             k.created_at, t.prepublish))
        # key pair
        if k.priv is None or k.pub is None:
            P.append("record of key %s (%s) has no %s in the token" % (
                k.kid, k.issuer, " and ".join(
                    w for w, o in (("private key", k.priv), ("public key", k.pub)) if o is None)))
        else:
            for o in (k.priv, k.pub):
                if o.get("label") != "tokensign:%s" % k.issuer:
                    P.append("key %s: %s label %r, expected 'tokensign:%s'"
                             % (k.kid, o["class"], o.get("label"), k.issuer))
            unsafe = {a: k.priv.get(a) for a, want in SAFE_PRIVATE.items()
                      if k.priv.get(a) is not want}
            if unsafe:
                P.append("key %s: private key attributes not as required: %r" % (k.kid, unsafe))
            if k.priv.get("value_rv") == "CKR_OK":
                P.append("key %s: the private key's CKA_VALUE is readable" % k.kid)
            if k.jwk is None:
                res.notes.append("key %s: public key type not checked by tokencheck" % k.kid)
            elif thumbprint(k.jwk) != k.kid:
                P.append("key %s: the token's public key has thumbprint %s"
                         % (k.kid, thumbprint(k.jwk)))

    for name, s in scheds.items():
        t = timings[name]
        for k in s.pending:
            if k.retires_at != k.activates_at + t.period:
                P.append("pending key %s of %s: retires_at %d != activates_at %d + period %d"
                         % (k.kid, name, k.retires_at, k.activates_at, t.period))
        if s.active is None:
            why = _fail_closed_reason(s, t)
            if allow_fail_closed and why:
                res.notes.append("issuer %s has no active key: %s" % (name, why))
            else:
                P.append("issuer %s has no active key at %d%s"
                         % (name, now, (" (" + why + ")") if why else
                            " and the records do not show the fail-closed case the SPEC "
                            "allows"))
        if settled:
            if len(s.pending) != 1:
                P.append("issuer %s has %d pending keys (%s), expected exactly one"
                         % (name, len(s.pending), [k.kid for k in s.pending]))
            for k in s.expired:
                if k.destroy_after <= now - expired_grace:
                    P.append("key %s of %s is still in the token %ds after its destroy_after %d"
                             % (k.kid, name, now - k.destroy_after, k.destroy_after))
    if settled:
        if view.stale:
            P.append("superseded record revisions left in the token: %r" % view.stale)
        # Key pairs without a record are allowed: the daemon removes them only after they have
        # been recordless for a minute (another instance may be recording one), and they are
        # never published or used, which the JWKS comparisons check.
    return res


def fail_closed_reason(view, issuers, issuer, now):
    """Why, per the records in view, nobody may sign for issuer at the second now; None when
    a key is active then, or when the records do not justify failing closed. The view may
    have been read later: keys made after the second now are left out (a key made during
    second s records created_at s + 1; such a key may be scheduled late, after the successor
    that ended the fail-closed time, and says nothing about it)."""
    t = timings_of(issuers)[issuer]
    s = Schedule([k for k in view.issuer_keys(issuer) if k.created_at <= now + 1], t, now)
    if s.active is not None:
        return None
    return _fail_closed_reason(s, t)


def _fail_closed_reason(s, t):
    """Why, per the records, nobody may sign (or None when the records do not justify it).
    The SPEC allows it only after the active key's retirement + prepublish, when no successor
    has been published for prepublish: every pending key was made too recently."""
    cand = candidate(s.keys, s.now)
    if cand is None:
        return None
    if s.now < cand.retires_at + t.prepublish:
        return None
    if not s.pending:
        return "the last key's grace ended at %d and there is no pending key" % (
            cand.retires_at + t.prepublish)
    late = [k for k in s.pending if k.activates_at > k.created_at + t.prepublish]
    if late:
        return None  # a successor is scheduled later than it needs to be: not justified
    return "the last key's grace ended at %d; its successor %s was made at %d and may sign " \
           "from %d" % (cand.retires_at + t.prepublish, s.pending[0].kid,
                        s.pending[0].created_at, s.pending[0].activates_at)


# ---- comparisons with what the daemon serves ----

JWK_MEMBERS = {"EC": {"kty", "crv", "x", "y", "kid", "alg", "use"},
               "OKP": {"kty", "crv", "x", "kid", "alg", "use"},
               "RSA": {"kty", "n", "e", "kid", "alg", "use"}}


def compare_jwks(res, issuer, jwks, what="JWKS"):
    """Problems (list) if the served JWKS of issuer is not exactly the issuer's published keys
    per the records (order by activates_at then kid), with the token's public keys."""
    s = res.scheds[issuer]
    out = []
    if not isinstance(jwks, dict) or list(jwks) != ["keys"] or not isinstance(jwks["keys"], list):
        return ["%s of %s is not {\"keys\": [...]}: %r" % (what, issuer, jwks)]
    got = [j.get("kid") for j in jwks["keys"]]
    want = s.published()
    if got != want:
        others = {k.kid: k.issuer for k in res.view.keys if k.issuer != issuer}
        foreign = [g for g in got if g in others]
        out.append("%s of %s at %d holds %s, the records say %s%s" % (
            what, issuer, res.now, got, want,
            ("; keys of other issuers: %r" % {g: others[g] for g in foreign}) if foreign else ""))
    alg = timings_of_alg(res, issuer)
    for j in jwks["keys"]:
        k = res.view.by_kid(j.get("kid"))
        if k is None or k.jwk is None:
            continue
        if set(j) != JWK_MEMBERS.get(j.get("kty"), set()):
            out.append("%s of %s: JWK %s has members %s" % (what, issuer, j.get("kid"),
                                                            sorted(j)))
        for m, v in k.jwk.items():
            if j.get(m) != v:
                out.append("%s of %s: JWK %s member %s=%r, the token's public key says %r"
                           % (what, issuer, k.kid, m, j.get(m), v))
        if j.get("use") != "sig" or j.get("alg") != alg:
            out.append("%s of %s: JWK %s use/alg %r/%r" % (what, issuer, k.kid, j.get("use"),
                                                           j.get("alg")))
    return out


def timings_of_alg(res, issuer):
    return res.scheds[issuer].timing.alg


def compare_admin_keys(res, doc, issuers_order):
    """Problems if GET /v1/keys disagrees with the derived schedule (kids, order, states,
    times). doc: the parsed answer; res.now must be the second the daemon answered in."""
    out = []
    rows = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        return ["/v1/keys answer is not {\"keys\": [...]}: %r" % (doc,)]
    want = []
    for name in issuers_order:
        for k in res.scheds[name].keys:
            if k.state == "expired":
                continue
            want.append({"issuer": name, "kid": k.kid, "alg": k.alg, "state": k.state,
                         "created_at": k.created_at, "activates_at": k.activates_at,
                         "retires_at": k.stopped_at, "destroy_after": k.destroy_after})
    if [(r.get("issuer"), r.get("kid")) for r in rows] != [(w["issuer"], w["kid"]) for w in want]:
        out.append("/v1/keys at %d lists %s, the records say %s" % (
            res.now, [(r.get("issuer"), r.get("kid"), r.get("state")) for r in rows],
            [(w["issuer"], w["kid"], w["state"]) for w in want]))
        return out
    for r, w in zip(rows, want):
        if r != w:
            diff = {m: (r.get(m), w.get(m)) for m in set(r) | set(w) if r.get(m) != w.get(m)}
            out.append("/v1/keys at %d: key %s of %s differs (daemon, tokencheck): %r"
                       % (res.now, w["kid"], w["issuer"], diff))
    return out


def compare_status(res, doc):
    """Problems if GET /v1/status disagrees with the derived active and pending keys."""
    out = []
    for row in doc.get("issuers", []):
        name = row.get("issuer")
        if name not in res.scheds:
            out.append("/v1/status names unknown issuer %r" % name)
            continue
        s = res.scheds[name]
        act = s.active.kid if s.active else None
        pend = s.pending[0].kid if s.pending else None
        if row.get("active_kid") != act or row.get("pending_kid") != pend or \
                row.get("signing") != (act is not None):
            out.append("/v1/status at %d for %s: active %s pending %s signing %s; the records "
                       "say active %s pending %s" % (res.now, name, row.get("active_kid"),
                                                     row.get("pending_kid"), row.get("signing"),
                                                     act, pend))
        if pend and row.get("next_rotation") != s.pending[0].activates_at:
            out.append("/v1/status for %s: next_rotation %r, pending key activates at %d"
                       % (name, row.get("next_rotation"), s.pending[0].activates_at))
    return out


# ---- helpers shared by test_rotation.py, test_crash.py and test_instances.py ----
# (not part of the checker: they drive the daemon; the harness stays untouched)

class CheckedDaemon(harness.Daemon):
    """A harness.Daemon that notes when its current process was started (.spawned_at), so
    that read() knows which half-made objects no live process can still be committing."""

    spawned_at = None

    def spawn(self):
        self.spawned_at = time.time()
        return super().spawn()


def admin_daemon(issuers, jwks_max_age="1s", share_token_of=None):
    """A CheckedDaemon with an [admin] socket in its work dir (the harness does not write
    one). The socket path is in .admin_socket."""
    d = CheckedDaemon(issuers=issuers, jwks_max_age=jwks_max_age,
                      share_token_of=share_token_of)
    d.admin_socket = os.path.join(d.workdir, "admin.sock")
    d.extra_conf = "[admin]\nsocket = %s\nmode = 0600\n" % d.admin_socket
    d.write_config()
    return d


def admin(d, method, path, body=None):
    """One request on the daemon's admin socket (harness.unix_http)."""
    return harness.unix_http(d.admin_socket, method, path, body)


def admin_json(d, method, path, body=None):
    r = admin(d, method, path, body)
    if r.status != 200:
        raise AssertionError("admin %s %s: %r\ndaemon log:\n%s"
                             % (method, path, r, d.log()[-3000:]))
    return r.json()


def verify_pyjwt(token, jwks, iss, aud, alg="ES256", leeway=0):
    """Verifies token against a JWKS document (dict) with PyJWT; returns the claims or
    raises a jwt exception. Also checks the signature with harness.verify_es256, which does
    not use PyJWT."""
    import jwt
    kid = jwt.get_unverified_header(token).get("kid")
    keys = [k for k in jwks.get("keys", []) if k.get("kid") == kid]
    if len(keys) != 1:
        raise jwt.InvalidKeyError("%d keys with kid %s in the JWKS (%s)"
                                  % (len(keys), kid, [k.get("kid") for k in jwks["keys"]]))
    key = jwt.PyJWK(keys[0], algorithm=alg)
    claims = jwt.decode(token, key.key, algorithms=[alg], audience=aud, issuer=iss,
                        leeway=leeway, options={"require": ["exp", "iat", "iss", "aud"]})
    if alg == "ES256" and not harness.verify_es256(token, keys[0]):
        raise jwt.InvalidSignatureError("harness.verify_es256 disagrees with PyJWT")
    return claims


def verify_pyjwt_live(token, jwks_url, iss, aud, alg="ES256"):
    """PyJWT with the JWKS fetched from the live URL now (no cache)."""
    import jwt
    client = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=False)
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=[alg], audience=aud, issuer=iss, leeway=0,
                      options={"require": ["exp", "iat", "iss", "aud"]})


def verify_jose_script():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("VERIFY_JOSE") or os.path.normpath(
        os.path.join(here, "..", "interop", "verify_jose.mjs"))


def verify_jose(token, jwks_url, iss, aud, alg, kid, typ="JWT"):
    """node + panva jose (tests/interop/verify_jose.mjs) against the live JWKS URL.
    Returns (ok, output). A verifier that cannot run (no node, no script, no jose) is an
    AssertionError saying what to install: never a skip."""
    import subprocess
    script = verify_jose_script()
    node = os.environ.get("NODE") or "node"
    if not os.path.exists(script):
        raise AssertionError("%s is missing (set VERIFY_JOSE to the interop verifier, or merge "
                             "tests/interop from main and run npm ci there)" % script)
    try:
        p = subprocess.run([node, script, "--token", token, "--jwks-url", jwks_url, "--iss", iss,
                            "--aud", aud, "--alg", alg, "--kid", kid, "--typ", typ],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    except FileNotFoundError:
        raise AssertionError("node not found (set NODE)")
    if p.returncode == 2:
        raise AssertionError("verify_jose.mjs could not run: %s %s" % (p.stdout, p.stderr))
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def canon(objs):
    return sorted(json.dumps(o, sort_keys=True) for o in objs)


def token_files(env):
    """(name, size, mtime) of every object file of the SoftHSM token directory: the daemon
    changes the token's objects only by making, removing or rewriting such files."""
    top = _softhsm_tokendir(env)
    out = []
    for sub in sorted(os.listdir(top)) if top and os.path.isdir(top) else []:
        d = os.path.join(top, sub)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if not name.endswith(".object") or name == "token.object":
                continue  # token.object: SoftHSM's own bookkeeping, rewritten at every login
            try:
                st = os.stat(os.path.join(d, name))
            except FileNotFoundError:
                continue
            out.append((sub, name, st.st_size, st.st_mtime_ns))
    return out


def same_states(view, issuers, t1, t2):
    """True when every key's derived state is the same at the seconds t1 and t2."""
    a, b = schedules(view, issuers, t1), schedules(view, issuers, t2)
    return all([(k.kid, k.state) for k in a[n].keys] == [(k.kid, k.state) for k in b[n].keys]
               for n in issuers)


class Sample:
    def __init__(self, ta, tb, jwks, etags, keys, res, problems, attempts):
        self.ta, self.tb = ta, tb
        self.jwks = jwks        # issuer -> parsed JWKS
        self.etags = etags      # issuer -> ETag
        self.keys = keys        # parsed /v1/keys
        self.res = res          # Result at int(ta)
        self.problems = problems
        self.attempts = attempts

    def kids(self, issuer):
        return [k["kid"] for k in self.jwks[issuer]["keys"]]


# How long consistent_sample() looks for a stable sample. This is no deadline of the product:
# a sample that disagrees with the token is returned as soon as it is stable. On two cores
# shared with four other test runs, one attempt of a sanitizer build took 3.9 s while the
# daemon changes the token every second or two at the tests' short periods; 4 s allowed no
# second attempt.
SAMPLE_BUDGET = 10.0


def consistent_sample(d, issuers, first_key=None, settled=True, budget=SAMPLE_BUDGET,
                      transition_grace=1.2):
    """JWKS of every issuer + /v1/keys + /v1/status, and one read of the token, bracketed by
    two listings of the token's object files (token_files()).

    A sample counts only when no object file was made, removed or rewritten from before the
    read to after the answers, the token holds no key object still being made (no label yet),
    and the answers came within one second, or in two seconds with the same derived states;
    otherwise a rotation is under way and the sample is taken again. (A listing costs far less
    than a second read: on a loaded machine, in a sanitizer build, two reads took longer than
    the token stays unchanged between two transitions.) A stable sample that disagrees with
    the token is taken again too while it is within `transition_grace` seconds of an
    activation (the scheduler makes the next pending key then, later on a loaded machine), and
    once more 50 ms later otherwise (the daemon writes a record a moment before it swaps in the
    new view); a disagreement after that stands. Gives up after `budget` seconds."""
    t_begin = time.time()
    deadline = t_begin + budget
    mismatches = 0
    last = None
    attempt = 0
    retries = []  # why each attempt was taken again: (seconds since t_begin, reason)
    while True:
        attempt += 1
        if time.time() > deadline:
            if last is None:
                raise AssertionError("no consistent sample of the token and the daemon in %.1fs"
                                     " (%d attempts: %s)" % (budget, attempt - 1, "; ".join(
                                         "%.2fs %s" % r for r in retries)))
            return last
        if getattr(d, "spawned_at", None) is not None:
            quarantine_empty_objects(d.env, d.spawned_at - MTIME_SLACK)
        files = token_files(d.env)
        v2 = read(d)
        ta = time.time()
        jw, etags = {}, {}
        for n in issuers:
            r = d.http("GET", "/%s/.well-known/jwks.json" % n)
            if r.status != 200:
                raise AssertionError("JWKS of %s: %r" % (n, r))
            jw[n], etags[n] = r.json(), r.headers.get("etag")
        keys = admin_json(d, "GET", "/v1/keys")
        status = admin_json(d, "GET", "/v1/status")
        tb = time.time()
        changed = token_files(d.env) != files
        straddled = int(ta) != int(tb) and not same_states(v2, issuers, int(ta), int(tb))
        if changed or straddled or v2.incomplete:
            retries.append((time.time() - t_begin, "token changed" if changed else
                            "a transition at a second boundary (%.2fs for the answers)"
                            % (tb - ta) if straddled else "incomplete object"))
            time.sleep(0.05)
            continue
        res = check(v2, issuers, now=int(ta), settled=settled, prepub_exempt=first_key)
        problems = list(res.problems)
        for n in issuers:
            problems += compare_jwks(res, n, jw[n])
            admin_kids = [k["kid"] for k in keys["keys"] if k["issuer"] == n]
            if admin_kids != [j["kid"] for j in jw[n]["keys"]]:
                problems.append("/v1/keys lists %s for %s, the JWKS %s"
                                % (admin_kids, n, [j["kid"] for j in jw[n]["keys"]]))
        problems += compare_admin_keys(res, keys, list(issuers))
        problems += compare_status(res, status)
        if status.get("token") != "ok":
            problems.append("/v1/status says the token is %r" % status.get("token"))
        last = Sample(ta, tb, jw, etags, keys, res, problems, attempt)
        last.status = status
        if not problems:
            return last
        recent = [k.activates_at for k in v2.keys if k.activates_at <= ta]
        if recent and ta - max(recent) < transition_grace:
            time.sleep(0.1)
            continue
        if mismatches >= 1:
            return last
        mismatches += 1
        time.sleep(0.05)


# ---- command line ----

def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("module")
    ap.add_argument("label")
    ap.add_argument("pin_file")
    ap.add_argument("config")
    ap.add_argument("--now", type=int)
    ap.add_argument("--unsettled", action="store_true")
    a = ap.parse_args(argv)
    issuers = read_config(a.config)
    view = read_raw(a.module, a.label, a.pin_file, dict(os.environ))
    res = check(view, issuers, now=a.now, settled=not a.unsettled,
                prepub_exempt=lambda k: k.activates_at == k.created_at)
    print(res.report())
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
