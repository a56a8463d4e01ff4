#!/usr/bin/env python3
"""Prints the module files (relative to MODDIR) a VM needs for the given roots: every module
under the root directories and the root files, everything modules.dep says they need, and
their soft dependencies (modules.softdep, resolved through modules.alias), transitively.
Busybox modprobe ignores softdeps, so the kernel must find those modules already present to
load them on demand (e.g. libcrc32c needs a crc32c provider: crc32c_generic / -intel).

usage: modules.py MODDIR ROOT..."""
import os, sys

moddir, roots = sys.argv[1], sys.argv[2:]
norm = lambda name: name.replace("-", "_")
stem = lambda path: norm(os.path.basename(path).split(".ko")[0])

deps = {}
for line in open(os.path.join(moddir, "modules.dep")):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
by_name = {stem(m): m for m in deps}
aliases = {}
for line in open(os.path.join(moddir, "modules.alias")):
    parts = line.split()
    if len(parts) == 3 and parts[0] == "alias":
        aliases.setdefault(norm(parts[1]), []).append(norm(parts[2]))
soft = {}
path = os.path.join(moddir, "modules.softdep")
for line in open(path) if os.path.exists(path) else []:
    parts = line.split()
    if len(parts) > 2 and parts[0] == "softdep":
        soft[norm(parts[1])] = [norm(p) for p in parts[2:] if p not in ("pre:", "post:")]

todo = [m for m in deps if any(m == r or m.startswith(r.rstrip("/") + "/") or m.split(".ko")[0] == r.split(".ko")[0] for r in roots)]
seen = set()
while todo:
    m = todo.pop()
    if m in seen:
        continue
    seen.add(m)
    todo.extend(deps.get(m, []))
    for name in soft.get(stem(m), []):
        for target in [name] + aliases.get(name, []):
            if target in by_name:
                todo.append(by_name[target])
print("\n".join(sorted(seen)))
