#!/usr/bin/python3
"""Key custody under hostile conditions (docs/design.md, "Custody": invariants C1-C7, named
by each test below).

Each case starts a daemon on a fresh token, plants objects in it with p11plant the way an
attacker would (a PIN-less public session) or a careless operator (logged in), and runs the
daemon through a scheduled rotation, a reload (SIGHUP), a restart and another rotation, while
two threads sign tokens and fetch the JWKS without pause. At every step it checks:

- custody: every key of ours still exists (p11plant count-id), unless its own records say every
  token it signed has expired; every planted object still exists, attribute for attribute;
- publication: the JWKS never loses a key it published until that key's records say it
  expired, a quarantined one included (C7: a key already published stays published, it only
  stops signing); no planted key is ever published;
- signing: every token verifies with PyJWT (and harness.verify_es256) against the JWKS fetched
  after it was signed, and against the oldest JWKS that held its kid, which was fetched at
  least `prepublish` before the token's iat (a relying party holding an older JWKS verifies it
  too); it was signed by the key that our records say is active at its iat, never by a planted
  or quarantined key; a sign request is answered 200 or, only where the contract allows it
  (an active key quarantined), 503 no_active_key;
- reporting: admin GET /v1/status counts the planted objects ("foreign" or "quarantined") and
  its level is not "ok".

The cases (planted without the PIN, and logged in where that makes another case):
(a) a forged record (public) for the active kid saying it expired long ago; (b) the same forged
record made logged in with the real record's seq: a conflict that quarantines the active key;
(c) records of the active and the pending key with INT64_MAX and with negative timestamps,
public and private; (d) a public object with our label carrying another application's CKA_ID,
and a key pair of a removed issuer whose only record is unparseable, lived with for over 60 s
(the age after which a recordless pair of ours is swept); (e) duplicate public-key objects of a
retired and of the active key, then a reload at once; (f) an extractable and a non-sensitive
private key with our label and a valid-looking record; (g) an unparseable record of the
pending key, public and private. And the migration of public-key halves made public by the
release before issue 11.

On a failure the message carries the token's objects, what was planted, our records and the
tail of the daemon's log.
"""

import collections
import json
import os
import secrets
import signal
import subprocess
import threading
import time

import harness
import tokencheck

ISS = harness.DEFAULT_ISSUER["iss"]
AUD = "api://orders"
CLAIMS = {"sub": "custody", "aud": AUD}
# Short enough for rotations within a case; prepublish >= the JWKS max-age (1 s).
ISSUERS = {"main": dict(harness.DEFAULT_ISSUER, **{
    "rotation-period": "6s", "prepublish": "3s", "token-ttl": "5s", "max-token-ttl": "5s"})}
TIMING = tokencheck.timings_of(ISSUERS)["main"]
MIGRATION_ISSUERS = {"main": dict(harness.DEFAULT_ISSUER, **{
    "rotation-period": "1h", "prepublish": "10m", "token-ttl": "15m", "max-token-ttl": "1h"})}
RESCAN = tokencheck.rescan_interval(ISSUERS)
MAX_AGE = 1
SAMPLE_EVERY = 0.3      # JWKS fetches
SIGN_EVERY = 0.25       # sign requests
DETECT_WITHIN = 3 * RESCAN + 2.0  # the daemon reports a planted object within this
SWEEP_AGE = 60          # seconds a recordless key pair of ours waits before it may be swept
INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63
LONG_AGO = 978307200    # 2001-01-01


def p11plant_path():
    v = os.environ.get("P11PLANT")
    if not v:
        raise harness.HarnessError("P11PLANT is not set (run the tests through meson test)")
    return os.path.abspath(v)


def ec_point_of_jwk(jwk):
    """CKA_EC_POINT (DER OCTET STRING of the uncompressed point) of a P-256 JWK."""
    raw = b"\x04" + harness.b64url_decode(jwk["x"]) + harness.b64url_decode(jwk["y"])
    return (bytes([0x04, len(raw)]) + raw).hex()


def record_text(rec):
    """A record as tokensignd writes it: compact JSON, members in its order."""
    order = ["v", "issuer", "iss", "kid", "alg", "id", "seq", "created_at", "activates_at",
             "retires_at", "max_token_ttl"]
    keys = [k for k in order if k in rec] + [k for k in rec if k not in order]
    return json.dumps({k: rec[k] for k in keys}, separators=(",", ":"))


class Problems:
    """Problems of one check; those of one kind (a key) are said once, with how often and
    until when they were seen."""

    def __init__(self):
        self.first = {}
        self.count = collections.Counter()
        self.last = {}

    def add(self, msg, kind=None, at=None):
        kind = kind or msg
        self.first.setdefault(kind, msg)
        self.count[kind] += 1
        self.last[kind] = at

    def lines(self):
        out = []
        for kind, msg in self.first.items():
            n = self.count[kind]
            out.append(msg if n == 1 else "%s\n    (and %d more like it, the last at %.3f)"
                       % (msg, n - 1, self.last[kind] or 0))
        return out


