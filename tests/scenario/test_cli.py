#!/usr/bin/env python3
"""Unix conventions of the four programs: --help on stdout with status 0,
--version, usage errors with status 64 (EX_USAGE).  And tgrunnerctl's
client side against a stand-in control socket written here, so that each
answer (or the lack of one) is exactly what the test needs: a daemon that
accepts and never answers (timeout, clear message), one that closes
without reading (no SIGPIPE), multi-line reasons (escaped, one row each),
"already draining" (success), a retry of an unknown id (failure naming
it), a status without a successful poll yet ("never", not "-1s ago"; also
on a real daemon whose Bot API never answers), a
refused reload (its error, status 1) and one with options that need a
restart (a warning, status 0), restart-workers followed through status
to its end (done: 0; stopped: 1 with the reason; the daemon gone: 1), and
how the socket is chosen (-s, -i, $TGRUNNER_CONTROL_SOCKET)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, build_path	# noqa: E402

PROGRAMS = ("tgrunnerd", "tgrunnerctl", "tgrunner-fakeapi", "tgrunner-relay")


def run(argv, env=None, timeout=20):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=env)
    return p.returncode, p.stdout, p.stderr


class StandIn:
    """A Unix socket server playing the daemon: for each connection,
    behaviour(conn, line) decides what happens.  Records the lines."""

    def __init__(self, path, behaviour):
        self.path = path
        self.behaviour = behaviour
        self.lines = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.held = []
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.closing:
                conn.close()
                return
            self.behaviour(self, conn)

    def read_line(self, conn):
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
        line = buf.decode().rstrip("\n")
        self.lines.append(line)
        return line

    def close(self):
        """Stop serving before the socket is closed: a thread still blocked
        in accept() on a closed socket would accept on whatever socket
        reuses its descriptor number (the next test's stand-in) and answer
        with this test's behaviour.  shutdown() wakes the accept()."""
        self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(10)
        self.sock.close()
        for c in self.held:
            c.close()


def answer(obj):
    """Behaviour: read the command, answer obj (or obj(line)), close."""
    def b(server, conn):
        line = server.read_line(conn)
        reply = obj(line) if callable(obj) else obj
        conn.sendall((json.dumps(reply) + "\n").encode())
        conn.close()
    return b


class Cli(ScenarioCase):

    def ctl(self, *args, env=None, timeout=20):
        return run([build_path("tgrunnerctl")] + list(args), env=env,
                   timeout=timeout)

    def stand_in(self, behaviour, name="ctl.sock"):
        s = StandIn(os.path.join(self.tmp, name), behaviour)
        self.addCleanup(s.close)
        return s

    # -- --help, --version, usage errors --------------------------------------

    def test_help_version_usage(self):
        for prog in PROGRAMS:
            with self.subTest(prog):
                rc, out, err = run([build_path(prog), "--help"])
                self.assertEqual((rc, err), (0, ""))
                self.assertTrue(out.startswith("usage: %s " % prog), out)
                self.assertEqual(run([build_path(prog), "-h"])[:2], (0, out))
                rc, out, err = run([build_path(prog), "--version"])
                self.assertEqual((rc, err), (0, ""))
                self.assertRegex(out, r"^%s \d+\.\d+\.\d+\n$" % prog)
                self.assertEqual(run([build_path(prog), "-V"])[:2], (0, out))
                rc, out, err = run([build_path(prog), "--no-such-option"])
                self.assertEqual((rc, out), (64, ""))
                self.assertIn("usage: %s" % prog, err)
        # operands where none are taken, missing commands, bad arguments
        for argv in (["tgrunnerd", "extra"], ["tgrunner-relay", "extra"],
                     ["tgrunnerctl"],
                     ["tgrunnerctl", "-t", "0", "status"],
                     ["tgrunnerctl", "-t", "x", "status"],
                     ["tgrunnerctl", "-i", "a/b", "status"],
                     ["tgrunnerctl", "-i", "a", "-s", "/x", "status"],
                     ["tgrunnerctl", "dead-letters", "retry"],
                     ["tgrunnerctl", "dead-letters", "retry", "12x"],
                     ["tgrunnerctl", "dead-letters", "retry", "1", "2"],
                     ["tgrunner-fakeapi", "extra"]):
            with self.subTest(argv):
                rc, out, err = run([build_path(argv[0])] + argv[1:])
                self.assertEqual((rc, out), (64, ""), err)

    # -- which socket ---------------------------------------------------------

    def test_socket_choice(self):
        ok = {"ok": True}
        a = self.stand_in(answer(ok), "a.sock")
        b = self.stand_in(answer(ok), "b.sock")
        env = dict(os.environ, TGRUNNER_CONTROL_SOCKET=a.path)
        self.assertEqual(self.ctl("reload", env=env)[:2],
                         (0, "reload: ok (changed: none)\n"))
        self.assertEqual(a.lines, ["reload"])
        # -s beats the environment
        self.assertEqual(self.ctl("-s", b.path, "reload", env=env)[0], 0)
        self.assertEqual(b.lines, ["reload"])
        # -i NAME: RUNSTATEDIR/tgrunner-NAME/control.sock, as in --help
        rc, out, err = self.ctl("--help")
        m = re.search(r"-i, --instance NAME .*\(socket (\S+)\)", out)
        self.assertTrue(m, out)
        rc, out, err = self.ctl("-i", "shop", "status", env=env)
        self.assertEqual(rc, 1)
        self.assertIn(m.group(1).replace("NAME", "shop") + ":", err)
        # without anything: the built-in default, which the daemon shares
        # (tests/scenario/test_install.py runs both with it)
        env.pop("TGRUNNER_CONTROL_SOCKET")
        rc, out, err = self.ctl("status", env=env)
        m = re.search(r"else (\S+/tgrunner/control\.sock)\)", self.ctl(
            "--help")[1])
        self.assertTrue(m)
        self.assertIn(m.group(1) + ":", err)

    # -- a daemon that does not answer ----------------------------------------

    def test_timeout_when_daemon_does_not_answer(self):
        def hold(server, conn):		# accept, read, never answer
            server.held.append(conn)
        s = self.stand_in(hold)
        t0 = time.monotonic()
        rc, out, err = self.ctl("-s", s.path, "-t", "1", "status")
        took = time.monotonic() - t0
        self.assertEqual(rc, 1)
        self.assertIn("no answer from tgrunnerd within 1s", err)
        self.assertLess(took, 10)
        self.assertGreaterEqual(took, 0.9)

    def test_timeout_when_daemon_does_not_accept(self):
        # a stopped daemon: its listen backlog fills and connect blocks
        path = os.path.join(self.tmp, "full.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(0)
        self.addCleanup(srv.close)
        fillers = []
        for _ in range(4):			# past the backlog
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                c.close()
                break
            fillers.append(c)
        self.addCleanup(lambda: [c.close() for c in fillers])
        t0 = time.monotonic()
        rc, out, err = self.ctl("-s", path, "-t", "1", "status")
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"within 1s")
        self.assertLess(time.monotonic() - t0, 10)

    def test_no_sigpipe_when_daemon_closes(self):
        def slam(server, conn):		# close at once, nothing read
            conn.close()
        s = self.stand_in(slam)
        for _ in range(20):
            rc, out, err = self.ctl("-s", s.path, "status")
            self.assertNotEqual(rc, -signal.SIGPIPE, err)
            self.assertEqual(rc, 1, err)
            self.assertIn("tgrunnerctl: ", err)

    def test_closed_stdout_is_no_sigpipe(self):
        s = self.stand_in(answer({"ok": True, "workers": [
            {"id": i, "pid": i, "state": "ready", "slots": 1, "busy": 0,
             "served": 0} for i in range(20000)]}))
        r, w = os.pipe()
        os.close(r)
        p = subprocess.run([build_path("tgrunnerctl"), "-s", s.path,
                            "workers"], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=20)
        os.close(w)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("standard output", p.stderr)

    # -- answers --------------------------------------------------------------

    def test_idempotent_drain_and_resume(self):
        # the daemon says it was there already; tgrunnerctl says so too
        answers = {"drain": {"ok": True, "state": "draining",
                             "already": True},
                   "resume": {"ok": True, "state": "running"}}
        s = self.stand_in(answer(lambda line: answers[line]))
        rc, out, err = self.ctl("-s", s.path, "drain")
        self.assertEqual((rc, out, err), (0, "drain: ok (already draining)\n",
                                          ""))
        rc, out, err = self.ctl("-s", s.path, "resume")
        self.assertEqual((rc, out, err), (0, "resume: ok\n", ""))
        rc, out, err = self.ctl("-s", s.path, "--json", "drain")
        self.assertEqual(rc, 0, err)
        self.assertIs(json.loads(out)["already"], True)
        # what the daemon refuses is an error, whatever state it names
        answers["drain"] = {"ok": False, "error": "not possible in this "
                            "state", "state": "stopping"}
        rc, out, err = self.ctl("-s", s.path, "drain")
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("drain: not possible in this state", err)

    def test_retry_of_unknown_id_fails_and_names_it(self):
        s = self.stand_in(answer(lambda line: {
            "ok": False, "requeued": 0,
            "error": "no dead letter with update_id 4242"}
            if line.endswith("4242") else {"ok": True, "requeued": 0}))
        rc, out, err = self.ctl("-s", s.path, "dead-letters", "retry", "4242")
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(err, "tgrunnerctl: dead-letters retry 4242: no dead "
                         "letter with update_id 4242\n")
        rc, out, err = self.ctl("-s", s.path, "-j", "dead-letters", "retry",
                                "4242")
        self.assertEqual(rc, 1)
        self.assertEqual(json.loads(out)["requeued"], 0)
        # "all" with nothing to retry is fine
        rc, out, err = self.ctl("-s", s.path, "dead-letters", "retry", "all")
        self.assertEqual((rc, out), (0, "0 update(s) queued again\n"), err)
        self.assertEqual(s.lines[-1], "dead-letters retry all")

    # -- reload ---------------------------------------------------------------

    def test_reload_answers(self):
        refused = {"ok": False, "file": "/etc/tgrunner.conf", "line": 12,
                   "error": "/etc/tgrunner.conf:12: workers: expected an "
                   "integer between 0 and 1024, got 'x'; the running "
                   "configuration is kept"}
        s = self.stand_in(answer(refused))
        rc, out, err = self.ctl("-s", s.path, "reload")
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(err, "tgrunnerctl: reload: " + refused["error"] +
                         "\n")
        taken = {"ok": True, "changed": ["workers", "flood_global_rate"],
                 "restart_needed": ["session_key"],
                 "replacing_workers": False}
        s = self.stand_in(answer(taken), "b.sock")
        rc, out, err = self.ctl("-s", s.path, "reload")
        self.assertEqual((rc, out), (0, "reload: ok (changed: workers, "
                                     "flood_global_rate)\n"))
        self.assertEqual(err, "tgrunnerctl: reload: warning: session_key "
                         "changed but takes effect only at the next start\n")

    # -- restart-workers, followed to its end --------------------------------

    def restart_stand_in(self, steps, name="r.sock"):
        """restart-workers is answered with steps[0]; each status after it
        with the next step (the last one repeated)."""
        seen = {"n": 0}

        def reply(line):
            if line == "restart-workers":
                return {"ok": True, "replacing": steps[0]["total"],
                        "restart": steps[0]}
            seen["n"] = min(seen["n"] + 1, len(steps) - 1)
            return {"ok": True, "restart": steps[seen["n"]]}
        return self.stand_in(answer(reply), name)

    @staticmethod
    def step(state, replaced, seq=1, **kw):
        r = {"state": state, "seq": seq, "replaced": replaced, "total": 3,
             "external": 0, "started": 1700000000}
        r.update(kw)
        return r

    def test_restart_workers_followed(self):
        steps = [self.step("running", 0),
                 self.step("running", 0, starting=4),
                 self.step("running", 1, draining=1, draining_busy=2),
                 self.step("running", 2, seq=2, starting=6),
                 self.step("done", 3, seq=2, ended=1700000009)]
        s = self.restart_stand_in(steps)
        rc, out, err = self.ctl("-s", s.path, "restart-workers")
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(out, "restart-workers: 0/3 replaced\n"
                         "restart-workers: 0/3 replaced, new worker 4 "
                         "starting\n"
                         "restart-workers: 1/3 replaced, worker 1 finishing 2 "
                         "update(s)\n"
                         "restart-workers: 2/3 replaced, new worker 6 "
                         "starting\n"
                         "restart-workers: another restart-workers started it "
                         "over\n"
                         "restart-workers: 3/3 replaced\n"
                         "restart-workers: done\n")
        self.assertEqual(s.lines, ["restart-workers"] + ["status"] * 4)
        # --json: the end, as the daemon says it
        s = self.restart_stand_in(steps, "j.sock")
        rc, out, err = self.ctl("-s", s.path, "-j", "restart-workers")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), steps[-1])
        # --no-wait: the first answer only
        s = self.restart_stand_in(steps, "n.sock")
        rc, out, err = self.ctl("-s", s.path, "--no-wait", "restart-workers")
        self.assertEqual((rc, out), (0, "restart-workers: ok\n"))
        self.assertEqual(s.lines, ["restart-workers"])

    def test_restart_workers_stopped(self):
        why = "new worker=4 did not come up: worker exited with status 3"
        steps = [self.step("running", 0, external=1),
                 self.step("stopped", 0, external=1, why=why)]
        s = self.restart_stand_in(steps)
        rc, out, err = self.ctl("-s", s.path, "restart-workers")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "restart-workers: 0/3 replaced; 1 external "
                         "worker(s) not restarted (the daemon did not start "
                         "them)\n")
        self.assertEqual(err, "tgrunnerctl: restart-workers: stopped: %s\n"
                         % why)
        rc, out, err = self.ctl("-s", s.path, "-j", "restart-workers")
        self.assertEqual(rc, 1)
        self.assertEqual(json.loads(out)["why"], why)
        # and how status shows it
        st = {"ok": True, "version": "0.1.0", "state": "running",
              "workers": [], "restart": self.step(
                  "stopped", 1, why=why, ended=int(time.time()) - 5)}
        s = self.stand_in(answer(st), "st.sock")
        rc, out, err = self.ctl("-s", s.path, "status")
        self.assertRegex(out, r"(?m)^restart:  STOPPED [56]s ago: %s \(1/3 "
                         r"replaced\)$" % re.escape(why))
        st["restart"] = self.step("running", 1, starting=9)
        rc, out, err = self.ctl("-s", s.path, "status")
        self.assertIn("\nrestart:  restarting workers: 1/3 replaced, new "
                      "worker 9 starting\n", out)

    def test_restart_workers_daemon_gone(self):
        # the daemon answers the command, then is gone
        def b(server, conn):
            line = server.read_line(conn)
            if line == "restart-workers":
                conn.sendall((json.dumps({"ok": True, "replacing": 3,
                                          "restart": self.step("running", 0)})
                              + "\n").encode())
                conn.close()
                server.sock.close()
            else:
                conn.close()
        s = self.stand_in(b)
        rc, out, err = self.ctl("-s", s.path, "restart-workers")
        self.assertEqual(rc, 1)
        self.assertIn("tgrunnerctl: %s: " % s.path, err)

    def test_multiline_reasons_are_escaped(self):
        reason = ("Traceback (most recent call last):\n  File \"bot.py\"\n"
                  "\tKeyError: 'x'\x1b[31m\\")
        s = self.stand_in(answer({"ok": True, "dead_letters": [
            {"update_id": 7, "attempts": 3, "t": 1700000000,
             "reason": reason},
            {"update_id": 8, "attempts": 1, "t": 1700000000,
             "reason": "short"}]}))
        rc, out, err = self.ctl("-s", s.path, "dead-letters")
        self.assertEqual(rc, 0, err)
        rows = out.splitlines()
        self.assertEqual(len(rows), 3, out)	# header and one row each
        self.assertTrue(rows[1].endswith(
            "Traceback (most recent call last):\\n  File \"bot.py\"\\n"
            "\\tKeyError: 'x'\\x1b[31m\\\\"), rows[1])
        self.assertTrue(rows[2].endswith(" short"))
        # --json keeps the reason as it is
        rc, out, err = self.ctl("-s", s.path, "--json", "dead-letters")
        self.assertEqual(json.loads(out)["dead_letters"][0]["reason"], reason)

    def test_status_before_first_poll(self):
        st = {"ok": True, "version": "0.1.0", "state": "starting",
              "bot": None, "uptime": 0, "poll_state": "starting",
              "last_poll_ok": 0, "offset": 0, "workers": [],
              "problem": "worker_command keeps\nfailing"}
        s = self.stand_in(answer(st))
        rc, out, err = self.ctl("-s", s.path, "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("last success never\n", out)
        self.assertNotIn("-1s", out)
        self.assertIn("PROBLEM:  worker_command keeps\\nfailing\n", out)
        # a clock that stepped back is not "-3s ago"
        st["last_poll_ok"] = int(time.time()) + 3600
        rc, out, err = self.ctl("-s", s.path, "status")
        self.assertIn("last success 0s ago\n", out)

    def test_status_of_a_real_daemon_before_first_poll(self):
        # the Bot API accepts the connection and never answers: the daemon
        # runs, answers on its control socket, and has never polled
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        self.addCleanup(silent.close)
        fake = self.start_fake()
        d = self.start_daemon(fake, wait=False, workers=1,
                              api_url="http://127.0.0.1:%d"
                              % silent.getsockname()[1])
        sock = d.conf["control_socket"]
        tgtest.wait_until(lambda: os.path.exists(sock), 20,
                          what="the control socket")
        rc, out, err = self.ctl("-s", sock, "status")
        self.assertEqual(rc, 0, err)
        self.assertIn(", last success never\n", out)
        self.assertNotRegex(out, r"-\d+s ago")
        # the real API: after a poll, seconds ago (not negative)
        d.restart(api_url=fake.url)
        tgtest.wait_until(lambda: re.search(
            r", last success \d+s ago\n", self.ctl("-s", sock,
                                                    "status")[1]),
            20, what="a successful poll in the status")
        self.assertEqual(d.stop(), 0)

    def test_unknown_command_is_a_usage_error(self):
        s = self.stand_in(answer({"ok": False, "error": "unknown command "
                                  "(status, workers)"}))
        rc, out, err = self.ctl("-s", s.path, "frobnicate")
        self.assertEqual(rc, 64)
        self.assertIn("frobnicate: unknown command", err)

    def test_default_socket_unavailable_is_a_warning(self):
        # outside the unit, the default's directory may not exist: the
        # daemon runs on without a control socket and says so
        m = re.search(r"else (\S+/tgrunner/control\.sock)\)",
                      self.ctl("--help")[1])
        default = m.group(1)
        if os.path.exists(os.path.dirname(default)):
            self.skipTest("%s exists: not touched by tests" % default)
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=1, control_socket=None)
        d.wait_log(r"no control socket: tgrunnerctl cannot reach", 10)
        ids = self.generate(fake, 5, 5)
        d.records().wait_ended(ids, 30, daemon=d)
        self.assertEqual(d.stop(), 0)
        # a path the file sets is another matter: it must work
        bad = os.path.join(self.tmp, "no-such-dir", "c.sock")
        d2 = self.start_daemon(fake, name="d2", workers=1, wait=False,
                               control_socket=bad)
        self.assertEqual(d2.wait_exit(20), 73)

    def test_bad_answers(self):
        for what, data in (("garbage", b"<html>\n"), ("array", b"[1]\n"),
                           ("nothing", b"")):
            with self.subTest(what):
                def b(server, conn, data=data):
                    server.read_line(conn)
                    conn.sendall(data)
                    conn.close()
                s = self.stand_in(b, what + ".sock")
                rc, out, err = self.ctl("-s", s.path, "status")
                self.assertEqual(rc, 1)
                self.assertIn("tgrunnerctl: ", err)


if __name__ == "__main__":
    tgtest.main()
