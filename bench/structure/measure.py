#!/usr/bin/env python3
"""Code-structure figures for BENCHMARKS.md (issue 19): lines of Rust per crate
(src, tests, benches/examples apart) and the longest production functions.

Usage: bench/structure/measure.py [REPO] [--over N]

A production function is one in a crate's src/ outside `#[cfg(test)]` modules.
Function length is counted from its `fn` line to its closing brace, found by
brace depth after blanking string/char literals and comments (good enough for
rustfmt-formatted code; macros with unbalanced braces in strings are blanked).
"""
import os
import re
import sys

FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?((const|async|unsafe|extern\s+"C")\s+)*fn\s+(\w+)')


def blank(line, state):
    """Returns the line with literals and comments blanked; state carries block
    comments and multi-line strings across lines."""
    out = []
    i = 0
    while i < len(line):
        c = line[i]
        if state["block"]:
            if line.startswith("*/", i):
                state["block"] = False
                i += 2
            else:
                i += 1
            continue
        if state["str"]:
            if c == "\\":
                i += 2
                continue
            if c == '"' and line.startswith(state["close"], i):
                i += len(state["close"])
                state["str"] = False
                continue
            i += 1
            continue
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        m = re.match(r'r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["str"] = True
            state["close"] = '"' + m.group(1)
            i += len(m.group(0))
            continue
        if c == '"':
            state["str"] = True
            state["close"] = '"'
            i += 1
            continue
        if c == "'":
            m = re.match(r"'(\\.|[^\\'])'", line[i:]) or re.match(r"'\\u\{[0-9a-fA-F]+\}'", line[i:])
            if m:
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def functions(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    state = {"block": False, "str": False, "close": '"'}
    depth = 0
    open_fns = []  # (name, start, depth_before)
    test_depth = None
    pending_cfg_test = False
    found = []
    for n, raw in enumerate(lines, 1):
        in_literal = state["str"] or state["block"]
        code = blank(raw, state)
        stripped = code.strip()
        if not in_literal:
            if stripped.startswith("#[cfg(test)]"):
                pending_cfg_test = True
            elif pending_cfg_test and re.match(r"(pub\s+)?mod\s+\w+", stripped):
                if test_depth is None:
                    test_depth = depth
                pending_cfg_test = False
            elif stripped and not stripped.startswith("#"):
                pending_cfg_test = False
            m = FN.match(code)
            if m and test_depth is None and ("{" in code or not code.rstrip().endswith(";")):
                open_fns.append((m.group(5), n, depth))
        depth += code.count("{") - code.count("}")
        while open_fns and depth <= open_fns[-1][2] and n >= open_fns[-1][1] and (
            "}" in code or code.rstrip().endswith(";")
        ):
            name, start, _ = open_fns.pop()
            if "{" in "".join(lines[start - 1 : n]):
                found.append((n - start + 1, name, start))
        if test_depth is not None and depth <= test_depth and "}" in code:
            test_depth = None
    return found


def rust_files(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in ("target", ".git")]
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def main():
    args = sys.argv[1:]
    over = 100
    if "--over" in args:
        i = args.index("--over")
        over = int(args[i + 1])
        del args[i : i + 2]
    repo = args[0] if args else "."
    crates_dir = os.path.join(repo, "crates")
    total = {"src": 0, "tests": 0, "other": 0}
    long_fns = []
    print(f"{'crate':<28}{'src':>8}{'tests':>8}{'other':>8}")
    for crate in sorted(os.listdir(crates_dir)):
        base = os.path.join(crates_dir, crate)
        counts = {"src": 0, "tests": 0, "other": 0}
        for path in rust_files(base):
            rel = os.path.relpath(path, base)
            part = rel.split(os.sep)[0]
            kind = "src" if part == "src" else "tests" if part == "tests" else "other"
            with open(path, encoding="utf-8") as f:
                counts[kind] += sum(1 for _ in f)
            if kind == "src":
                for length, name, start in functions(path):
                    long_fns.append((length, f"{crate}/{rel}:{start} {name}"))
        for k in total:
            total[k] += counts[k]
        print(f"{crate:<28}{counts['src']:>8}{counts['tests']:>8}{counts['other']:>8}")
    print(f"{'total':<28}{total['src']:>8}{total['tests']:>8}{total['other']:>8}")
    print(f"crates: {len(os.listdir(crates_dir))}")
    long_fns.sort(reverse=True)
    print(f"\nproduction functions over {over} lines: {sum(1 for l, _ in long_fns if l > over)}")
    for length, where in long_fns[:15]:
        print(f"{length:>6}  {where}")


if __name__ == "__main__":
    main()
