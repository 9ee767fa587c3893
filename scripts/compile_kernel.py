"""Compile kernels/*.cu the way build.rs does, for a quick look while writing a kernel.

    python3 scripts/compile_kernel.py kernels/attention.cu [more.cu ...]

NVRTC (the nvidia-cuda-nvrtc-cu12 wheel, via ctypes) makes PTX for compute_80 and
compute_90a with the CUDA headers of nvidia-cuda-runtime-cu12; ptxas (nvidia-cuda-nvcc-cu12)
turns each into a cubin and reports registers, shared memory and spills per kernel.
Exit status 1 when any file fails to compile. Needs no GPU.
"""
import ctypes
import os
import re
import subprocess
import sys
import tempfile

import nvidia.cuda_nvcc
import nvidia.cuda_nvrtc
import nvidia.cuda_runtime

NVRTC = os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib", "libnvrtc.so.12")
INCLUDE = os.path.join(list(nvidia.cuda_runtime.__path__)[0], "include")
PTXAS = os.path.join(list(nvidia.cuda_nvcc.__path__)[0], "bin", "ptxas")
ARCHS = ["80", "90a"]


def nvrtc_ptx(lib, source, name, arch):
    prog = ctypes.c_void_p()
    check = lambda r, what: r == 0 or sys.exit(f"{name}: {what} failed ({r})")
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source, name.encode(), 0, None, None), "create")
    opts = [f"--gpu-architecture=compute_{arch}", f"-I{INCLUDE}", "-I" + os.path.dirname(name),
            "--std=c++17", "-default-device", "-lineinfo"]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    res = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if res != 0:
        return None, log.value.decode()
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    return ptx.value, log.value.decode()


def main():
    lib = ctypes.CDLL(NVRTC)
    failed = False
    for path in sys.argv[1:]:
        source = open(path, "rb").read()
        for arch in ARCHS:
            ptx, log = nvrtc_ptx(lib, source, path, arch)
            if ptx is None:
                print(f"FAIL {path} compute_{arch}\n{log}")
                failed = True
                continue
            if log.strip():
                print(f"{path} compute_{arch} warnings:\n{log}")
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "k.ptx")
                open(p, "wb").write(ptx)
                out = subprocess.run([PTXAS, f"-arch=sm_{arch}", "-v", p, "-o", os.path.join(d, "k.cubin")],
                                     capture_output=True, text=True)
            if out.returncode != 0:
                print(f"FAIL {path} sm_{arch} ptxas\n{out.stderr}")
                failed = True
                continue
            kernel = None
            for line in out.stderr.splitlines():
                m = re.search(r"Compiling entry function '(\w+)'", line)
                if m:
                    kernel = m.group(1)
                m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m:
                    spill = int(m.group(1)) + int(m.group(2))
                m = re.search(r"Used (\d+) registers.*?(?:(\d+) bytes smem)?", line)
                if m and kernel:
                    smem = re.search(r"(\d+) bytes smem", line)
                    print(f"{kernel:48} sm_{arch:4} regs {m.group(1):>4} smem {smem.group(1) if smem else 0:>6} spill {spill}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
