#!/usr/bin/env python3
"""Import cycles between sibling modules of src/ (files of one folder; the crate's top-level
modules): each file's `use` lines and `crate::`/`super::` paths (shipping code only,
`#[cfg(test)]` modules cut off) make a graph of modules, projected onto siblings, whose
strongly connected components are printed. A parent and its children using each other is
how Rust shares private items and is not reported. Usage: scripts/module_cycles.py src"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
def modpath(f):
    rel = os.path.relpath(f, root)[:-3].split('/')
    if rel[-1] in ('mod', 'lib', 'main'): rel = rel[:-1]
    return rel
def strip_tests(text):
    # cut `#[cfg(test)] mod x { ... }` blocks (brace matching, rough)
    out = []; i = 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{', text):
        if m.start() < i: continue
        out.append(text[i:m.start()]); d = 0; j = m.end() - 1
        while j < len(text):
            if text[j] == '{': d += 1
            elif text[j] == '}':
                d -= 1
                if d == 0: break
            j += 1
        i = j + 1
    out.append(text[i:])
    return ''.join(out)
def strip_comments(text):
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    return re.sub(r'//[^\n]*', '', text)
mods = {}
for r, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(r, f); mods[tuple(modpath(p))] = p
edges = {}
for m, p in mods.items():
    text = strip_comments(strip_tests(open(p).read()))
    # join `use a::{b, c::{d}}` into paths
    paths = set()
    for u in re.finditer(r'\buse\s+([^;]+);', text, flags=re.S):
        body = re.sub(r'\s+', '', u.group(1))
        def expand(prefix, s):
            mm = re.match(r'^(.*?)\{(.*)\}$', s)
            if not mm: paths.add(prefix + s); return
            pre, inner = mm.group(1), mm.group(2)
            d = 0; cur = ''
            for ch in inner:
                if ch == ',' and d == 0: expand(prefix + pre, cur); cur = ''; continue
                if ch == '{': d += 1
                if ch == '}': d -= 1
                cur += ch
            if cur: expand(prefix + pre, cur)
        expand('', body)
    for q in re.finditer(r'\b((?:crate|super|self)(?:::\w+)+)', text):
        paths.add(q.group(1))
    base = list(m)
    is_dir_mod = os.path.basename(p) in ('mod.rs', 'lib.rs', 'main.rs')
    for path in paths:
        parts = path.split('::')
        if parts[0] == 'crate': tgt = []; parts = parts[1:]
        elif parts[0] in ('super', 'self'):
            tgt = base[:] if is_dir_mod else base[:]
            while parts and parts[0] in ('super', 'self'):
                if parts[0] == 'super': tgt = tgt[:-1]
                parts = parts[1:]
        else: continue
        # longest module prefix
        full = tgt + [x for x in parts if re.match(r'^\w+$', x)]
        best = None
        for k in range(len(full), 0, -1):
            if tuple(full[:k]) in mods: best = tuple(full[:k]); break
        if best and best != m:
            edges.setdefault(m, set()).add(best)
# sibling cycles: for each pair of modules, project to their children of the common parent
def proj(a, b):
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
    if k == len(a) or k == len(b): return None  # ancestor relation
    return tuple(a[:k+1]), tuple(b[:k+1])
g = {}
for a, ts in edges.items():
    for b in ts:
        pr = proj(list(a), list(b))
        if pr: g.setdefault(pr[0], set()).add(pr[1])
# Tarjan SCC
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in g.get(v, ()):
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in list(g):
    if v not in idx: sc(v)
for comp in sccs:
    names = sorted('::'.join(x) for x in comp)
    print('cycle:', ' , '.join(names))
    for a in comp:
        for b in g.get(a, ()):
            if b in comp:
                why = [ '::'.join(x)+' -> '+'::'.join(y) for x, ys in edges.items() for y in ys if proj(list(x), list(y)) == (a, b)]
                print('   ', '::'.join(a), '->', '::'.join(b), ' via', '; '.join(sorted(why))[:300])
if not sccs: print('no cycles between sibling modules')
