# SPDX-License-Identifier: ISC
"""A strict parser of the Prometheus text exposition format (0.0.4), for
tests (Python 3 standard library only).

Stricter than Prometheus itself, on purpose: what a test scrapes should be
clean, not merely accepted.  parse() raises PromParseError (with the line
number) for any of:

  - a line that is neither blank, a comment, nor a sample;
  - a bad metric or label name, a reserved label name (__*), a label given
    twice, a bad escape or an unterminated label value;
  - a value that is not a Go float (+Inf, -Inf and NaN are allowed), or a
    timestamp that is not an integer;
  - # HELP or # TYPE given twice for a family, # TYPE after the family's
    first sample, an unknown type, a family without # TYPE (require_type)
    or without # HELP (require_help);
  - samples of one family not all together (interleaved families);
  - the same series (name and label set) twice;
  - counters: a negative value, or a name that does not end in _total
    (counter_total);
  - histograms: a sample that is not _bucket, _sum or _count; a _bucket
    without le, or with a bad or repeated le; buckets (per label set) not in
    ascending le order, not cumulative, or not ending with le="+Inf";
    _count missing or different from the +Inf bucket; _sum missing;
  - gauges and untyped: a suffixed name that does not match the family;
  - a non-empty text that does not end with a newline.

    fams = promparse.parse(text)
    fams["tgrunner_updates_done_total"].type          -> "counter"
    promparse.value(fams, "tgrunner_poll_errors_total", {"class": "5xx"})
    promparse.histogram(fams, "tgrunner_handler_duration_seconds")
        -> {"buckets": [(0.001, n), ..., (inf, n)], "sum": s, "count": n}
"""

import collections
import math
import re

NAME_RX = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RX = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# a Go float as Prometheus writes and reads it
FLOAT_RX = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?"
                      r"|Inf|inf|NaN|nan)\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

Sample = collections.namedtuple("Sample", "name labels value timestamp line")


class PromParseError(ValueError):
    def __init__(self, lineno, msg, line=None):
        text = "line %d: %s" % (lineno, msg)
        if line is not None:
            text += ": %r" % line[:200]
        super().__init__(text)
        self.lineno = lineno


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []
        self.type_line = 0

    def __repr__(self):
        return "Family(%s, %s, %d samples)" % (self.name, self.type,
                                              len(self.samples))


def parse_float(s, lineno=0, line=None):
    if not FLOAT_RX.match(s):
        raise PromParseError(lineno, "bad value %r" % s, line)
    return float(s)