def reports(status, members):
    """The admin status counts at least one object under one of members."""
    return any(isinstance(status.get(m), int) and status[m] >= 1 for m in members)


def canon(o):
    return json.dumps(o, sort_keys=True)


class Planted:
    """One object p11plant made: what it is, and how p11probe showed it right after."""

    def __init__(self, what, cls, match, login):
        self.what = what
        self.cls = cls
        self.match = match      # p11probe members that pick it out
        self.login = login
        self.snapshot = None    # its p11probe line right after planting
        self.tried = False      # a snapshot was attempted

    def matches(self, o):
        return o.get("class") == self.cls and all(o.get(k) == v for k, v in self.match.items())

    def __repr__(self):
        return "%s (%s, %s session): %s" % (self.what, self.cls,
                                            "logged-in" if self.login else "PIN-less",
                                            json.dumps(self.snapshot or self.match,
                                                       sort_keys=True)[:400])


class Custody:
    """One daemon on its own token, with a signer and a JWKS sampler running beside it, and
    everything the checks need: what was planted, our records, the restarts."""

    def __init__(self, tc, name, issuers=ISSUERS, max_age="%ds" % MAX_AGE):
        self.tc = tc
        self.name = name
        self.d = tokencheck.admin_daemon(issuers, jwks_max_age=max_age)
        tc.addCleanup(self.close)
        self.planted = []
        self.planted_ids = collections.defaultdict(collections.Counter)  # id -> class counts
        self.legit = {}          # id -> our newest record (dict), as long as we saw any
        self.first_kid = None    # the key the fresh token started with (not prepublished)
        self.quarantine = set()  # kids the attack must quarantine
        self.foreign_kids = set()  # kids of planted key pairs
        self.allow_no_key = False
        self.expect = []         # after planting: per tuple, one of its status members >= 1
        self.t_plant = None
        self.t_detected = None
        self.down = []           # [start, end] windows in which the daemon was restarting
        self.samples = []        # (t0, t1, Response | exception)
        self.signs = []          # (t0, t1, Response | exception)
        self.objs = []           # the last p11probe listing
        self.t_probe = 0.0
        self.done_signs = 0      # how many of self.signs were checked
        self.done_samples = 0    # of the 200 answers
        self.done_answers = 0    # of all JWKS answers
        self.stop = threading.Event()
        self.threads = []

    # -- life --

    def start(self):
        self.d.start()
        for fn, every in ((self.sample, SAMPLE_EVERY), (self.sign, SIGN_EVERY)):
            th = threading.Thread(target=self.loop, args=(fn, every), daemon=True)
            th.start()
            self.threads.append(th)
        deadline = time.time() + 10
        while not self.legit_keys() or not any(self.ok_samples()):
            if time.time() > deadline:
                self.tc.fail("no key records or no JWKS within 10 s of the start:\n"
                             + self.context())
            self.probe()
            time.sleep(0.2)
        self.first_kid = min(self.legit_keys(), key=lambda k: k.activates_at).kid
        return self

    def close(self):
        self.stop.set()
        for th in self.threads:
            th.join()
        self.d.close()

    def loop(self, fn, every):
        while not self.stop.is_set():
            t0 = time.time()
            try:
                r = fn()
            except Exception as e:  # noqa: BLE001 - judged by the checks (restart windows)
                r = e
            (self.samples if fn == self.sample else self.signs).append((t0, time.time(), r))
            self.stop.wait(every)

    def sample(self):
        return self.d.http("GET", "/main/.well-known/jwks.json")

    def sign(self):
        return self.d.sign("main", CLAIMS)

    def reload(self):
        before = self.d.log().count("reload: done")
        self.d.proc.send_signal(signal.SIGHUP)
        self.d.wait_ready()
        deadline = time.time() + 10
        while self.d.log().count("reload: done") == before:
            if time.time() > deadline:
                self.tc.fail("no 'reload: done' within 10 s of SIGHUP:\n" + self.context())
            time.sleep(0.1)
        time.sleep(RESCAN + 0.5)

    def restart(self):
        window = [time.time(), None]
        self.down.append(window)
        try:
            self.d.restart()
        finally:
            window[1] = time.time()
        time.sleep(RESCAN + 0.5)

    def wait_rotation(self, settle=RESCAN + 0.7):
        """Until the next activation our records schedule (or one period), and settle."""
        now = time.time()
        nxt = [k.activates_at for k in self.legit_keys() if k.activates_at > now]
        until = min(nxt + [now + TIMING.period])
        time.sleep(max(0.0, until - time.time()) + settle)

    # -- the token --

    def plant(self, args, login=False):
        cmd = [p11plant_path(), self.d.module, self.d.token_label]
        if login:
            cmd += ["--login", self.d.pin_file]
        for attempt in range(5):
            r = subprocess.run(cmd + list(args), env=self.d.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=30)
            # SoftHSM's file store is not coherent between processes (docs/design.md): an
            # object another process has just written may not be there yet for this one.
            if r.returncode == 0 or "no public key with CKA_ID" not in r.stderr:
                break
            time.sleep(0.2)
        if r.returncode != 0:
            raise harness.HarnessError("p11plant %s failed (%d): %s"
                                       % (" ".join(args), r.returncode, r.stderr))
        return json.loads(r.stdout)

    def value_file(self, value):
        path = os.path.join(self.d.workdir, "plant-%s" % secrets.token_hex(4))
        with open(path, "wb") as f:
            f.write(value if isinstance(value, bytes) else value.encode())
        return path

    def write_record(self, label, value, login=True, private=True):
        args = ["data", "--label", label, "--application", "tokensign",
                "--value-file", self.value_file(value)] + (["--private"] if private else [])
        self.plant(args, login=login)

    def plant_record(self, what, label, value, login, private):
        self.write_record(label, value, login, private)
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        self.planted.append(Planted(what, "data", {"label": label, "value": text,
                                                   "private": private}, login))
        self.snapshot()

    def plant_pair(self, what, label, idhex, *flags):
        self.plant(["ec-pair", "--label", label, "--id", idhex] + list(flags), login=True)
        pub_private = "--private-pub" in flags
        self.planted.append(Planted(what + " (private half)", "private_key",
                                    {"label": label, "id": idhex}, True))
        self.planted.append(Planted(what + " (public half)", "public_key",
                                    {"label": label, "id": idhex, "private": pub_private}, True))
        self.planted_ids[idhex].update(["private_key", "public_key"])
        self.snapshot()

    def plant_pub(self, what, label, idhex, login=False, point=None, copy_of=None):
        args = ["ec-pub", "--label", label, "--id", idhex]
        args += ["--point", point] if point else ["--copy-of-id", copy_of]
        self.plant(args, login=login)
        self.planted.append(Planted(what, "public_key",
                                    {"label": label, "id": idhex, "private": False,
                                     "local": False}, login))
        self.planted_ids[idhex]["public_key"] += 1
        self.snapshot()

    def snapshot(self):
        """Notes how p11probe shows the objects just planted. One the daemon destroyed at once
        keeps no snapshot: check_planted() reports it."""
        self.probe()
        pool = list(self.objs)
        for p in self.planted:
            if p.snapshot is not None and p.snapshot in pool:
                pool.remove(p.snapshot)
        for p in self.planted:
            if p.snapshot is None and not p.tried:
                p.tried = True
                found = [o for o in pool if p.matches(o)]
                if found:
                    p.snapshot = found[0]
                    pool.remove(found[0])

    def count_id(self, idhex):
        for attempt in range(3):
            try:
                return self.plant(["count-id", idhex], login=True)
            except harness.HarnessError:
                if attempt == 2:
                    raise
                time.sleep(0.1)

    def probe(self):
        self.t_probe = time.time()
        self.objs = tokencheck.read(self.d).objs
        pool = list(self.objs)
        for p in self.planted:
            if p.snapshot is not None and p.snapshot in pool:
                pool.remove(p.snapshot)
        planted_records = {(p.match["label"], p.match["value"]) for p in self.planted
                           if p.cls == "data"}
        for o in pool:
            if o.get("class") != "data" or o.get("application") != "tokensign" or \
                    o.get("private") is not True or \
                    (o.get("label"), o.get("value")) in planted_records:
                continue
            try:
                rec = json.loads(o.get("value") or "")
            except ValueError:
                continue
            if not isinstance(rec, dict) or any(not isinstance(rec.get(f), t) for f, t in
                                                tokencheck.RECORD_FIELDS.items()):
                continue
            old = self.legit.get(rec["id"])
            if old is None or rec["seq"] >= old["seq"]:
                self.legit[rec["id"]] = rec
        return self.objs

    def legit_keys(self):
        return [tokencheck.Key(r, None) for r in self.legit.values() if r["issuer"] == "main"]

    def schedule(self, t):
        return tokencheck.Schedule(self.legit_keys(), TIMING, int(t))

    def destroyable(self, kid, t):
        """Our records say every token kid signed had expired by t (so it may be gone)."""
        k = next((k for k in self.schedule(t).keys if k.kid == kid), None)
        return k is not None and k.destroy_after <= t

    def t_detected_or_deadline(self):
        """When the daemon reported the planted objects, or when it should have at the
        latest; None before planting."""
        if self.t_plant is None:
            return None
        return self.t_detected if self.t_detected is not None else self.t_plant + DETECT_WITHIN

    def kid_of_id(self, idhex):
        r = self.legit.get(idhex)
        return r["kid"] if r else None

    # -- what a failure prints --

    def dump_objs(self):
        return "\n".join("  " + json.dumps(o, sort_keys=True)[:600] for o in self.objs)

    def context(self):
        out = ["case %s, daemon %s" % (self.name, self.d.workdir)]
        out.append("planted at %s:" % (self.t_plant and "%.3f" % self.t_plant))
        out += ["  %r" % p for p in self.planted]
        out.append("our records (newest revision seen of each key):")
        out += ["  " + record_text(r) for r in sorted(self.legit.values(),
                                                       key=lambda r: r["activates_at"])]
        out.append("token objects at %.3f:" % self.t_probe)
        out.append(self.dump_objs())
        ok = [s for s in self.ok_samples()]
        if ok:
            out.append("last JWKS at %.3f: %s" % (ok[-1][0], ok[-1][2].body.decode()[:1500]))
        lines = [line for line in self.d.log().splitlines()
                 if '"event":"signed"' not in line]  # one per token: they hide the rest
        out.append("daemon log without the 'signed' audit lines (last 60):\n"
                   + "\n".join(lines[-60:]))
        return "\n".join(out)

    def ok_samples(self):
        return [s for s in self.samples if isinstance(s[2], harness.Response)
                and s[2].status == 200]

    def in_down(self, t0, t1):
        return any(w[0] - 0.2 <= t1 and t0 <= (w[1] or time.time()) + 0.2 for w in self.down)


