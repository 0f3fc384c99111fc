#!/usr/bin/env bash
# See BUILD. The Python program is embedded so the script needs no runfiles.
exec python3 - "$@" <<'PY'
import collections, glob, gzip, json, os, re, sys

args = collections.defaultdict(list)
for a in sys.argv[1:]:
    if a.startswith("--") and "=" in a:
        k, v = a[2:].split("=", 1)
        args[k].append(v)

# file -> {"lines": {line: count}, "fns": {name: [line, count]}}
cov = collections.OrderedDict()

def entry(path):
    return cov.setdefault(path, {"lines": collections.Counter(), "fns": {}})

def add_fn(e, name, line, count):
    f = e["fns"].setdefault(name, [line, 0])
    f[1] += count

def read_gcov_json(path):
    with gzip.open(path, "rt") as fh:
        data = json.load(fh)
    for f in data.get("files", []):
        e = entry(f["file"])
        for fn in f.get("functions", []):
            add_fn(e, fn.get("demangled_name") or fn["name"], fn["start_line"], fn["execution_count"])
        for ln in f.get("lines", []):
            e["lines"][ln["line_number"]] += ln["count"]

def read_lcov(path):
    e = None
    with open(path, errors="replace") as fh:
        for raw in fh:
            line = raw.strip()
            if line.startswith("SF:"):
                e = entry(line[3:])
            elif e is None:
                continue
            elif line.startswith("DA:"):
                n, c = line[3:].split(",")[:2]
                e["lines"][int(n)] += int(c)
            elif line.startswith("FN:"):
                n, name = line[3:].split(",", 1)
                e["fns"].setdefault(name, [int(n), 0])
            elif line.startswith("FNDA:"):
                c, name = line[5:].split(",", 1)
                add_fn(e, name, e["fns"].get(name, [0, 0])[0], int(c))
            elif line == "end_of_record":
                e = None

def keep(path):
    for pat in args["filter_sources"]:
        if re.fullmatch(pat, path):
            return False
    return True

if args["coverage_dir"]:
    d = args["coverage_dir"][0]
    for p in sorted(glob.glob(os.path.join(d, "**", "*.gcov.json.gz"), recursive=True)):
        read_gcov_json(p)
    for p in sorted(glob.glob(os.path.join(d, "**", "*.dat"), recursive=True)):
        read_lcov(p)
    manifest = set()
    for m in args["source_file_manifest"]:
        if os.path.exists(m):
            with open(m) as fh:
                manifest = {l.strip() for l in fh if l.strip().endswith((".cc", ".h", ".c", ".cpp", ".hpp"))}
    if manifest:
        for path in list(cov):
            if path not in manifest:
                del cov[path]
elif args["reports_file"]:
    with open(args["reports_file"][0]) as fh:
        for p in fh:
            p = p.strip()
            if p and os.path.exists(p):
                read_lcov(p)
else:
    sys.exit("lcov_tool: need --coverage_dir or --reports_file")

out_path = args["output_file"][0]
with open(out_path, "w") as out:
    for path, e in cov.items():
        if not keep(path):
            continue
        out.write("SF:%s\n" % path)
        for name, (line, _) in sorted(e["fns"].items(), key=lambda kv: kv[1][0]):
            out.write("FN:%d,%s\n" % (line, name))
        for name, (_, count) in sorted(e["fns"].items(), key=lambda kv: kv[1][0]):
            out.write("FNDA:%d,%s\n" % (count, name))
        out.write("FNF:%d\nFNH:%d\n" % (len(e["fns"]), sum(1 for v in e["fns"].values() if v[1] > 0)))
        for line in sorted(e["lines"]):
            out.write("DA:%d,%d\n" % (line, e["lines"][line]))
        out.write("LF:%d\nLH:%d\n" % (len(e["lines"]), sum(1 for c in e["lines"].values() if c > 0)))
        out.write("end_of_record\n")
PY
