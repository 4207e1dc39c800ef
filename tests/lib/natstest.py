"""NATS for the scenario tests: a nats-server on loopback (random port,
restartable on the same port) and tgrunner-relay processes run like the
daemon (tgtest.Daemon: generated config, log kept and waited on, killed
with everything it started at cleanup)."""

import json
import os
import shutil
import signal
import subprocess
import time

import tgtest


def nats_server_path():
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK)
        else None)


class NatsServer:
    """nats-server on 127.0.0.1 (or addr); port 0 picks a free one, which
    later restarts keep.  extra: lines of server configuration."""

    def __init__(self, tmpdir, addr="127.0.0.1", port=0, extra="",
                 netns=None):
        self.tmpdir = tmpdir
        self.addr = addr
        self.port = port
        self.extra = extra
        self.netns = netns
        self.proc = None
        self.log_path = os.path.join(tmpdir, "nats-server.log")
        self.conf_path = os.path.join(tmpdir, "nats-server.conf")
        self.start()

    @property
    def url(self):
        return "nats://%s:%d" % (self.addr, self.port)

    def _write_conf(self):
        with open(self.conf_path, "w") as f:
            f.write("host: %s\nport: %d\n" % (self.addr,
                                               self.port if self.port else -1))
            # a dead peer is noticed in seconds, not minutes
            f.write("ping_interval: \"1s\"\nping_max: 2\n")
            f.write("ports_file_dir: \"%s\"\n" % self.tmpdir)
            f.write(self.extra + "\n")

    def start(self, timeout=15.0):
        assert self.proc is None or self.proc.poll() is not None
        self._write_conf()
        for name in os.listdir(self.tmpdir):
            if name.endswith(".ports"):
                os.unlink(os.path.join(self.tmpdir, name))
        argv = [nats_server_path(), "-c", self.conf_path]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nats-server exited with %s:\n%s" % (
                    self.proc.returncode, open(self.log_path).read()[-2000:]))
            for name in os.listdir(self.tmpdir):
                if name.endswith(".ports"):
                    try:
                        with open(os.path.join(self.tmpdir, name)) as f:
                            ports = json.load(f)
                    except ValueError:
                        continue
                    url = ports["nats"][0]
                    self.port = int(url.rsplit(":", 1)[1])
                    return self
            time.sleep(0.02)
        raise RuntimeError("nats-server did not start within %.0fs" % timeout)

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)

    def restart(self):
        self.kill()
        return self.start()

    def close(self):
        self.kill()


def relay_path():
    return tgtest.build_path("tgrunner-relay")


class Relay(tgtest.Daemon):
    """One tgrunner-relay under test: same life cycle and log handling as
    a tgrunnerd (start, wait_log, stop, crash, worker_pids, records)."""

    def __init__(self, fake, tmpdir, nats_url, name, workers=2,
                 worker_env=None, start=True, **conf):
        conf.setdefault("nats_url", nats_url)
        conf.setdefault("relay_name", name)
        self.name = name
        super().__init__(fake, tmpdir, workers=workers,
                         worker_env=worker_env, start=False, **conf)
        self.program = relay_path()
        if start:
            self.start()

    def wait_ready(self, timeout=20.0):
        return self.wait_log(r"joined the daemon", timeout)

    def stop_signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)


def relay_records_pids(relay, rec):
    """pids of rec's lines that relay's workers wrote (by process tree)."""
    return set(relay.worker_pids())