class CustodyTest(harness.TestCase):

    # -- the checks, one subTest each --

    def check(self, c, phase):
        """Every invariant, as of now; each kind of problem is its own subTest failure. The
        first failure of a phase carries the context (objects, records, log)."""
        self.assertIsNotNone(c.d.proc, "daemon not running")
        if c.d.proc.poll() is not None:
            self.fail("%s: the daemon died (status %r)\n%s"
                      % (phase, c.d.proc.returncode, c.context()))
        with self.subTest(phase=phase, check="sanitizer"):
            self.assertNoSanitizerReport(c.d)
        c.probe()
        upto = c.t_probe
        # the tokens signed until now are checked against a JWKS fetched after them
        deadline = time.time() + 5
        while not any(s[0] > upto for s in c.ok_samples()) and time.time() < deadline:
            time.sleep(0.05)
        told = False
        for name, fn in (("our keys exist", self.check_ours),
                         ("planted objects untouched", self.check_planted),
                         ("JWKS", self.check_jwks),
                         ("tokens", self.check_tokens),
                         ("status", self.check_status)):
            with self.subTest(phase=phase, check=name):
                problems = Problems()
                fn(c, upto, problems)
                lines = problems.lines()
                if lines:
                    ctx = "(context: see the first failure of this phase)" if told \
                        else c.context()
                    told = True
                    self.fail("case %s, %s, %s: %d problem(s):\n  %s\n%s"
                              % (c.name, phase, name, len(lines), "\n  ".join(lines[:20]),
                                 ctx))

    def check_ours(self, c, upto, problems):
        classes = ("private_key", "public_key")
        for idhex in sorted(set(c.legit) | set(c.planted_ids)):
            got = c.count_id(idhex)
            now = time.time()
            kid = c.kid_of_id(idhex)
            planted = c.planted_ids.get(idhex, {})
            ours = 1 if kid else 0
            # after its expiry our pair may be gone, or going (one half already)
            gone = ours if kid and c.destroyable(kid, now) else 0
            bad = [cls for cls in classes
                   if not planted.get(cls, 0) + ours - gone <= got.get(cls, 0) <=
                   planted.get(cls, 0) + ours]
            if bad:
                problems.add("CKA_ID %s (%s): the token holds %r; planted there: %r%s"
                             % (idhex, "our key %s" % kid if kid else "no key of ours",
                                got, dict(planted),
                                ", and our pair (one object of each class)%s" % (
                                    ", which may be gone since its expiry" if gone else "")
                                if kid else ""))

    def check_planted(self, c, upto, problems):
        pool = collections.Counter(canon(o) for o in c.objs)
        for p in c.planted:
            if p.snapshot is None:
                problems.add("planted %s was gone at once, before it could be read back" % p)
                continue
            key = canon(p.snapshot)
            if pool[key] > 0:
                pool[key] -= 1
                continue
            now = [o for o in c.objs if p.matches(o)]
            problems.add("planted %s is gone or changed; objects like it now: %s"
                         % (p, [canon(o) for o in now] or "none"))

    def check_jwks(self, c, upto, problems):
        answers = [s for s in c.samples if s[1] <= upto]
        for t0, t1, r in answers[c.done_answers:]:
            if isinstance(r, harness.Response) and r.status != 200:
                problems.add("JWKS at %.3f: %r" % (t0, r), ("status", r.status, r.body), t0)
            elif not isinstance(r, harness.Response) and not c.in_down(t0, t1):
                problems.add("JWKS at %.3f failed outside a restart: %r" % (t0, r),
                             ("exception", type(r).__name__), t0)
        c.done_answers = len(answers)
        samples = [s for s in c.ok_samples() if s[1] <= upto]
        legit = {k.kid for k in c.legit_keys()}
        detected = c.t_detected_or_deadline()
        prev = None
        for i, (t0, t1, r) in enumerate(samples):
            kids = [k["kid"] for k in json.loads(r.body)["keys"]]
            if i < c.done_samples:
                prev = (t0, kids)
                continue
            for kid in kids:
                if kid in c.foreign_kids:
                    problems.add("JWKS at %.3f publishes the planted key %s" % (t0, kid),
                                 ("planted", kid), t0)
                if kid not in legit:
                    problems.add("JWKS at %.3f publishes %s, which none of our records names"
                                 % (t0, kid), ("unknown", kid), t0)
            for kid in set(prev[1]) - set(kids) if prev else ():
                if c.destroyable(kid, t1):
                    continue
                problems.add("JWKS at %.3f lost %s, published at %.3f; our records say it "
                             "must stay published:\n%s" % (t0, kid, prev[0],
                                                           c.schedule(t0).dump()))
            prev = (t0, kids)
        c.done_samples = len(samples)

    def check_tokens(self, c, upto, problems):
        samples = c.ok_samples()
        first_seen = {}
        for t0, t1, r in samples:
            for k in json.loads(r.body)["keys"]:
                first_seen.setdefault(k["kid"], (t0, t1, r))
        detected = c.t_detected_or_deadline()
        signs = [s for s in c.signs if s[1] <= upto]
        for t0, t1, r in signs[c.done_signs:]:
            if not isinstance(r, harness.Response):
                if not c.in_down(t0, t1):
                    problems.add("sign at %.3f failed outside a restart: %r" % (t0, r),
                                 ("exception", type(r).__name__), t0)
                continue
            if r.status == 503 and c.allow_no_key and r.json().get("error") == "no_active_key":
                continue
            if r.status != 200:
                problems.add("sign at %.3f: %r" % (t0, r), ("status", r.status, r.body), t0)
                continue
            body = r.json()
            kid, iat, tok = body["kid"], body["iat"], body["token"]
            if kid in c.foreign_kids:
                problems.add("sign at %.3f: signed by the planted key %s" % (t0, kid),
                             ("planted", kid), t0)
            if kid in c.quarantine and detected is not None and t0 > detected + 0.5:
                problems.add("sign at %.3f: signed by %s, which the attack must have "
                             "quarantined (planted at %.3f, %s at %.3f)"
                             % (t0, kid, c.t_plant, "reported" if c.t_detected else
                                "not reported; should have been", detected),
                             ("quarantined", kid), t0)
            s = c.schedule(iat)
            if s.active is None or s.active.kid != kid:
                problems.add("sign at %.3f (iat %d) signed by %s; our records say %s is active "
                             "then:\n%s" % (t0, iat, kid, s.active and s.active.kid, s.dump()),
                             ("schedule", kid, s.active and s.active.kid), t0)
            after = next((x for x in samples if x[0] >= t1), None)
            if after is None:
                problems.add("no JWKS fetched after the sign at %.3f" % t0, "no JWKS", t0)
            else:
                err = self.verify(tok, after[2])
                if err:
                    problems.add("token of %.3f (kid %s) does not verify against the JWKS "
                                 "fetched at %.3f: %s" % (t0, kid, after[0], err),
                                 ("verify now", kid), t0)
            seen = first_seen.get(kid)
            if seen is None:
                problems.add("token of %.3f: kid %s was never in the JWKS" % (t0, kid),
                             ("never published", kid), t0)
                continue
            err = self.verify(tok, seen[2])
            if err:
                problems.add("token of %.3f does not verify against the JWKS of %.3f, the first "
                             "that held %s: %s" % (t0, seen[0], kid, err),
                             ("verify first", kid), t0)
            # a key is published (in the JWKS) by its created_at, and activates_at >=
            # created_at + prepublish; the slack is for the sampler's own delays
            if kid != c.first_kid and seen[1] > iat - TIMING.prepublish + 1.0:
                problems.add("token of %.3f (iat %d) by %s: that kid was first published at "
                             "%.3f, less than prepublish (%ds) before"
                             % (t0, iat, kid, seen[1], TIMING.prepublish),
                             ("prepublish", kid), t0)
        c.done_signs = len(signs)

    def verify(self, token, jwks_response):
        try:
            tokencheck.verify_pyjwt(token, json.loads(jwks_response.body), ISS, AUD,
                                    leeway=3600)
            return None
        except Exception as e:  # noqa: BLE001 - reported
            return "%s: %s" % (type(e).__name__, e)

    def check_status(self, c, upto, problems):
        if c.t_plant is None:
            return
        st = tokencheck.admin_json(c.d, "GET", "/v1/status")
        for members in c.expect:
            if not reports(st, members):
                problems.add("admin status: %s should be >= 1 (the contract); status: %s"
                             % (" or ".join(map(repr, members)), json.dumps(st)))
        if st.get("level") not in ("warning", "critical"):
            problems.add("admin status level %r: with foreign or quarantined objects it is at "
                         "least 'warning'; status: %s" % (st.get("level"), json.dumps(st)))
        if ("foreign",) in c.expect and "foreign object" not in c.d.log():
            problems.add("no 'foreign object' line in the daemon's log")

    # -- the cases --

    def run_case(self, name, plant, expect, rotate_first=False, reload_at_once=False,
                 live_for=0):
        """expect: status members, a tuple per requirement of which one must count >= 1.
        reload_at_once: a reload right after planting, while the keys are as planted.
        live_for: the daemon then lives that long after its restart, checked every 10 s."""
        c = Custody(self, name)
        c.expect = expect
        c.start()
        if rotate_first:
            c.wait_rotation(settle=0.5)
            self.check(c, "after a rotation, before planting")
        else:
            self.check(c, "before planting")
        c.t_plant = time.time()
        plant(c)
        if reload_at_once:
            c.reload()
        deadline = time.time() + DETECT_WITHIN
        while time.time() < deadline:
            st = tokencheck.admin_json(c.d, "GET", "/v1/status")
            if all(reports(st, members) for members in expect):
                c.t_detected = time.time()
                break
            time.sleep(0.2)
        time.sleep(RESCAN + 0.5)
        self.check(c, "after planting" + (" and a reload" if reload_at_once else ""))
        c.wait_rotation()
        self.check(c, "after a rotation")
        c.reload()
        self.check(c, "after a reload (SIGHUP)")
        c.restart()
        self.check(c, "after a restart")
        restarted = time.time()
        c.wait_rotation()
        self.check(c, "after a rotation after the restart")
        while time.time() < restarted + live_for:
            time.sleep(max(0.0, min(10.0, restarted + live_for - time.time())))
            self.check(c, "%.0f s after the restart" % (time.time() - restarted))
        return c

    def ours(self, c):
        """(active, pending) records of our issuer now."""
        s = c.schedule(time.time())
        return s.active.rec, s.pending[0].rec

    def test_a_forged_public_record_for_active_key(self):
        """C1, C3, C5, C7: a public record is foreign; the active key is neither destroyed nor
        unpublished."""
        def plant(c):
            active, _ = self.ours(c)
            forged = dict(active, seq=active["seq"] + 1, created_at=LONG_AGO,
                          activates_at=LONG_AGO, retires_at=LONG_AGO + 86400)
            c.plant_record("forged record of the active key, expired long ago",
                           "tokensign:main:" + active["kid"], record_text(forged),
                           login=False, private=False)
        self.run_case("a", plant, [("foreign",)])

    def test_b_forged_private_record_same_seq(self):
        """C6: two private records disagree about the active key: quarantined, never destroyed,
        no older key takes over."""
        def plant(c):
            active, _ = self.ours(c)
            forged = dict(active, created_at=LONG_AGO, activates_at=LONG_AGO,
                          retires_at=LONG_AGO + 86400)
            c.plant_record("forged record of the active key with its seq",
                           "tokensign:main:" + active["kid"], record_text(forged),
                           login=True, private=True)
            c.quarantine.add(active["kid"])
            c.allow_no_key = True
        # a conflict of two private records: quarantined, and the forged one may count as foreign
        self.run_case("b", plant, [("quarantined", "foreign")])

    def test_c_out_of_range_records(self):
        """C1, C5, C6: INT64_MAX and negative timestamps (UBSan build: no overflow) quarantine,
        never destroy."""
        def plant(c):
            active, pending = self.ours(c)
            huge = dict(active, seq=active["seq"] + 1, retires_at=INT64_MAX)
            neg = dict(pending, seq=pending["seq"] + 1, created_at=-1, activates_at=INT64_MIN,
                       retires_at=-1)
            for login in (False, True):
                how = "logged in" if login else "PIN-less"
                c.plant_record("record of the active key retiring at INT64_MAX (%s)" % how,
                               "tokensign:main:" + active["kid"], record_text(huge),
                               login=login, private=login)
                c.plant_record("record of the pending key with negative timestamps (%s)" % how,
                               "tokensign:main:" + pending["kid"], record_text(neg),
                               login=login, private=login)
            c.quarantine.update([active["kid"], pending["kid"]])
            c.allow_no_key = True
        # the public ones are foreign; the private ones quarantine both keys
        self.run_case("c", plant, [("quarantined",), ("foreign",)])

    def test_d_public_object_with_other_applications_id(self):
        """C1, C5, C6: only our own halves are ever swept, by handle; a pair whose record cannot
        be parsed survives the half-made sweep."""
        other, removed = secrets.token_hex(16), secrets.token_hex(16)

        def plant(c):
            c.plant_pair("another application's key pair", "otherapp", other)
            c.plant_pub("public key with our label and the other application's CKA_ID",
                        "tokensign:main", other, copy_of=other)
            # Issue 11: "an unparseable record destroys its key about a minute later". A key
            # pair exactly like ours, of an issuer no longer configured, whose only record
            # cannot be parsed: quarantined (kept), so never swept as a recordless pair.
            c.plant_pair("key pair of a removed issuer 'other'", "tokensign:other", removed,
                         "--private-pub")
            pub = [o for o in c.objs
                   if o.get("class") == "public_key" and o.get("id") == removed][0]
            kid = tokencheck.thumbprint(tokencheck.jwk_of_public(pub))
            c.plant_record("its only record, unparseable", "tokensign:other:" + kid,
                           '{"v":2,"issuer":"other","kid":"%s","id":"%s",' % (kid, removed),
                           login=True, private=True)
        # The sweep age counts from when this process first saw the pair: the daemon lives
        # that long after its restart, and a few rescans more.
        self.run_case("d", plant, [("foreign",), ("quarantined",)],
                      live_for=SWEEP_AGE + 3 * RESCAN + 2)

    def test_e_duplicate_public_keys(self):
        """C1, C7: public duplicates of our public halves disturb nothing, across a reload."""
        def plant(c):
            s = c.schedule(time.time())
            retired = [k for k in s.retired]
            self.assertTrue(retired and s.active, "no retired key after a rotation:\n"
                            + c.context())
            jwks = {k["kid"]: k for k in c.d.jwks("main")["keys"]}
            for what, k in (("retired", retired[-1]), ("active", s.active)):
                c.plant_pub("duplicate public key of the %s key %s" % (what, k.kid),
                            "tokensign:main", k.id, point=ec_point_of_jwk(jwks[k.kid]))
        # reloaded at once, while the duplicated active key is still active: a reload that
        # dropped it would hand over to the retired key (within its grace), or to no key
        self.run_case("e", plant, [("foreign",)], rotate_first=True, reload_at_once=True)

    def test_f_unsafe_private_keys_with_valid_looking_records(self):
        """C2, C3, C5: weak private keys with records are foreign: never used, published or
        destroyed (not even their records)."""
        def plant(c):
            now = int(time.time())
            active, _ = self.ours(c)
            for n, flag in enumerate(("--extractable", "--no-sensitive")):
                idhex = secrets.token_hex(16)
                c.plant_pair("key pair %s with our label" % flag, "tokensign:main", idhex,
                             flag)
                pub = [o for o in c.objs
                       if o.get("class") == "public_key" and o.get("id") == idhex][0]
                kid = tokencheck.thumbprint(tokencheck.jwk_of_public(pub))
                at = now + TIMING.prepublish + 1 + n
                rec = dict(active, kid=kid, id=idhex, seq=0, created_at=now, activates_at=at,
                           retires_at=at + TIMING.period)
                c.plant_record("valid-looking record of the %s key %s" % (flag, kid),
                               "tokensign:main:" + kid, record_text(rec), login=True,
                               private=True)
                c.foreign_kids.add(kid)
        self.run_case("f", plant, [("foreign",)])

    def test_g_unparseable_record(self):
        """C6: an unparseable private record quarantines its key, never destroys it."""
        def plant(c):
            _, pending = self.ours(c)
            text = record_text(pending)[:60]
            for login in (False, True):
                c.plant_record("unparseable record of the pending key (%s)"
                               % ("logged in" if login else "PIN-less"),
                               "tokensign:main:" + pending["kid"], text, login=login,
                               private=login)
            c.quarantine.add(pending["kid"])
            c.allow_no_key = True
        # the public one is foreign; the private one quarantines the pending key
        self.run_case("g", plant, [("quarantined",), ("foreign",)])

    # -- the migration --

    def test_migration_of_public_key_halves(self):
        """A token as the release before issue 11 left it: two keys of issuer main (active
        and pending) whose public halves are public objects, made by C_GenerateKeyPair with
        that release's templates, and their records; and another application's key pair.
        The daemon starts on it: our public halves are private afterwards (and nothing else
        changed), the JWKS is byte for byte the one that release served, the active key signs,
        and a second start changes nothing."""
        c = Custody(self, "migration", issuers=MIGRATION_ISSUERS, max_age="5m")
        d = c.d
        d.provision()
        ids = [secrets.token_hex(16) for _ in range(2)]
        other = secrets.token_hex(16)
        for idhex in ids:
            c.plant_pair("key pair of the previous release", "tokensign:main", idhex)
        c.plant_pair("another application's key pair", "otherapp", other)
        pubs = {o["id"]: o for o in tokencheck.read(d).objs if o.get("class") == "public_key"}
        jwks = {i: tokencheck.jwk_of_public(pubs[i]) for i in ids}
        kids = {i: tokencheck.thumbprint(jwks[i]) for i in ids}
        now = int(time.time())
        period, ttl = 3600, 3600
        active = {"v": 2, "issuer": "main", "iss": ISS, "kid": kids[ids[0]], "alg": "ES256",
                  "id": ids[0], "seq": 0, "created_at": now - 60, "activates_at": now - 60,
                  "retires_at": now - 60 + period, "max_token_ttl": ttl}
        pending = dict(active, kid=kids[ids[1]], id=ids[1], activates_at=active["retires_at"],
                       retires_at=active["retires_at"] + period)
        for rec in (active, pending):
            c.write_record("tokensign:main:" + rec["kid"], record_text(rec))
        before = tokencheck.read(d).objs
        self.assertEqual([o["private"] for o in before
                          if o["class"] == "public_key" and o["id"] in ids], [False, False],
                         "the previous release's public halves are public:\n%s"
                         % "\n".join(map(canon, before)))
        # SPEC §5: keys ordered by activates_at, then kid; members in a fixed order
        want = json.dumps({"keys": [
            {"kid": kids[i], "kty": "EC", "alg": "ES256", "use": "sig", "crv": "P-256",
             "x": jwks[i]["x"], "y": jwks[i]["y"]} for i in ids]},
            separators=(",", ":")).encode()

        d.start()
        after = tokencheck.read(d).objs

        def ctx():
            return "before:\n  %s\nafter:\n  %s\ndaemon log:\n%s" % (
                "\n  ".join(map(canon, before)), "\n  ".join(map(canon, after)),
                d.log()[-4000:])

        with self.subTest(check="our public halves are private now"):
            for idhex in ids:
                was = [o for o in before if o["class"] == "public_key" and o["id"] == idhex]
                now_ = [o for o in after if o["class"] == "public_key" and o["id"] == idhex]
                self.assertEqual(len(now_), 1, "public halves of %s:\n%s" % (idhex, ctx()))
                self.assertIs(now_[0]["private"], True, "public half of %s:\n%s"
                              % (idhex, ctx()))
                for m in ("label", "key_type", "ec_params", "ec_point", "token", "verify"):
                    self.assertEqual(now_[0][m], was[0][m], "%s of the public half of %s:\n%s"
                                     % (m, idhex, ctx()))
        with self.subTest(check="everything else untouched"):
            rest = collections.Counter(canon(o) for o in after
                                       if not (o["class"] == "public_key" and o["id"] in ids))
            rest_before = collections.Counter(canon(o) for o in before if not (
                o["class"] == "public_key" and o["id"] in ids))
            self.assertEqual(rest, rest_before, ctx())
        r = d.http("GET", "/main/.well-known/jwks.json")
        with self.subTest(check="JWKS byte-identical to the previous release's"):
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, want, ctx())
        with self.subTest(check="the active key signs"):
            body = self.assertStillSigns(d, claims=CLAIMS)
            self.assertEqual(body["kid"], kids[ids[0]], ctx())
            old = json.loads(want)
            for doc, what in ((json.loads(r.body), "the JWKS served"),
                              (old, "the previous release's JWKS")):
                self.assertIsNone(self.verify(body["token"], harness.Response(
                    200, "", {}, [], json.dumps(doc).encode())), what)
        d.restart()
        again = tokencheck.read(d).objs
        r2 = d.http("GET", "/main/.well-known/jwks.json")
        with self.subTest(check="a second start changes nothing"):
            self.assertEqual(collections.Counter(map(canon, again)),
                             collections.Counter(map(canon, after)), ctx())
            self.assertEqual(r2.body, r.body)
            self.assertEqual(r2.headers.get("etag"), r.headers.get("etag"))
            self.assertEqual(self.assertStillSigns(d, claims=CLAIMS)["kid"], kids[ids[0]])


if __name__ == "__main__":
    harness.main()
