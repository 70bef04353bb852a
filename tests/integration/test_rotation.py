#!/usr/bin/python3
"""Scheduled rotation as relying parties and callers see it (SPEC §5, §6), over time.

- The JWKS of two issuers with different periods, sampled every 0.5 s for 15 s: at every sample
  it holds exactly the keys the records in the token say (pending + active + retired not yet
  destroyed, in activates_at/kid order, this issuer's only), GET /v1/keys says the same, and
  the records follow the schedule predicted from the configuration alone.
- Pre-publication: tokens are signed all the while; every token's kid was in a JWKS snapshot
  taken at least prepublish (minus one sampling interval) before the token's iat (except the
  first key of the fresh token), and it was signed by the key that the records say is active
  at its iat.
- A token signed just before a rotation keeps verifying against the live JWKS until its exp,
  with PyJWT and with node's jose (tests/interop/verify_jose.mjs).
- Four client threads sign across at least five rotations: every answer is 200 and every
  token verifies against the JWKS fetched when it is checked, within its lifetime.
"""

import json
import queue
import threading
import time

import jwt

import harness
import tokencheck

AUD = "api://rotation"

ISSUERS = {
    "a": {"iss": "https://login.example.test/a", "algorithm": "ES256", "rotation-period": "4s",
          "prepublish": "2s", "token-ttl": "3s", "max-token-ttl": "3s", "allow": "*"},
    "b": {"iss": "https://login.example.test/b", "algorithm": "ES256", "rotation-period": "6s",
          "prepublish": "3s", "token-ttl": "3s", "max-token-ttl": "3s", "allow": "*"},
}
FAST = {
    "fast": {"iss": "https://login.example.test/fast", "algorithm": "ES256",
             "rotation-period": "2s", "prepublish": "1s", "token-ttl": "3s",
             "max-token-ttl": "3s", "allow": "*"},
    "a": dict(ISSUERS["a"]),
}
MAX_AGE = "1s"
INTERVAL = 0.5        # sampling interval (s)
SAMPLE_FOR = 15.0     # how long the JWKS is sampled (s)


def sleep_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


