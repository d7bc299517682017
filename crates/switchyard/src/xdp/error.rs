//! Errors of the packet tier, each saying what the operator can do about it. The kernel's
//! answers arrive as errno values deep inside aya's errors; [`XdpError::from_aya`] finds
//! the errno and turns the common ones (EPERM, ENOSYS, EOPNOTSUPP, ENODEV) into sentences.

/// Why the packet tier could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The binary was built without the BPF programs.
    #[error(
        "this switchyard was built without its BPF programs ({0}); install clang and libbpf-dev and rebuild"
    )]
    NotBuilt(String),
    /// Not root / missing capabilities.
    #[error(
        "{what}: permission denied; the XDP tier needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN on older kernels)"
    )]
    NotPermitted {
        /// What was being done.
        what: String,
    },
    /// The interface does not exist (in this network namespace).
    #[error("interface {0:?} does not exist in this network namespace")]
    NoInterface(String),
    /// The kernel or the driver lacks something the tier needs.
    #[error("{what}: the kernel or driver does not support it ({detail})")]
    Unsupported {
        /// What was being done.
        what: String,
        /// The kernel's answer, with a hint.
        detail: String,
    },
    /// Any other failure of a BPF call.
    #[error("{what}: {detail}")]
    Bpf {
        /// What was being done.
        what: String,
        /// The error chain.
        detail: String,
    },
    /// The configuration cannot be served by the packet tier.
    #[error("[[xdp]] {0}")]
    Config(String),
}

impl XdpError {
    /// Classifies an aya (or any) error raised while doing `what`.
    pub fn from_aya(what: impl Into<String>, error: &(dyn std::error::Error + 'static)) -> Self {
        let what = what.into();
        let mut detail = error.to_string();
        let mut errno = None;
        let mut source = error.source();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                errno = errno.or(io.raw_os_error());
            }
            current = source;
            if let Some(s) = source {
                detail.push_str(": ");
                detail.push_str(&s.to_string());
                source = s.source();
            }
        }
        match errno {
            Some(libc::EPERM) | Some(libc::EACCES) if !detail.contains("verifier") => {
                XdpError::NotPermitted { what }
            }
            Some(libc::ENOSYS) => XdpError::Unsupported {
                what,
                detail: format!("{detail}; the kernel has no BPF syscall"),
            },
            Some(libc::EOPNOTSUPP) => XdpError::Unsupported {
                what,
                detail: format!(
                    "{detail}; if this was a native attach, the driver lacks native XDP: use mode = \"generic\""
                ),
            },
            Some(libc::ENODEV) => XdpError::NoInterface(what),
            _ => XdpError::Bpf { what, detail },
        }
    }
}

/// Shorthand: maps an aya result's error through [`XdpError::from_aya`].
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, XdpError>;
}

impl<T, E: std::error::Error + 'static> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, XdpError> {
        self.map_err(|e| XdpError::from_aya(what(), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_become_operator_sentences() {
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = XdpError::from_aya("loading xdp_lb", &eperm);
        assert!(matches!(e, XdpError::NotPermitted { .. }), "{e}");
        assert!(e.to_string().contains("needs root"));
        let e = XdpError::from_aya(
            "attaching",
            &std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        );
        assert!(e.to_string().contains("mode = \"generic\""), "{e}");
        let e = XdpError::from_aya("x", &std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(e, XdpError::Bpf { .. }));
    }
}
