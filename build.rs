//! Build script: records the git commit for `medsyn --version`, and watches
//! `kernels/` (the CUDA backend's NVRTC compilation of kernels/*.cu hooks in
//! here behind the `cuda` feature).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    // HEAD names the branch; the branch's ref file moves with each commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MEDSYN_GIT_COMMIT={commit}");
}