class RotationTest(harness.TestCase):

    def start(self, issuers):
        d = tokencheck.admin_daemon(issuers, jwks_max_age=MAX_AGE)
        self.addCleanup(d.close)
        d.start()
        self.d = d
        return d

    def fail_with(self, msg, d=None, view=None):
        d = d or self.d
        ctx = [msg]
        if view is not None:
            ctx.append(view.report() if hasattr(view, "report") else view.dump())
        ctx.append("daemon log (tail):\n" + d.log()[-4000:])
        self.fail("\n".join(ctx))

    # ---------------------------------------------------------------------------------------

    def test_jwks_over_time_and_prepublication(self):
        d = self.start(ISSUERS)
        t_start = time.time()
        timings = tokencheck.timings_of(ISSUERS)
        first = {}  # issuer -> kid of the key the fresh token started with
        v0 = tokencheck.read(d)
        for n in ISSUERS:
            ks = v0.issuer_keys(n)
            self.assertEqual(len(ks), 2, "right after the first start, one active and one "
                             "pending key:\n" + v0.dump())
            first[n] = ks[0].kid
        T0 = {n: v0.issuer_keys(n)[0].created_at for n in ISSUERS}

        def first_key(k):
            return k.kid == first.get(k.issuer)

        # Sign continuously in the background.
        tokens, stop = [], threading.Event()

        def signer():
            while not stop.is_set():
                for n in ISSUERS:
                    t0 = time.time()
                    r = d.sign(n, {"aud": AUD, "sub": "s"})
                    tokens.append((t0, time.time(), n, r))
                time.sleep(0.05)

        th = threading.Thread(target=signer, daemon=True)
        th.start()
        samples = []
        try:
            tick = time.time()
            while time.time() - t_start < SAMPLE_FOR:
                s = tokencheck.consistent_sample(d, ISSUERS, first_key)
                samples.append(s)
                if s.problems:
                    self.fail_with("sample at %.3f (attempt %d): the daemon disagrees with the "
                                   "token:\n  %s" % (s.ta, s.attempts, "\n  ".join(s.problems)),
                                   view=s.res)
                # the schedule predicted from the configuration: 2 keys at start, one more
                # per rotation (none is destroyed within the first minute)
                for n, t in timings.items():
                    elapsed = int(s.ta) - T0[n]
                    want = {2 + elapsed // t.period}
                    if s.ta - int(s.ta) < 0.6 and elapsed % t.period == 0 and elapsed > 0:
                        want.add(1 + elapsed // t.period)  # the new key is being made
                    if len(s.kids(n)) not in want:
                        self.fail_with("sample at %.3f (%ds after the first start): the JWKS "
                                       "of %s holds %d keys, the schedule says %s"
                                       % (s.ta, elapsed, n, len(s.kids(n)), sorted(want)),
                                       view=s.res)
                tick += INTERVAL
                sleep_until(tick)
        finally:
            stop.set()
            th.join()

        final = tokencheck.read(d)
        t_end = time.time()
        print("sampled %d times; %d samples needed more than one attempt (a rotation was under "
              "way); %d tokens" % (len(samples), len([s for s in samples if s.attempts > 1]),
                                   len(tokens)))
        self.assertGreaterEqual(len(samples), int(SAMPLE_FOR / INTERVAL) * 2 // 3,
                                "too few samples: the machine is too slow for this test")

        # The records follow the schedule predicted from the configuration alone.
        for n, t in timings.items():
            ks = final.issuer_keys(n)
            rotations = (int(t_end) - T0[n]) // t.period
            self.assertIn(len(ks), (rotations + 2, rotations + 1),
                          "keys of %s after %d rotations:\n%s" % (n, rotations, final.dump()))
            for i, k in enumerate(ks):
                ctx = "key #%d of %s does not follow the schedule:\n%s" % (i, n, final.dump())
                self.assertEqual(k.activates_at, T0[n] + i * t.period, ctx)
                self.assertEqual(k.retires_at, k.activates_at + t.period, ctx)
                if i == 0:
                    self.assertEqual(k.created_at, T0[n], ctx)
                elif i == 1:
                    # made in the same pass, recorded as published from the next whole second;
                    # a slow pass (sanitizer build, loaded machine) may end a second later
                    self.assertIn(k.created_at - T0[n], (0, 1, 2), ctx)
                else:
                    # made when its predecessor activated (the scheduler may wake a bit late),
                    # recorded as published from the next whole second
                    self.assertIn(k.created_at - ks[i - 1].activates_at, (0, 1, 2, 3), ctx)
                if i > 0:
                    self.assertGreaterEqual(k.activates_at, k.created_at + t.prepublish, ctx)

        # A key once published stays published (none is destroyed within a minute), and a
        # JWKS body changes exactly when its ETag does.
        for n in ISSUERS:
            seen = set()
            prev = None
            for s in samples:
                kids = set(s.kids(n))
                lost = seen - kids
                if lost:
                    self.fail_with("at %.3f the JWKS of %s lost %s, which it published before"
                                   % (s.ta, n, lost), view=s.res)
                seen |= kids
                body = json.dumps(s.jwks[n], sort_keys=True)
                if prev is not None and (prev[0] == body) != (prev[1] == s.etags[n]):
                    self.fail("JWKS of %s: body and ETag did not change together at %.3f"
                              % (n, s.ta))
                prev = (body, s.etags[n])

        # Every sign answer was 200, every token was signed by the key the records say was
        # active at its iat, and its kid had been published for prepublish before its iat.
        self.assertGreater(len(tokens), 100, "too few tokens")
        bad = [(t0, n, r) for t0, _, n, r in tokens if r.status != 200]
        self.assertFalse(bad, "non-200 sign answers: %r" % bad[:5])
        first_seen = {}
        for s in samples:
            for n in ISSUERS:
                for kid in s.kids(n):
                    first_seen.setdefault((n, kid), s.ta)
        scheds = {}
        margin = None
        for t0, t1, n, r in tokens:
            body = r.json()
            kid, iat = body["kid"], body["iat"]
            if (n, iat) not in scheds:
                scheds[(n, iat)] = tokencheck.Schedule(final.issuer_keys(n), timings[n], iat)
            act = scheds[(n, iat)].active
            if act is None or act.kid != kid:
                self.fail_with("token of %s with iat %d was signed by %s; the records say %s "
                               "was active then" % (n, iat, kid, act and act.kid),
                               view=scheds[(n, iat)])
            if kid == first[n]:
                continue
            seen_at = first_seen.get((n, kid))
            limit = iat - timings[n].prepublish + INTERVAL
            if seen_at is not None:
                margin = limit - seen_at if margin is None else min(margin, limit - seen_at)
            if seen_at is None or seen_at > limit:
                self.fail_with(
                    "token of %s signed at %.3f (iat %d) by %s: that kid first appeared in the "
                    "JWKS at %s, later than iat - prepublish (%d) + one sampling interval: "
                    "relying parties could not have had it" % (
                        n, t0, iat, kid, "never" if seen_at is None else "%.3f" % seen_at,
                        timings[n].prepublish), view=final)
        print("pre-publication: the tightest token had its kid published %.2fs before the "
              "limit (iat - prepublish + %.1fs)" % (margin, INTERVAL))
        kids_used = {(n, r.json()["kid"]) for _, _, n, r in tokens}
        for n, t in timings.items():
            used = len([1 for m, _ in kids_used if m == n])
            self.assertGreaterEqual(used, int(SAMPLE_FOR) // t.period,
                                    "issuer %s signed with too few keys: %d" % (n, used))

    # ---------------------------------------------------------------------------------------

    def test_token_from_before_rotation_verifies_until_exp(self):
        # 5 s tokens (one node run takes ~0.3 s; the last check must end before exp)
        conf = dict(ISSUERS["a"], **{"token-ttl": "5s", "max-token-ttl": "5s"})
        d = self.start({"a": conf})
        n, iss = "a", conf["iss"]
        period = tokencheck.parse_duration(conf["rotation-period"])
        st = tokencheck.admin_json(d, "GET", "/v1/status")["issuers"][0]
        N = st["next_rotation"]
        if N - time.time() < 1.0:
            N += period
            st = None
        sleep_until(N - 0.35)
        if st is None:
            st = tokencheck.admin_json(d, "GET", "/v1/status")["issuers"][0]
        body = self.assertSigned(d.sign(n, {"aud": AUD, "sub": "before"}))
        old_kid, tok, exp = body["kid"], body["token"], body["exp"]
        self.assertLess(time.time(), N, "the machine was too slow to sign before the rotation")
        self.assertEqual(exp, body["iat"] + 5)
        self.assertEqual(old_kid, st["active_kid"])
        self.assertEqual(st["next_rotation"], N)

        def verifications():
            """PyJWT and jose against the live JWKS, at the same time."""
            out = {}

            def pyjwt():
                try:
                    tokencheck.verify_pyjwt_live(tok, d.jwks_url(n), iss, AUD)
                    out["PyJWT"] = None
                except Exception as e:  # noqa: BLE001 - reported with context
                    out["PyJWT"] = e
            th = threading.Thread(target=pyjwt)
            th.start()
            ok, text = tokencheck.verify_jose(tok, d.jwks_url(n), iss, AUD, "ES256", old_kid)
            out["jose"] = None if ok else text
            th.join()
            return out

        took = [0.0]

        def verify_both(when):
            t0 = time.time()
            out = verifications()
            took[0] = max(took[0], time.time() - t0)
            errors = ["%s: %r" % (k, v) for k, v in out.items() if v is not None]
            if errors:
                self.fail_with("the token signed at %.2f (iat %d, exp %d) by %s no longer "
                               "verifies %s (checked from %.2f to %.2f): %s\nJWKS now: %s"
                               % (N - 0.35, body["iat"], exp, old_kid, when, t0, time.time(),
                                  "; ".join(errors), d.jwks(n)))
            self.assertLess(time.time(), exp, "the check ended after exp: inconclusive")

        verify_both("just after it was signed")
        sleep_until(N + 0.2)
        after = self.assertSigned(d.sign(n, {"aud": AUD, "sub": "after"}))
        self.assertNotEqual(after["kid"], old_kid, "no rotation at %d" % N)
        self.assertIn(old_kid, [k["kid"] for k in d.jwks(n)["keys"]])
        verify_both("right after the rotation")
        # as late as the verifiers' speed allows (node is slow on a loaded machine)
        sleep_until(exp - max(1.3, 2 * took[0] + 0.3))
        st = tokencheck.admin_json(d, "GET", "/v1/status")["issuers"][0]
        self.assertEqual(st["active_kid"], after["kid"])
        verify_both("shortly before its exp, %.1fs after its key retired" % (time.time() - N))
        # and both verifiers do reject it after its exp (they can fail)
        sleep_until(exp + 0.2)
        out = verifications()
        self.assertIsInstance(out["PyJWT"], jwt.ExpiredSignatureError, out)
        self.assertIn("ERR_JWT_EXPIRED", out["jose"] or "", out)

    # ---------------------------------------------------------------------------------------

    def test_continuous_signing_across_rotations(self):
        d = self.start(FAST)
        timings = tokencheck.timings_of(FAST)
        t_start = time.time()
        run_for = 5 * timings["fast"].period + 1.5
        stop = threading.Event()
        todo = queue.Queue()
        answers, failures, checked = [], [], []
        lock = threading.Lock()

        def client(i):
            names = list(FAST)
            j = i
            while not stop.is_set():
                n = names[j % len(names)]
                j += 1
                t0 = time.time()
                try:
                    r = d.sign(n, {"aud": AUD, "sub": "client-%d" % i})
                except Exception as e:  # noqa: BLE001
                    with lock:
                        failures.append("client %d at %.3f: %r" % (i, t0, e))
                    continue
                with lock:
                    answers.append((t0, n, r.status))
                if r.status != 200:
                    with lock:
                        failures.append("client %d at %.3f: %s %r" % (i, t0, n, r))
                    continue
                todo.put((t0, n, r.json()))
                time.sleep(0.01)

        def checker():
            while True:
                batch = []
                try:
                    batch.append(todo.get(timeout=0.2))
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                while True:
                    try:
                        batch.append(todo.get_nowait())
                    except queue.Empty:
                        break
                jwks = {n: d.jwks(n) for n in FAST}   # fetched now, for this batch
                now = time.time()
                for t0, n, body in batch:
                    if now >= body["exp"]:
                        failures.append("token signed at %.3f was checked only at %.3f, after "
                                        "its exp %d" % (t0, now, body["exp"]))
                        continue
                    try:
                        tokencheck.verify_pyjwt(body["token"], jwks[n], FAST[n]["iss"], AUD)
                    except Exception as e:  # noqa: BLE001
                        failures.append("token of %s signed at %.3f by %s (iat %d) does not "
                                        "verify against the JWKS fetched at %.3f: %r; JWKS kids "
                                        "%s" % (n, t0, body["kid"], body["iat"], now, e,
                                                [k["kid"] for k in jwks[n]["keys"]]))
                        continue
                    checked.append((n, body["kid"], body["iat"]))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
        chk = threading.Thread(target=checker, daemon=True)
        for t in threads:
            t.start()
        chk.start()
        try:
            sleep_until(t_start + run_for)
        finally:
            stop.set()
            for t in threads:
                t.join()
            chk.join()
        final = tokencheck.read(d)
        if failures:
            self.fail_with("%d failure(s) among %d answers; first ones:\n  %s"
                           % (len(failures), len(answers), "\n  ".join(failures[:10])),
                           view=final)
        self.assertEqual(len(checked), len([a for a in answers if a[2] == 200]))
        self.assertGreater(len(checked), 200, "too few tokens were signed")
        kids = {}
        for n, kid, iat in checked:
            kids.setdefault(n, set()).add(kid)
        rotations = len(kids["fast"]) - 1
        self.assertGreaterEqual(rotations, 5, "signing saw only %d rotations of 'fast'"
                                % rotations)
        # every token was signed by the key that the records say was active at its iat
        for n, kid, iat in set(checked):
            s = tokencheck.Schedule(final.issuer_keys(n), timings[n], iat)
            if s.active is None or s.active.kid != kid:
                self.fail_with("a token of %s with iat %d was signed by %s; the records say %s"
                               % (n, iat, kid, s.active and s.active.kid), view=s)
        res = tokencheck.check(final, FAST, settled=False,
                               prepub_exempt=lambda k: k.activates_at == k.created_at)
        if not res.ok:
            self.fail_with("token invariants", view=res)
        print("continuous: %d tokens from 4 clients over %.1fs, %d rotations of 'fast'"
              % (len(checked), run_for, rotations))

    # ---------------------------------------------------------------------------------------

    def test_revoke_active_key_while_signing(self):
        """SPEC §2/§6, admin-api.md: revoking the active key hands over to the pending key
        first, "so signing never stops". Four clients sign without pause while the active key
        is revoked six times: every answer must be 200, by a key that is in the JWKS."""
        d = self.start({"a": dict(ISSUERS["a"])})
        stop = threading.Event()
        answers, lock = [], threading.Lock()

        def client(i):
            while not stop.is_set():
                t0 = time.time()
                try:
                    r = d.sign("a", {"aud": AUD, "sub": "c%d" % i})
                except Exception as e:  # noqa: BLE001
                    r = e
                with lock:
                    answers.append((t0, r))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        revokes = []
        try:
            for _ in range(6):
                time.sleep(0.3)
                act = tokencheck.admin_json(d, "GET", "/v1/status")["issuers"][0]["active_kid"]
                t0 = time.time()
                a = tokencheck.admin_json(d, "POST", "/v1/issuers/a/keys/%s/revoke" % act, {})
                revokes.append((t0, time.time(), a))
                self.assertEqual((a["revoked_kid"], a["was"]), (act, "active"), a)
                self.assertNotIn(act, [k["kid"] for k in d.jwks("a")["keys"]])
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        bad = [(t0, r) for t0, r in answers if not isinstance(r, harness.Response)
               or r.status != 200]
        if bad:
            self.fail_with("%d of %d sign answers during revocations of the active key were not "
                           "200; first: %s\nrevocations (start, end, answer):\n  %s"
                           % (len(bad), len(answers),
                              ["%.3f %r" % (t0, r) for t0, r in bad[:3]],
                              "\n  ".join("%.3f-%.3f %r" % x for x in revokes)))


if __name__ == "__main__":
    harness.main()
