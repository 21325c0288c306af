#!/usr/bin/env python3
"""The shape of the source tree: code lines per file (tests, comments and blank lines not
counted), the longest functions, and import cycles between the crate's top-level modules and
between the files of one module. Used for the architecture issue's before/after figures.

    scripts/code-shape.py [--top N] [SRC_DIR]
"""
import os
import re
import sys


def rust_files(root):
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(dirpath, n)


def is_test_file(path):
    return "/tests/" in path or path.endswith("/tests.rs")


def strip_tests(lines):
    """Drops `#[cfg(test)] mod ... { ... }` blocks."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*(pub\s+)?mod\s+\w+\s*\{", lines[i + 1]):
            depth, i = 0, i + 1
            while i < len(lines):
                depth += lines[i].count("{") - lines[i].count("}")
                i += 1
                if depth <= 0:
                    break
            continue
        out.append(lines[i])
        i += 1
    return out


def code_lines(lines):
    return sum(1 for l in lines if l.strip() and not l.strip().startswith("//"))


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def functions(path, lines):
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r'"([^"\\]|\\.)*"', '""', lines[j].split("//")[0])
            if ";" in code and not started and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                yield (j - i + 1, f"{path}:{i + 1} {m.group(6)}")
                break
            j += 1


def resolve_from(base, parts):
    """The file a path names, as deep as files exist (`a::b::Item` -> a/b.rs if it exists)."""
    found = None
    for part in parts:
        for cand in (os.path.join(base, part + ".rs"), os.path.join(base, part, "mod.rs")):
            if os.path.exists(cand):
                found, base = cand[:-3].removesuffix("/mod"), os.path.join(base, part)
                break
        else:
            break
    return found


def resolve(src, parts):
    return resolve_from(src, parts)


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    args = sys.argv[1:]
    top = 15
    if args[:1] == ["--top"]:
        top, args = int(args[1]), args[2:]
    src = args[0] if args else "src"
    per_file, fns = [], []
    file_graph = {}
    for path in rust_files(src):
        lines = open(path, encoding="utf-8").read().splitlines()
        body = [] if is_test_file(path) else strip_tests(lines)
        per_file.append((code_lines(body), code_lines(lines), path))
        fns.extend(f for f in functions(path, body))
        node = path[:-3].removesuffix("/mod")
        text = "\n".join(body)
        for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
            target = resolve(src, m.group(1).split("::"))
            if target and target != node:
                file_graph.setdefault(node, set()).add(target)
        # `super::` of a/b.rs is a/; of a/mod.rs it is the parent of a/.
        parent = os.path.dirname(path)
        if path.endswith("/mod.rs"):
            parent = os.path.dirname(parent)
        for m in re.finditer(r"\bsuper::((?:\w+::)*\w+)", text):
            target = resolve_from(parent, m.group(1).split("::"))
            if target and target != node:
                file_graph.setdefault(node, set()).add(target)
    per_file.sort(reverse=True)
    print(f"{'code':>5} {'all':>5}  file (code: without tests, comments, blank lines)")
    for code, total, path in per_file[:top]:
        print(f"{code:>5} {total:>5}  {path}")
    over = [p for c, _, p in per_file if c > 500]
    print(f"files: {len(per_file)}; over 500 lines of code: {len(over)} {over}")
    fns.sort(reverse=True)
    print("\nlongest functions (lines, tests excluded):")
    for n, where in fns[:top]:
        print(f"{n:>5}  {where}")
    print(f"functions over 80 lines: {sum(1 for n, _ in fns if n > 80)}")
    cycles = sccs(file_graph)
    print("\nimport cycles between files:", cycles if cycles else "none")
    tests = 0
    for root in (src, os.path.join(os.path.dirname(os.path.abspath(src)), "tests")):
        for path in rust_files(root):
            tests += len(re.findall(r"#\[(tokio::)?test\b", open(path, encoding="utf-8").read()))
    print(f"test functions (src and tests): {tests}")


if __name__ == "__main__":
    main()
