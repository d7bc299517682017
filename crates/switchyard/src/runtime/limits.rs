//! Open-file limits (SPEC section 2): a balancer holds two descriptors per proxied
//! connection, so `run` raises the soft limit to the hard limit and warns when the
//! configured `max_connections` could not all be served.

use rustix::process::{Resource, getrlimit, setrlimit};
use tracing::{info, warn};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; warns when twice `max_connections`
/// (summed over listeners) exceeds the result. Returns the soft limit in force.
pub fn raise_open_file_limit(max_connections: u64) -> Option<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            warn!(%error, "cannot raise the open-file limit");
        }
    }
    let soft = getrlimit(Resource::Nofile).current;
    let needed = max_connections.saturating_mul(2);
    match soft {
        Some(soft) if needed > soft => warn!(
            open_file_limit = soft,
            needed,
            "the open-file limit is below twice the listeners' max_connections; \
             connections past it will fail to accept (raise `ulimit -n` or lower max_connections)"
        ),
        Some(soft) => info!(open_file_limit = soft, "open-file limit"),
        None => {}
    }
    soft
}
