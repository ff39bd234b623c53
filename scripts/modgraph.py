#!/usr/bin/env python3
"""The gateway's module graph: edges from `use crate::...`, `crate::...` and `super::...` paths
(test modules and comments excluded), its cycles, and the imports that run back up the layers
of the request path (a module importing a layer that dispatches to it).

    python3 scripts/modgraph.py [gateway/src] [--edges]

Exits 1 when there is a cycle or a back-up import, so CI can run it as a check."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "gateway/src"
mods = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"): continue
        p = os.path.join(d, f); rel = os.path.relpath(p, root)[:-3]
        if rel.endswith("/mod"): rel = rel[:-4]
        if rel in ("lib", "main"): continue
        base = os.path.basename(rel)
        if base in ("tests", "proptests") or base.endswith("_tests"): continue
        mods[rel.replace("/", "::")] = p
def strip_tests(src):
    # drop `#[cfg(test)] mod x { ... }` blocks
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", src):
        if m.start() < i: continue
        out.append(src[i:m.start()]); depth = 1; j = m.end()
        while depth and j < len(src):
            depth += {"{": 1, "}": -1}.get(src[j], 0); j += 1
        i = j
    out.append(src[i:]); return "".join(out)
def expand(s):
    # expand one level of braces in a use path: crate::a::{b, c::d}
    m = re.match(r"(.*?)\{(.*)\}$", s, re.S)
    if not m: return [s]
    pre, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0: parts.append(cur); cur = ""; continue
        depth += ch == "{"; depth -= ch == "}"; cur += ch
    parts.append(cur)
    r = []
    for p in parts:
        p = p.strip()
        if p: r += expand(pre + p)
    return r
def resolve(path):
    segs = [s for s in path.split("::") if s and s != "self"]
    best = None
    for k in range(len(segs), 0, -1):
        c = "::".join(segs[:k])
        if c in mods: best = c; break
    return best
edges = {m: set() for m in mods}
for m, p in mods.items():
    src = strip_tests(open(p).read())
    src = re.sub(r"//[^\n]*", "", src)
    paths = []
    for u in re.finditer(r"\buse\s+(crate::[^;]+);", src): paths += expand(re.sub(r"\s+", "", u.group(1)))
    for u in re.finditer(r"\bcrate::([A-Za-z_][\w:]*)", src): paths.append("crate::" + u.group(1))
    for u in re.finditer(r"\bsuper::([A-Za-z_][\w:]*)", src):
        parent = m.rsplit("::", 1)[0] if "::" in m else ""
        if p.endswith("mod.rs"): parent = m.rsplit("::", 1)[0] if "::" in m else ""
        paths.append("crate::" + (parent + "::" if parent else "") + u.group(1))
    for pth in paths:
        pth = re.sub(r"\s+as\s+\w+$", "", pth)
        t = resolve(pth[len("crate::"):])
        if t and t != m and not m.startswith(t + "::") : edges[m].add(t)
# Tarjan
idx, low, st, on, sccs, n = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
for v in edges:
    if v not in idx: sc(v)
pairs = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, ())})
print(f"modules: {len(mods)}  edges: {sum(len(e) for e in edges.values())}")
print(f"cyclic components: {len(sccs)}")
for c in sccs: print("  SCC:", " ".join(c))
print(f"two-module cycles: {len(pairs)}")
for a, b in pairs: print(f"  {a} <-> {b}")
if "--edges" in sys.argv:
    for a in sorted(edges): print(a, "->", " ".join(sorted(edges[a])))
# Layers of the request path, top first; a module not named is a domain module below them all.
TIERS = [["boot"], ["listener", "admin", "config_watch", "kubernetes"], ["pipeline"], ["gateway"],
         ["proxy::serve", "rooms::entry", "rooms::ws", "rooms::sse", "rooms::longpoll", "rooms::publish_api", "documents::api"]]
def tier(m):
    for i, t in enumerate(TIERS):
        if any(m == x or m.startswith(x + "::") for x in t): return i
    return len(TIERS)
back = sorted((a, b) for a in edges for b in edges[a] if tier(b) < tier(a))
print(f"back-up imports: {len(back)}")
for a, b in back: print(f"  {a} -> {b}")
sys.exit(1 if sccs or back else 0)
