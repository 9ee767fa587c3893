//! CUDA kernels checked on the CPU (feature `cuda`): each kernels/*.cu with a program in
//! tests/kernel_emu/ is compiled for the host against the cooperative CUDA-thread emulator
//! there (see its README.md) and compared with a float64 or exact reference; no GPU needed.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The C++ compiler: `$CXX` (may carry arguments, e.g. "ccache g++") or `c++`.
fn cxx() -> Vec<String> {
    let cxx = std::env::var("CXX").ok().filter(|s| !s.trim().is_empty());
    let cxx = cxx.unwrap_or_else(|| "c++".to_string());
    cxx.split_whitespace().map(str::to_string).collect()
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Generates build/gen_<kernel>.cpp from kernels/<kernel>.cu with prep.py (when the program
/// tests a kernel file) and compiles tests/kernel_emu/<program>.cpp into build/<program>.
fn build(program: &str, kernel: Option<&str>, build: &Path) -> PathBuf {
    let emu = root().join("tests/kernel_emu");
    if let Some(kernel) = kernel {
        let cu = root().join("kernels").join(format!("{kernel}.cu"));
        let gen = build.join(format!("gen_{kernel}.cpp"));
        let out = Command::new("python3")
            .arg(emu.join("prep.py"))
            .arg(&cu)
            .arg(&gen)
            .output()
            .expect("python3 (runs tests/kernel_emu/prep.py) not found");
        assert!(
            out.status.success(),
            "prep.py {} failed\n{}",
            cu.display(),
            output_text(&out)
        );
    }
    let exe = build.join(program);
    let cxx = cxx();
    let mut cmd = Command::new(&cxx[0]);
    cmd.args(&cxx[1..]).args([
        "-O2",
        "-std=c++17",
        "-ffp-contract=off", // a + b is one rounded add, as the kernels' __fadd_rn & co.
        "-U_FORTIFY_SOURCE", // emu.h switches stacks with _longjmp
        "-Wno-unknown-pragmas",
    ]);
    if cfg!(target_arch = "x86_64") {
        // No CET shadow stack: the emulator's _longjmp between stacks would trip it.
        cmd.arg("-fcf-protection=none");
    }
    cmd.arg("-I")
        .arg(emu.join("include"))
        .arg("-I")
        .arg(&emu)
        .arg("-I")
        .arg(root().join("kernels"))
        .arg("-I")
        .arg(build)
        .arg(emu.join(format!("{program}.cpp")))
        .arg("-o")
        .arg(&exe);
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {cxx:?} (set CXX): {e}"));
    assert!(
        out.status.success(),
        "compiling tests/kernel_emu/{program}.cpp failed ({cmd:?})\n{}",
        output_text(&out)
    );
    println!(
        "compiled {program} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    exe
}

/// Builds the program and runs it once per thread/block order ("" forward, "rev"
/// reverse); fails with its output when it exits non-zero (a mismatch, or an emulator
/// fault: divergent barrier, missing warp lanes, out-of-range access).
fn emulate(program: &str, kernel: Option<&str>, orders: &[&str]) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel_emu");
    std::fs::create_dir_all(&dir).expect("create the emulator build folder");
    let exe = build(program, kernel, &dir);
    for order in orders {
        let start = Instant::now();
        let mut cmd = Command::new(&exe);
        if !order.is_empty() {
            cmd.arg(order);
        }
        let out = cmd.output().expect("run the emulator program");
        let text = output_text(&out);
        assert!(
            out.status.success(),
            "{program} {order} failed ({})\n{text}",
            out.status
        );
        println!(
            "{program} {order}: passed in {:.1} s\n{}",
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Both orders: threads of a block and blocks of a grid run first-to-last, then
/// last-to-first (an ordering assumption between them shows up as a difference).
const BOTH: &[&str] = &["", "rev"];

#[test]
fn emulator_selftest() {
    emulate("test_emu_selftest", None, &[""]);
}

#[test]
fn attention() {
    emulate("test_attention", Some("attention"), BOTH);
}

#[test]
fn infonce() {
    emulate("test_infonce", Some("infonce"), BOTH);
}

#[test]
fn group_norm() {
    emulate("test_group_norm", Some("group_norm"), BOTH);
}

#[test]
fn batch_norm() {
    emulate("test_batch_norm", Some("batch_norm"), BOTH);
}

#[test]
fn layer_norm() {
    emulate("test_layer_norm", Some("layer_norm"), BOTH);
}

#[test]
fn softmax() {
    emulate("test_softmax", Some("softmax"), BOTH);
}

#[test]
fn elementwise() {
    emulate("test_elementwise", Some("elementwise"), BOTH);
}

#[test]
fn geglu() {
    emulate("test_geglu", Some("geglu"), BOTH);
}

#[test]
fn adamw() {
    emulate("test_adamw", Some("adamw"), BOTH);
}

#[test]
fn philox() {
    emulate("test_philox", Some("philox"), BOTH);
}

#[test]
fn conv() {
    emulate("test_conv", Some("conv"), BOTH);
}

#[test]
fn copy() {
    emulate("test_copy", Some("copy"), BOTH);
}

#[test]
fn conv_backward() {
    emulate("test_conv_backward", Some("conv_backward"), BOTH);
}
