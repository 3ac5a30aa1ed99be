#!/usr/bin/env python3
"""The module import graph of every crate under crates/: files that import
each other in a cycle (through `crate::`/`super::` paths, test modules and
comments left out), crates that depend on a higher layer, the longest
non-test files and functions. Exits 1 on a cycle or an upward dependency.

    python3 scripts/import-graph.py [--top N] [ROOT]
"""
import os
import re
import sys

# Lower number = lower layer; a crate may only depend on lower layers (or
# its own layer's `domain`-like leaves are listed lower).
LAYERS = {
    "domain": 0,
    "storage": 1,
    "resilience": 2,
    "accounts": 3, "catalog": 3, "coupons": 3, "events": 3, "orders": 3, "queue": 3,
    "server": 4,
    "testkit": 5,
    "loadtest": 5,
}


def strip(text):
    """Source without comments, string literals and `#[cfg(test)]` modules."""
    # One left-to-right pass, so `//` inside a string is not a comment and
    # a quote inside a comment or a char literal ('"') opens no string.
    # Newlines are kept, so line counts stay true.
    token = re.compile(
        r"//[^\n]*|/\*(?:.|\n)*?\*/|\br(#*)\"(?:.|\n)*?\"\1|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\\n])'",
        re.S,
    )

    def blank(m):
        t = m.group(0)
        keep = "\n" * t.count("\n")
        return keep if t.startswith("/") else '""' + keep

    text = token.sub(blank, text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return tuple(rel)


def crate_graph(src):
    files = {}
    for d, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files[module_of(src, p)] = p
    edges = {m: set() for m in files}
    # Names a module re-exports (`pub use child::{A, B}`, `pub use child::*`):
    # importing them through it is importing the child.
    reexports = {}
    # Modules whose file lies elsewhere (`#[path = "…"] mod proxy;`): leaves.
    external = set()
    for mod, path in files.items():
        text = strip(open(path, encoding="utf-8").read())
        for name in re.findall(r"#\[path\s*=[^\]]*\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text):
            external.add(mod + (name,))
        for m in re.finditer(r"\bpub use (\w+)::(?:\{([^}]*)\}|(\w+|\*))", text):
            child = mod + (m.group(1),)
            if child not in files:
                continue
            names = m.group(2).split(",") if m.group(2) else [m.group(3)]
            for n in names:
                n = n.strip().split(" as ")[-1].strip()
                if n:
                    reexports[(mod, n)] = child
    for mod, path in files.items():
        text = strip(open(path, encoding="utf-8").read())
        is_mod_file = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        here = mod if is_mod_file else mod[:-1]
        paths = [("crate", p) for p in re.findall(r"\bcrate((?:::\w+)+)", text)]
        paths += [("super", m.group(0)) for m in re.finditer(r"\b(?:super::)+\w+(?:::\w+)*", text)]
        # `use crate::{a, b::c}` groups
        for g in re.findall(r"\bcrate::\{([^}]*)\}", text):
            paths += [("crate", "::" + x.strip()) for x in g.split(",") if x.strip()]
        # A type this file only adds methods to (`impl Catalog` split over
        # files by concern) is the same module's type, not an import.
        extends = set(re.findall(r"\bimpl(?:<[^>]*>)?\s+(\w+)\s*\{", text))
        for kind, p in paths:
            if p.split("::")[-1].strip() in extends:
                continue
            if kind == "crate":
                parts = [x for x in p.split("::") if x]
                base = ()
            else:
                ups = p.count("super::")
                parts = [x for x in p.split("::") if x and x != "super"]
                base = here[: len(here) - ups + 1] if ups else here
                base = here[: max(len(here) - (ups - 1), 0)] if ups else here
            target = base
            # An item of the module the path starts from is an import of it.
            best = base if base in files else None
            for part in parts:
                if best == target and (target, part) in reexports:
                    best = reexports[(target, part)]
                    break
                target = target + (part,)
                if target in external:
                    best = None
                    break
                if target in files:
                    best = target
            if best is not None and best != mod:
                edges[mod].add(best)
        # A module's own children, named by bare paths (`faults::inject`).
        children = {m[-1]: m for m in files if len(m) == len(mod) + 1 and m[: len(mod)] == mod}
        for name in set(re.findall(r"(?<![:\w])(\w+)::", text)):
            if name in children:
                edges[mod].add(children[name])
    return files, edges


def cycles(edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def long_functions(path):
    text = strip(open(path, encoding="utf-8").read())
    lines = text.split("\n")
    found = []
    for i, line in enumerate(lines):
        if re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?fn\s+\w+", line):
            depth, started = 0, False
            for j in range(i, len(lines)):
                depth += lines[j].count("{") - lines[j].count("}")
                if "{" in lines[j]:
                    started = True
                if started and depth <= 0:
                    found.append((j - i + 1, re.search(r"fn\s+(\w+)", line).group(1)))
                    break
                if not started and lines[j].rstrip().endswith(";"):
                    break
    return found


def main():
    args = sys.argv[1:]
    top = 10
    if "--top" in args:
        k = args.index("--top")
        top = int(args[k + 1])
        del args[k : k + 2]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..")
    crates_dir = os.path.join(root, "crates")
    bad = False
    sizes, funcs = [], []
    for crate in sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, crate, "src")
        if not os.path.isdir(src):
            continue
        files, edges = crate_graph(src)
        for comp in cycles(edges):
            bad = True
            print(f"cycle in {crate}: " + " <-> ".join("/".join(m) or "lib" for m in comp))
        for mod, path in files.items():
            text = strip(open(path, encoding="utf-8").read())
            code = [l for l in text.split("\n") if l.strip()]
            sizes.append((len(code), os.path.relpath(path, root)))
            for n, name in long_functions(path):
                funcs.append((n, f"{os.path.relpath(path, root)}::{name}"))
        toml = open(os.path.join(crates_dir, crate, "Cargo.toml"), encoding="utf-8").read()
        deps = toml.split("[dev-dependencies]")[0]
        for dep in re.findall(r"^commerce-(\w+)\.workspace", deps, re.M):
            if LAYERS.get(dep, 0) >= LAYERS.get(crate, 0) and crate not in ("testkit", "loadtest"):
                bad = True
                print(f"upward dependency: {crate} (layer {LAYERS.get(crate)}) -> {dep} (layer {LAYERS.get(dep)})")
    print(f"longest files (non-blank lines, tests and comments left out), top {top}:")
    for n, p in sorted(sizes, reverse=True)[:top]:
        print(f"  {n:5}  {p}")
    print(f"longest functions (lines, tests left out), top {top}:")
    for n, f in sorted(funcs, reverse=True)[:top]:
        print(f"  {n:5}  {f}")
    if not bad:
        print("no cycle, no upward dependency")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
