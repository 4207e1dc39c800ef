#!/usr/bin/env python3
"""External workers: processes started by something else join the pool
through the `listen` socket, with the same protocol; peers are checked with
SO_PEERCRED; a worker that disconnects gives its updates back."""

import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat, wait_until	# noqa: E402


class Listen(ScenarioCase):

    def start_external(self, sock, record, **env):
        e = {k: v for k, v in os.environ.items()
             if k not in ("TGRUNNER_FD", "TGRUNNER_WORKER_ID") and
             k not in tgtest.WORKER_VARS}
        e.update({"TGRUNNER_SOCKET": sock, "TG_RECORD": record})
        e.update({k: str(v) for k, v in env.items()})
        p = subprocess.Popen([tgtest.worker_path()], env=e,
                             stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.kill(), p.wait()))
        return p

    def daemon_with_listen(self, fake):
        sock = os.path.join(self.tmp, "workers.sock")
        d = self.start_daemon(fake, workers=0, listen=sock,
                              update_timeout="5s", hello_timeout="5s")
        return d, sock

    def test_external_workers_share_the_pool(self):
        fake = self.start_fake()
        d, sock = self.daemon_with_listen(fake)
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        self.assertEqual(mode, 0o660, "listen socket mode %o" % mode)
        self.start_external(sock, d.record_path, TG_SLEEP_MS="0-2")
        self.start_external(sock, d.record_path, TG_SLEEP_MS="0-2",
                            TG_SLOTS=4)
        d.wait_log(r"external worker connected", timeout=10)
        ids = self.generate(fake, 1000, 50)
        rec = d.records()
        rec.wait_ended(ids, 60, daemon=d)
        self.assertReport(rec.check(ids, key_of=key_chat), d)
        pids = {r.pid for r in rec.refresh().recs if r.kind == "E"}
        self.assertEqual(len(pids), 2, "both external workers served")
        self.assertEqual(d.stop(), 0)

    def test_disconnected_worker_gives_updates_back(self):
        fake = self.start_fake()
        d, sock = self.daemon_with_listen(fake)
        slow = self.start_external(sock, d.record_path, TG_SLEEP_MS="50")
        d.wait_log(r"external worker connected", timeout=10)
        wait_until(lambda: "hello" in d.log_text(), 10, what="hello")
        ids = self.generate(fake, 200, 20)
        rec = d.records()
        wait_until(lambda: rec.refresh().count("S") >= 5, 20,
                   what="first updates started")
        t_kill = time.time_ns()		# the death time: just before it
        slow.kill()
        slow.wait()
        d.wait_log(r"external worker disconnected", timeout=10)
        self.start_external(sock, d.record_path, TG_SLEEP_MS="0-1")
        rec.wait_ended(ids, 60, daemon=d)
        rep = rec.check(ids, key_of=key_chat,
                        deaths={slow.pid: t_kill})
        self.assertReport(rep, d)
        self.assertEqual(d.stop(), 0)

    def test_foreign_peer_is_refused(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to connect as another user")
        fake = self.start_fake()
        d, sock = self.daemon_with_listen(fake)
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.tmp, 0o755)
        os.chmod(os.path.dirname(sock), 0o755)
        # the 0660 mode already keeps `nobody` out: make the file world
        # writable to prove that SO_PEERCRED is checked too
        os.chmod(sock, 0o666)

        def as_nobody():
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)

        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); "
                "s.connect(sys.argv[1]); "
                "s.sendall(b'{\"type\":\"hello\",\"protocol\":1,\"slots\":1}\\n'); "
                "print(repr(s.recv(100)))")
        py = "/usr/bin/python3"	# the pyenv one may sit under /root
        if not os.access(py, os.X_OK):
            self.skipTest("no /usr/bin/python3 to run as nobody")
        out = subprocess.run([py, "-c", code, sock],
                             preexec_fn=as_nobody, capture_output=True,
                             text=True, timeout=10)
        self.assertNotIn("welcome", out.stdout)
        d.wait_log(r"listen: refused a worker", timeout=10)
        self.assertEqual(d.stop(), 0)

    def _hello_as(self, sock, uid, gid, groups):
        """Connect as uid/gid with supplementary groups, say hello; the
        first bytes the daemon answers (b"" when it hangs up)."""
        def become():
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)

        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); "
                "s.connect(sys.argv[1]); "
                "s.sendall(b'{\"type\":\"hello\",\"protocol\":1,\"slots\":1}\\n'); "
                "s.settimeout(10); print(repr(s.recv(100)))")
        out = subprocess.run(["/usr/bin/python3", "-c", code, sock],
                             preexec_fn=become, capture_output=True,
                             text=True, timeout=20)
        return out.stdout

    def test_allow_by_supplementary_group(self):
        """listen_allow = gid:N lets in a peer that has N among its
        supplementary groups (not as its primary group), as the kernel
        recorded them at connect time; a peer without N stays out."""
        if os.geteuid() != 0:
            self.skipTest("needs root to connect as another user")
        if not os.access("/usr/bin/python3", os.X_OK):
            self.skipTest("no /usr/bin/python3 to run as nobody")
        fake = self.start_fake()
        sock = os.path.join(self.tmp, "workers.sock")
        d = self.start_daemon(fake, workers=0, listen=sock,
                              listen_allow="gid:4242",
                              update_timeout="5s", hello_timeout="5s")
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.tmp, 0o755)
        os.chmod(sock, 0o666)	# the file mode is not what is tested
        got = self._hello_as(sock, nobody.pw_uid, nobody.pw_gid,
                             [4242, 4343])
        self.assertIn("welcome", got)
        d.wait_log(r"uid=%d: external worker connected" % nobody.pw_uid,
                   timeout=10)
        got = self._hello_as(sock, nobody.pw_uid, nobody.pw_gid, [4343])
        self.assertNotIn("welcome", got)
        d.wait_log(r"listen: refused a worker uid=%d" % nobody.pw_uid,
                   timeout=10)
        self.assertEqual(d.stop(), 0)

if __name__ == "__main__":
    tgtest.main()
