#!/usr/bin/env python3
"""The README's service steps, staged: `make install DESTDIR=stage`, then
the staged tgrunnerd runs with the staged /etc/tgrunner.conf (a copy with
the paths pointed into the stage and at the fake Bot API, nothing else
changed) and the installed example worker answers; the staged tgrunnerctl
talks to it without a socket argument.  Also: the installed configuration
is valid as installed and runs the installed worker, the daemon's and
tgrunnerctl's default sockets are the same path, a second install keeps
an edited configuration, uninstall removes an unchanged one only, and
the installed man pages name installed files and pages only (or
systemd's).  tgrunner-relay installs with its own configuration (valid
as installed, kept and uninstalled like tgrunner.conf), unit, man page
and example, and its example names no option the relay does not read.
The worker libraries install as their READMEs say: the Python one
offline with Debian's setuptools (pip --no-build-isolation), the Node.js
one's npm pack has the LICENSE and README."""

import filecmp
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, BUILDDIR, wait_until	# noqa: E402

# pages of other packages the installed ones may refer to (systemd's: the
# daemon's unit runs under it)
SYSTEM_PAGES = ("sd-daemon(3)", "systemd.service(5)")


def make(*args):
    p = subprocess.run([os.environ.get("MAKE", "make"), "-s", "-C", BUILDDIR]
                       + list(args), capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError("make %s: %s%s" % (" ".join(args), p.stdout,
                                                p.stderr))
    return p.stdout


class Staged:
    """What `make install DESTDIR=root` put where."""

    def __init__(self, root):
        self.root = root
        self.sbin = self.find("tgrunnerd")
        self.ctl = self.find("tgrunnerctl")
        self.libdir = os.path.dirname(self.find("libtgrunner-worker.so.0"))
        # the configured paths, as the staged programs know them
        out = subprocess.run([self.sbin, "--help"], capture_output=True,
                             text=True).stdout
        self.conf_path = re.search(r"\(default (/\S+)\)", out).group(1)
        self.conf = self.staged(self.conf_path)

    def find(self, name):
        hits = [p for p in glob.glob(os.path.join(self.root, "**", name),
                                     recursive=True)
                if os.path.isfile(p)]
        assert len(hits) == 1, (name, hits)
        return hits[0]

    def staged(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def env(self, **kw):
        env = dict(os.environ, LD_LIBRARY_PATH=self.libdir)
        env.pop("TGRUNNER_CONTROL_SOCKET", None)
        env.update(kw)
        return env


def effective(staged, conf):
    """tgrunnerd -n -v: the effective configuration as a dict."""
    p = subprocess.run([staged.sbin, "-n", "-v", "-c", conf],
                       capture_output=True, text=True, env=staged.env())
    assert p.returncode == 0, p.stderr
    return {m.group(1): m.group(2) or "" for m in
            re.finditer(r"(?m)^(\w+) =(?: (.*))?$", p.stdout)}


def set_options(text, values):
    """The file with these options set: an option's commented default line
    (or its line) becomes "name = value"; nothing else changes."""
    for k, v in values.items():
        text, n = re.subn(r"(?m)^#?%s =.*$" % k,
                          lambda m: "%s = %s" % (k, v), text, count=1)
        assert n == 1, k
    return text


class Install(ScenarioCase):

    def install(self, name="stage"):
        root = os.path.join(self.tmp, name)
        make("install", "DESTDIR=" + root)
        return Staged(root)

    def test_readme_service_steps(self):
        st = self.install()
        # installed as a working file: valid as it is, every option there
        self.assertEqual(os.stat(st.conf).st_mode & 0o777, 0o644)
        text = open(st.conf).read()
        conf = effective(st, st.conf)
        self.assertGreaterEqual(len(conf), 38)
        for k in conf:
            self.assertRegex(text, r"(?m)^#?%s =" % k)
        # its worker is the installed echo worker, at a configured path
        worker = conf["worker_command"]
        self.assertTrue(worker.endswith("/tgrunner/echo-worker"), worker)
        self.assertTrue(os.access(st.staged(worker), os.X_OK), worker)
        # one default socket for daemon and tgrunnerctl
        sock = conf["control_socket"]
        self.assertTrue(sock.endswith("/tgrunner/control.sock"), sock)
        p = subprocess.run([st.ctl, "status"], capture_output=True,
                           text=True, env=st.env())
        self.assertEqual(p.returncode, 1)
        self.assertIn("tgrunnerctl: %s: " % sock, p.stderr)

        # the README's steps, with the paths pointed into the stage: the
        # token, the state and run directories, the worker (and the fake)
        fake = self.start_fake()
        run = self.subdir("run")
        token = os.path.join(self.tmp, "token")
        with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(fake.token + "\n")
        local = os.path.join(self.tmp, "tgrunner.conf")
        with open(local, "w") as f:
            f.write(set_options(text, {
                "api_url": fake.url,
                "token_file": token,
                "state_dir": self.subdir("state"),
                "control_socket": os.path.join(run, "control.sock"),
                "worker_command": "env ECHO_STATE_DIR=%s %s" % (
                    shlex.quote(self.subdir("echo")),
                    shlex.quote(st.staged(worker))),
                "poll_timeout": "1s",
            }))
        log = open(os.path.join(self.tmp, "daemon.log"), "w")
        self.addCleanup(log.close)
        d = subprocess.Popen([st.sbin, "-c", local], stdout=log,
                             stderr=subprocess.STDOUT, env=st.env(),
                             start_new_session=True)
        self.addCleanup(lambda: d.poll() is None and d.kill())
        # tgrunnerctl without a socket argument; its documented override
        # stands for the built-in default (checked equal above)
        env = st.env(TGRUNNER_CONTROL_SOCKET=os.path.join(run, "control.sock"))

        def status():
            p = subprocess.run([st.ctl, "status"], capture_output=True,
                               text=True, env=env)
            ready = re.findall(r"(?m)^\d+ +\d+ +ready ", p.stdout)
            return p.stdout if p.returncode == 0 and ", running," in \
                p.stdout and len(ready) == 2 else None
        try:
            out = wait_until(status, 30, what="tgrunnerctl status: running, "
                         "2 workers ready")
        except AssertionError:
            log.flush()
            raise AssertionError(open(log.name).read())
        self.assertRegex(out, r"^tgrunnerd \S+, running, bot @fake_bot")
        # (workers = 2: the default)

        fake.inject([{"message": {"message_id": 1, "date": 1, "text": "hi",
                                  "chat": {"id": 5, "type": "private"},
                                  "from": {"id": 5, "is_bot": False,
                                           "first_name": "A"}}}])
        sent = wait_until(lambda: fake.calls("sendMessage"), 30,
                          what="the echo worker's reply")
        self.assertEqual(sent[0]["params"]["text"], "echo #1: hi")
        self.assertEqual(sent[0]["params"]["chat_id"], 5)
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait(30), 0)

    def test_config_kept_and_uninstalled_only_unchanged(self):
        st = self.install()
        relay_conf = os.path.join(os.path.dirname(st.conf),
                                  "tgrunner-relay.conf")
        for conf in (st.conf, relay_conf):
            original = open(conf).read()
            with open(conf, "a") as f:
                f.write("workers = 7\n")
            edited = open(conf).read()
            make("install", "DESTDIR=" + st.root)
            self.assertEqual(open(conf).read(), edited)
            make("uninstall", "DESTDIR=" + st.root)
            self.assertEqual(open(conf).read(), edited)
            self.assertFalse(os.path.exists(st.sbin))
            os.unlink(conf)
            make("install", "DESTDIR=" + st.root)
            self.assertEqual(open(conf).read(), original)
        make("uninstall", "DESTDIR=" + st.root)
        left = [os.path.join(d, f) for d, _, fs in os.walk(st.root)
                for f in fs]
        self.assertEqual(left, [])

    def test_man_pages_name_installed_files(self):
        st = self.install()
        staged = set()
        for d, _, fs in os.walk(st.root):
            for f in fs:
                staged.add(os.path.join(d, f)[len(st.root):])
        pages = glob.glob(os.path.join(st.root, "**", "man", "man*", "*.*"),
                          recursive=True)
        self.assertEqual(len(pages), 6)
        installed = {os.path.basename(p) for p in pages}
        for page in pages:
            text = open(page).read()
            # every path in a .Pa (or .B/.I) of the tree's layout
            for m in re.finditer(r"(?m)^\.(?:Pa|B|I) (\S+)", text):
                path = m.group(1)
                if not re.match(r"(proto|tests|examples|worker-sdk|man|"
                                r"daemon)/", path):
                    continue
                self.fail("%s names %s, a file of the source tree"
                          % (os.path.basename(page), path))
            # every page it refers to is installed, or one of systemd's
            for name, sect in re.findall(r"(?m)^\.Xr (\S+) (\d)", text):
                if "%s(%s)" % (name, sect) in SYSTEM_PAGES:
                    continue
                self.assertIn("%s.%s" % (name, sect), installed,
                              "%s refers to %s(%s), which is not installed"
                              % (os.path.basename(page), name, sect))
            # files the install puts under the prefix (not those of the
            # administrator, under etc/, or of the daemon, var/ and run/)
            for path in re.findall(r"(/usr/\S*/tgrunner/[\w./-]+\w)", text):
                if not re.search(r"/(etc|var|run)/", path):
                    self.assertIn(path, staged, os.path.basename(page))

    def test_relay_installed(self):
        st = self.install()
        relay = st.find("tgrunner-relay")
        self.assertEqual(os.path.dirname(relay), os.path.dirname(st.sbin))
        out = subprocess.run([relay, "--help"], capture_output=True,
                             text=True).stdout
        conf_path = re.search(r"\(default (/\S+)\)", out).group(1)
        self.assertEqual(os.path.dirname(conf_path),
                         os.path.dirname(st.conf_path))
        conf = st.staged(conf_path)
        self.assertEqual(os.stat(conf).st_mode & 0o777, 0o644)
        # valid as installed, and nothing in it the relay does not read
        p = subprocess.run([relay, "-n", "-c", conf], capture_output=True,
                           text=True, env=st.env())
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertEqual(p.stdout, "%s: configuration OK\n" % conf)
        # the example is the same file, the unit runs the installed relay
        # with the installed configuration
        examples = glob.glob(os.path.join(st.root, "**", "examples",
                                          "tgrunner-relay.conf"),
                             recursive=True)
        self.assertEqual(len(examples), 1, examples)
        example = examples[0]
        self.assertTrue(filecmp.cmp(example, conf, shallow=False))
        unit = open(st.find("tgrunner-relay.service")).read()
        bin_path = relay[len(st.root):]
        self.assertIn("ExecStartPre=%s -n -c %s\n" % (bin_path, conf_path),
                      unit)
        self.assertIn("ExecStart=%s -c %s\n" % (bin_path, conf_path), unit)
        self.assertNotRegex(unit, r"@\w+@")
        st.find("tgrunner-relay.8")
        self.assertIn("## Failure model", open(st.find("NATS.md")).read())

    def test_python_library_installs_offline(self):
        # the README's way on Debian 12: a venv that sees Debian's
        # setuptools and wheel, no build isolation, no package index
        py = "/usr/bin/python3"
        if subprocess.run([py, "-c", "import setuptools, wheel, venv, "
                           "ensurepip"], capture_output=True).returncode:
            self.skipTest("needs python3-setuptools python3-wheel "
                          "python3-venv (tests/install-deps.sh)")
        # a copy: pip builds in the directory, the source tree may be
        # read-only (make distcheck)
        src = os.path.join(self.tmp, "python")
        shutil.copytree(os.path.join(tgtest.SRCDIR, "worker-sdk", "python"),
                        src, ignore=shutil.ignore_patterns("__pycache__"))
        venv = os.path.join(self.tmp, "venv")
        subprocess.run([py, "-m", "venv", "--system-site-packages", venv],
                       check=True, timeout=120)
        env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        p = subprocess.run([os.path.join(venv, "bin", "pip"), "install",
                            "--no-build-isolation", "--no-index", src],
                           capture_output=True, text=True, timeout=300,
                           env=env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        p = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                            "import tgrunner_worker as t, "
                            "tgrunner_worker.adapters.ptb; print(t.__file__)"],
                           capture_output=True, text=True, env=env,
                           cwd=self.tmp)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith(venv), p.stdout)
        p = subprocess.run([os.path.join(venv, "bin", "pip"), "show",
                            "tgrunner-worker"], capture_output=True,
                           text=True, env=env)
        self.assertIn("License: ISC", p.stdout)

    def test_node_library_pack(self):
        npm = shutil.which("npm")
        if npm is None:
            self.skipTest("npm is not installed")
        sdk = os.path.join(tgtest.SRCDIR, "worker-sdk", "node")
        p = subprocess.run([npm, "pack", "--dry-run", "--json"], cwd=sdk,
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, npm_config_offline="true",
                                    npm_config_cache=self.subdir("npm")))
        self.assertEqual(p.returncode, 0, p.stderr)
        files = {f["path"] for f in json.loads(p.stdout)[0]["files"]}
        for f in ("LICENSE", "README.md", "index.js", "index.d.ts",
                  "package.json", "download.js", "adapters/index.js",
                  "adapters/common.js", "adapters/grammy.js",
                  "adapters/telegraf.js"):
            self.assertIn(f, files)
        self.assertFalse(any(f.startswith("test/") for f in files), files)
        self.assertEqual(json.load(open(os.path.join(sdk, "package.json")))
                         ["license"], "ISC")

    def test_one_licence(self):
        top = os.path.join(tgtest.SRCDIR, "LICENSE")
        self.assertIn("ISC License", open(top).read())
        for copy in ("worker-sdk/python/LICENSE", "worker-sdk/node/LICENSE"):
            self.assertTrue(filecmp.cmp(top, os.path.join(tgtest.SRCDIR,
                                                          copy),
                                        shallow=False), copy)


if __name__ == "__main__":
    tgtest.main()