def _unescape_help(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "\\n":
            out.append("\n" if s[i + 1] == "n" else "\\")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse_labels(s, i, lineno, line):
    """s[i] == '{'; returns (labels dict, index after '}')."""
    labels = collections.OrderedDict()
    i += 1
    while True:
        while i < len(s) and s[i] in " \t":
            i += 1
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").match(s, i)
        if not m:
            raise PromParseError(lineno, "bad label name", line)
        name = m.group(0)
        if name.startswith("__"):
            raise PromParseError(lineno, "reserved label name %r" % name,
                                 line)
        if name in labels:
            raise PromParseError(lineno, "label %r given twice" % name, line)
        i = m.end()
        if s[i:i + 2] != '="':
            raise PromParseError(lineno, "expected =\" after label %r"
                                 % name, line)
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise PromParseError(lineno, "unterminated label value",
                                     line)
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s) or s[i + 1] not in '\\"n':
                    raise PromParseError(lineno, "bad escape in label value",
                                         line)
                val.append({"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]])
                i += 2
                continue
            if c == "\n":
                raise PromParseError(lineno, "newline in label value", line)
            if c == '"':
                i += 1
                break
            val.append(c)
            i += 1
        labels[name] = "".join(val)
        while i < len(s) and s[i] in " \t":
            i += 1
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        raise PromParseError(lineno, "expected , or } in labels", line)


def parse_sample(line, lineno=0):
    m = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(line)
    if not m:
        raise PromParseError(lineno, "bad metric name", line)
    name = m.group(0)
    i = m.end()
    labels = collections.OrderedDict()
    if i < len(line) and line[i] == "{":
        labels, i = _parse_labels(line, i, lineno, line)
    rest = line[i:]
    if not rest.startswith(" "):
        raise PromParseError(lineno, "expected a blank before the value",
                             line)
    parts = rest.split()
    if len(parts) not in (1, 2):
        raise PromParseError(lineno, "expected value [timestamp]", line)
    value = parse_float(parts[0], lineno, line)
    ts = None
    if len(parts) == 2:
        if not re.match(r"-?\d+\Z", parts[1]):
            raise PromParseError(lineno, "bad timestamp", line)
        ts = int(parts[1])
    return Sample(name, labels, value, ts, lineno)


def _family_of(name, families):
    """The family a sample named name belongs to."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[:-len(suffix)]
            f = families.get(base)
            if f is not None and f.type in ("histogram", "summary"):
                return base
    return name


def parse(text, require_type=True, require_help=True, counter_total=True):
    """text -> OrderedDict family name -> Family.  Raises PromParseError."""
    if text and not text.endswith("\n"):
        raise PromParseError(text.count("\n") + 1, "no newline at the end")
    families = collections.OrderedDict()
    finished = set()		# families whose samples are over
    current = None
    series = set()
    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            _parse_comment(line, lineno, families, finished, current)
            continue
        s = parse_sample(line, lineno)
        fname = _family_of(s.name, families)
        if fname != current:
            if fname in finished:
                raise PromParseError(lineno, "samples of %s are not "
                                     "together" % fname, line)
            if current is not None:
                finished.add(current)
            current = fname
        f = families.get(fname)
        if f is None:
            if require_type:
                raise PromParseError(lineno, "sample of %s without # TYPE"
                                     % fname, line)
            f = families[fname] = Family(fname)
            f.type = "untyped"
        key = (s.name, tuple(sorted(s.labels.items())))
        if key in series:
            raise PromParseError(lineno, "series given twice", line)
        series.add(key)
        f.samples.append(s)
    for f in families.values():
        _check_family(f, require_type, require_help, counter_total)
    return families


def _parse_comment(line, lineno, families, finished, current):
    parts = line.split(None, 3)
    if len(parts) < 2 or parts[1] not in ("HELP", "TYPE"):
        return			# a plain comment
    if line[:7] not in ("# HELP ", "# TYPE "):
        raise PromParseError(lineno, "expected '# HELP ' or '# TYPE '", line)
    if len(parts) < 3 or not NAME_RX.match(parts[2]):
        raise PromParseError(lineno, "bad metric name in %s" % parts[1],
                             line)
    name = parts[2]
    if name in finished or (name == current and parts[1] == "TYPE"):
        raise PromParseError(lineno, "%s of %s after its samples"
                             % (parts[1], name), line)
    f = families.setdefault(name, Family(name))
    if parts[1] == "HELP":
        if f.help is not None:
            raise PromParseError(lineno, "HELP of %s given twice" % name,
                                 line)
        f.help = _unescape_help(parts[3] if len(parts) > 3 else "")
        return
    if f.type is not None:
        raise PromParseError(lineno, "TYPE of %s given twice" % name, line)
    if len(parts) != 4 or parts[3] not in TYPES:
        raise PromParseError(lineno, "bad type", line)
    f.type = parts[3]
    f.type_line = lineno


def _check_family(f, require_type, require_help, counter_total):
    ln = f.samples[0].line if f.samples else f.type_line
    if f.type is None:
        if require_type:
            raise PromParseError(ln, "%s has HELP but no TYPE" % f.name)
        f.type = "untyped"
    if require_help and f.help is None:
        raise PromParseError(ln, "%s has no # HELP" % f.name)
    if not f.samples:
        raise PromParseError(ln, "%s has no samples" % f.name)
    if f.type == "histogram":
        _check_histogram(f)
        return
    if f.type == "summary":
        return
    for s in f.samples:
        if s.name != f.name:
            raise PromParseError(s.line, "sample %s in family %s"
                                 % (s.name, f.name))
    if f.type == "counter":
        if counter_total and not f.name.endswith("_total"):
            raise PromParseError(ln, "counter %s does not end in _total"
                                 % f.name)
        for s in f.samples:
            if math.isnan(s.value) or s.value < 0:
                raise PromParseError(s.line, "counter %s is %r"
                                     % (f.name, s.value))


def _check_histogram(f):
    groups = collections.OrderedDict()	# label set without le -> parts
    for s in f.samples:
        suffix = s.name[len(f.name):]
        if suffix not in ("_bucket", "_sum", "_count"):
            raise PromParseError(s.line, "sample %s in histogram %s"
                                 % (s.name, f.name))
        labels = dict(s.labels)
        le = labels.pop("le", None)
        g = groups.setdefault(tuple(sorted(labels.items())),
                              {"buckets": [], "sum": None, "count": None,
                               "line": s.line})
        if suffix == "_bucket":
            if le is None:
                raise PromParseError(s.line, "bucket without le")
            g["buckets"].append((parse_float(le, s.line), s.value, s.line))
        elif le is not None:
            raise PromParseError(s.line, "le on %s" % s.name)
        else:
            g[suffix[1:]] = s.value
    for g in groups.values():
        b = g["buckets"]
        if not b:
            raise PromParseError(g["line"], "histogram %s without buckets"
                                 % f.name)
        for (le0, v0, _), (le1, v1, ln) in zip(b, b[1:]):
            if not le1 > le0:
                raise PromParseError(ln, "%s: le %g after le %g"
                                     % (f.name, le1, le0))
            if v1 < v0:
                raise PromParseError(ln, "%s: buckets not cumulative "
                                     "(%g after %g)" % (f.name, v1, v0))
        if b[-1][0] != math.inf:
            raise PromParseError(b[-1][2], "%s: last bucket is not +Inf"
                                 % f.name)
        if any(v < 0 or math.isnan(v) for _, v, _ in b):
            raise PromParseError(g["line"], "%s: negative bucket" % f.name)
        if g["count"] is None or g["sum"] is None:
            raise PromParseError(g["line"], "%s: _sum or _count missing"
                                 % f.name)
        if g["count"] != b[-1][1]:
            raise PromParseError(g["line"], "%s: _count %g != +Inf bucket %g"
                                 % (f.name, g["count"], b[-1][1]))


def value(families, name, labels=None):
    """The value of the series name{labels} (labels: dict, exact match)."""
    want = dict(labels or {})
    fname = _family_of(name, families)
    f = families.get(fname)
    if f is None:
        raise KeyError(name)
    for s in f.samples:
        if s.name == name and dict(s.labels) == want:
            return s.value
    raise KeyError("%s%r" % (name, want))


def histogram(families, name, labels=None):
    """{"buckets": [(le, cumulative count), ...], "sum", "count"}."""
    want = dict(labels or {})
    f = families[name]
    if f.type != "histogram":
        raise KeyError("%s is a %s" % (name, f.type))
    out = {"buckets": [], "sum": None, "count": None}
    for s in f.samples:
        lab = dict(s.labels)
        le = lab.pop("le", None)
        if lab != want:
            continue
        if s.name == name + "_bucket":
            out["buckets"].append((float(le), s.value))
        elif s.name == name + "_sum":
            out["sum"] = s.value
        elif s.name == name + "_count":
            out["count"] = s.value
    return out
