#!/usr/bin/env python3
"""Make a kernels/*.cu file compilable by the host emulator: the section between
"// BEGIN PTX WRAPPERS" and "// END PTX WRAPPERS" (inline PTX) is replaced by
`#include "emu_ptx.h"`; files without such a section are used as they are. #line
directives keep compiler messages pointing at the original file and line.

usage: prep.py kernels/X.cu OUT.cpp
"""
import sys


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    src = open(src_path, encoding="utf-8").read()
    name = src_path.replace("\\", "/")
    begin, end = "// BEGIN PTX WRAPPERS", "// END PTX WRAPPERS"
    out = ['#line 1 "%s"\n' % name]
    a = src.find(begin)
    if a >= 0:
        b = src.find(end, a)
        if b < 0:
            sys.exit("%s: '%s' without '%s'" % (src_path, begin, end))
        line_b = src.count("\n", 0, b) + 1
        out.append(src[:a])
        out.append('#include "emu_ptx.h"\n')
        out.append('#line %d "%s"\n' % (line_b, name))
        out.append(src[b:])
    elif end in src:
        sys.exit("%s: '%s' without '%s'" % (src_path, end, begin))
    else:
        out.append(src)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("".join(out))


if __name__ == "__main__":
    main()
