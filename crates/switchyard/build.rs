//! Compiles the packet tier's BPF programs (`bpf/*.c`) with clang `-target bpf` into
//! `OUT_DIR`, where `src/xdp/objects.rs` embeds them.
//!
//! A machine without clang (or libbpf's headers) still builds Switchyard: the objects are
//! then empty, a warning says so, and `[[xdp]]` / `xdp-decap` fail at start with a message
//! naming the missing tool. Set `SWITCHYARD_REQUIRE_BPF=1` (CI does) to make a missing
//! compiler a build error instead, so a green run always tested the real programs.
//! `CLANG` names the compiler when it is not `clang` on the PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: [&str; 2] = ["lb", "decap"];

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_REQUIRE_BPF");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("bpf");
    let required = std::env::var_os("SWITCHYARD_REQUIRE_BPF").is_some_and(|v| v != "0");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let result = PROGRAMS
        .iter()
        .try_for_each(|name| compile(&clang, &src, &out, name));
    if let Err(why) = result {
        if required {
            panic!(
                "SWITCHYARD_REQUIRE_BPF is set but the BPF programs cannot be built: {why}\n\
                 install clang and libbpf-dev (Debian: apt-get install clang llvm libbpf-dev \
                 gcc-multilib), or set CLANG=/path/to/clang"
            );
        }
        println!(
            "cargo:warning=the XDP tier is disabled in this build: {why} \
             (install clang and libbpf-dev, then rebuild)"
        );
        for name in PROGRAMS {
            std::fs::write(out.join(format!("{name}.o")), b"").expect("write OUT_DIR");
        }
        std::fs::write(out.join("bpf-missing.txt"), why).expect("write OUT_DIR");
    } else {
        std::fs::write(out.join("bpf-missing.txt"), b"").expect("write OUT_DIR");
    }
}

fn compile(clang: &str, src: &Path, out: &Path, name: &str) -> Result<(), String> {
    let mut cmd = Command::new(clang);
    cmd.args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{}", src.display()));
    // Debian's clang finds <asm/types.h> only under the multiarch directory.
    if let Some(multiarch) = multiarch() {
        cmd.arg(format!("-I/usr/include/{multiarch}"));
    }
    cmd.arg("-c")
        .arg(src.join(format!("{name}.c")))
        .arg("-o")
        .arg(out.join(format!("{name}.o")));
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {clang:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{clang} failed on bpf/{name}.c:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

fn multiarch() -> Option<&'static str> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    Some(match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        _ => return None,
    })
}
