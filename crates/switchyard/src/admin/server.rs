//! The admin API's socket (TCP or Unix) and its HTTP/1.1 connection loop.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use super::api;
use crate::config::model::AdminListen;
use crate::listener::bind;
use crate::runtime::server::{BoundListener, Shared};
use crate::runtime::shutdown::{Phase, Shutdown};

/// The admin socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum AdminBindError {
    /// A TCP address.
    #[error(transparent)]
    Tcp(bind::BindError),
    /// A Unix socket path.
    #[error("admin: cannot bind unix:{path}: {source}")]
    Unix {
        /// The socket path.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// Set once this process handed its admin socket to a newer one (`run --upgrade`): the
/// Unix socket's path then belongs to the new process and is not removed on exit. One
/// process has one admin socket, so the flag is process-wide.
static PATH_HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Keeps the admin Unix socket's path when this process exits (it was handed over).
pub fn keep_socket_path() {
    PATH_HANDED_OVER.store(true, Ordering::Release);
}

/// A bound admin socket.
#[derive(Debug)]
pub enum AdminSocket {
    /// TCP.
    Tcp(tokio::net::TcpListener, SocketAddr),
    /// Unix (the path is removed again when the socket is dropped).
    Unix(tokio::net::UnixListener, PathBuf),
}

/// Binds the admin socket.
pub fn bind(listen: &AdminListen) -> Result<AdminSocket, AdminBindError> {
    match listen {
        AdminListen::Tcp(address) => {
            let socket = bind::tcp("admin", *address).map_err(AdminBindError::Tcp)?;
            let local = socket.local_addr().map_err(|source| {
                AdminBindError::Tcp(bind::BindError {
                    listener: "admin".into(),
                    address: *address,
                    source,
                })
            })?;
            Ok(AdminSocket::Tcp(socket, local))
        }
        AdminListen::Unix(path) => {
            let error = |source| AdminBindError::Unix {
                path: path.clone(),
                source,
            };
            // A stale socket file from a previous run would make bind fail; a live one
            // is detected by connecting to it first.
            if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
                std::fs::remove_file(path).map_err(error)?;
            }
            let socket = tokio::net::UnixListener::bind(path).map_err(error)?;
            Ok(AdminSocket::Unix(socket, path.clone()))
        }
    }
}

impl AdminSocket {
    /// The admin socket rebuilt from a descriptor a previous process handed over.
    pub fn from_fd(listen: &AdminListen, fd: OwnedFd) -> std::io::Result<AdminSocket> {
        match listen {
            AdminListen::Tcp(_) => {
                let socket = std::net::TcpListener::from(fd);
                socket.set_nonblocking(true)?;
                let socket = tokio::net::TcpListener::from_std(socket)?;
                let local = socket.local_addr()?;
                Ok(AdminSocket::Tcp(socket, local))
            }
            AdminListen::Unix(path) => {
                let socket = std::os::unix::net::UnixListener::from(fd);
                socket.set_nonblocking(true)?;
                Ok(AdminSocket::Unix(
                    tokio::net::UnixListener::from_std(socket)?,
                    path.clone(),
                ))
            }
        }
    }

    /// A duplicate of the descriptor, for a later `run --upgrade`.
    pub fn duplicate_fd(&self) -> std::io::Result<OwnedFd> {
        match self {
            AdminSocket::Tcp(socket, _) => socket.as_fd().try_clone_to_owned(),
            AdminSocket::Unix(socket, _) => socket.as_fd().try_clone_to_owned(),
        }
    }

    /// How `/api/v1/listeners` reports it.
    pub fn bound(&self) -> BoundListener {
        let address = match self {
            AdminSocket::Tcp(_, address) => address.to_string(),
            AdminSocket::Unix(_, path) => format!("unix:{}", path.display()),
        };
        BoundListener {
            name: "admin".into(),
            protocol: "http".into(),
            address,
        }
    }

    /// The TCP address, if it is one.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        match self {
            AdminSocket::Tcp(_, address) => Some(*address),
            AdminSocket::Unix(..) => None,
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if let AdminSocket::Unix(_, path) = self {
            if PATH_HANDED_OVER.load(Ordering::Acquire) {
                return;
            }
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves the admin API until the shutdown closes everything.
pub async fn serve(
    socket: AdminSocket,
    shared: Arc<Shared>,
    token: api::AdminToken,
    shutdown: Shutdown,
) {
    let listen = socket.tcp_address();
    let mut closed = shutdown.reached(Phase::Closed);
    loop {
        let io: Box<dyn AsyncStream> = tokio::select! {
            () = &mut closed => return,
            accepted = accept(&socket) => match accepted {
                Ok(io) => io,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        let token = token.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                let token = token.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        api::handle(&shared, listen, &token, request).await,
                    )
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await
            {
                debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

/// A stream the admin API can serve, TCP or Unix.
trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AsyncStream for T {}

async fn accept(socket: &AdminSocket) -> std::io::Result<Box<dyn AsyncStream>> {
    Ok(match socket {
        AdminSocket::Tcp(listener, _) => {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
        AdminSocket::Unix(listener, _) => Box::new(listener.accept().await?.0),
    })
}
