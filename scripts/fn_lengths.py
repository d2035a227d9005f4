#!/usr/bin/env python3
"""Lists production Rust functions longer than a limit (default 80 lines).

Usage: scripts/fn_lengths.py [LIMIT] [PATH ...]   (paths default to every crate's src/)
Skips `#[cfg(test)]` modules. Counts from the `fn` line to its closing brace.
"""
import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def functions(path):
    lines = path.read_text().splitlines()
    i, skip_depth = 0, None
    depth = 0
    while i < len(lines):
        line = lines[i]
        if skip_depth is None and line.strip().startswith("#[cfg(test)]"):
            skip_depth = depth
        m = FN.match(line)
        if m and skip_depth is None:
            start, d, j, opened = i, 0, i, False
            while j < len(lines):
                code = re.sub(r'"([^"\\]|\\.)*"|//.*', "", lines[j])
                if ";" in code and not opened and "{" not in code:
                    break
                d += code.count("{") - code.count("}")
                opened = opened or "{" in code
                if opened and d <= 0:
                    yield m.group(6), start + 1, j - start + 1
                    break
                j += 1
        code = re.sub(r'"([^"\\]|\\.)*"|//.*', "", line)
        depth += code.count("{") - code.count("}")
        if skip_depth is not None and depth <= skip_depth and "}" in code:
            skip_depth = None
        i += 1


def main():
    args = sys.argv[1:]
    limit = int(args.pop(0)) if args and args[0].isdigit() else 80
    roots = [pathlib.Path(a) for a in args] or [
        p for p in pathlib.Path(".").glob("**/src") if "target" not in p.parts
    ]
    found = []
    for root in roots:
        files = [root] if root.is_file() else sorted(root.glob("**/*.rs"))
        for f in files:
            if "target" in f.parts or "/tests/" in str(f) or "/benches/" in str(f) or "/examples/" in str(f):
                continue
            for name, line, length in functions(f):
                if length > limit:
                    found.append((length, f"{f}:{line}", name))
    for length, where, name in sorted(found, reverse=True):
        print(f"{length:5}  {where}  {name}")
    print(f"{len(found)} functions over {limit} lines", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
