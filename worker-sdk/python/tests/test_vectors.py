# SPDX-License-Identifier: ISC
"""The library's frame decoder against the protocol's test vectors
(proto/vectors in the tgrunner source tree, or $TGRUNNER_VECTORS): it must
refuse exactly what the daemon's decoder refuses in frames from the daemon,
so that the C, Python and Node.js libraries agree by construction.

    python3 -m unittest discover -s worker-sdk/python/tests
"""

import json
import os
import unittest

from tgrunner_worker._frames import ProtocolError, decode

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.environ.get("TGRUNNER_VECTORS") or \
    os.path.join(HERE, "..", "..", "..", "proto", "vectors")
WORKER_TYPES = ("hello", "done", "fail", "call")


def vectors(sub):
    d = os.path.join(VECTORS, sub)
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        assert data.endswith(b"\n"), name
        yield name, data[:-1]


def sized():
    with open(os.path.join(VECTORS, "sized"), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            verdict, direction, total, tmpl = line.rstrip("\n").split(" ", 3)
            head, tail = tmpl.encode().split(b"@")
            pad = int(total) - 1 - len(head) - len(tail)
            yield "sized:%d" % n, verdict, direction, head + b"x" * pad + tail


@unittest.skipUnless(os.path.isdir(VECTORS), "no proto/vectors here")
class Vectors(unittest.TestCase):

    def test_valid(self):
        n = 0
        for name, data in vectors("valid"):
            kind = json.loads(data)["type"]
            with self.subTest(vector=name):
                if kind in WORKER_TYPES:
                    # a worker's frame, coming from the daemon
                    with self.assertRaises(ProtocolError):
                        decode(data)
                else:
                    self.assertEqual(decode(data)["type"], kind)
                    n += 1
        self.assertGreaterEqual(n, 20)

    def test_invalid(self):
        n = 0
        for name, data in vectors("invalid"):
            if not name.startswith("d2w_"):
                continue	# the daemon's business
            with self.subTest(vector=name):
                with self.assertRaises(ProtocolError):
                    decode(data)
                n += 1
        self.assertGreaterEqual(n, 40)

    def test_ignored(self):
        """Frames of a type nobody knows decode (the worker ignores them)."""
        n = 0
        for name, data in vectors("ignored"):
            with self.subTest(vector=name):
                self.assertEqual(decode(data)["type"],
                                 json.loads(data)["type"])
                n += 1
        self.assertGreaterEqual(n, 2)

    def test_sized(self):
        n = 0
        for name, verdict, direction, data in sized():
            if direction != "d2w":
                continue
            with self.subTest(vector=name):
                if verdict == "valid":
                    decode(data)
                else:
                    with self.assertRaises(ProtocolError):
                        decode(data)
                n += 1
        self.assertGreaterEqual(n, 2)

    def test_values(self):
        """Decoded ids and refs keep every bit."""
        d = dict(vectors("valid"))
        self.assertEqual(decode(d["cancel_id_max.json"])["id"], 2**63 - 1)
        self.assertEqual(decode(d["result_ref_int_min.json"])["ref"],
                         -2**63)
        self.assertEqual(decode(d["update_numbers.json"])["deadline"],
                         2**63 - 1)


if __name__ == "__main__":
    unittest.main()
