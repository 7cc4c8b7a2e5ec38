//! Operating-system details in one place: open-file limits, `SO_REUSEPORT` listeners, core pinning.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// File descriptors each worker and the process keep for themselves (listener, epoll, waker,
/// stdio, the signal pipe…), subtracted from the open-file limit to get connection capacity.
const RESERVED_FDS_PER_WORKER: u64 = 4;
const RESERVED_FDS_PROCESS: u64 = 16;

/// The outcome of raising `RLIMIT_NOFILE`, printed at start so operators know the real capacity.
#[derive(Debug, Clone, Copy)]
pub struct FileLimit {
    /// Soft limit before Herald raised it.
    pub before: u64,
    /// Soft limit now (the hard limit, when raising worked).
    pub now: u64,
}

impl FileLimit {
    /// How many client sockets fit under the limit after Herald's own descriptors.
    pub fn connection_capacity(&self, workers: usize) -> u64 {
        self.now
            .saturating_sub(RESERVED_FDS_PROCESS + RESERVED_FDS_PER_WORKER * workers as u64)
    }
}

/// Raise the soft open-file limit to the hard limit: every connection is a descriptor, and
/// distributions ship a soft limit of 1024 that would cap the server far below its design.
pub fn raise_file_limit() -> io::Result<FileLimit> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    let (now, _) = rlimit::Resource::NOFILE.get()?;
    Ok(FileLimit { before: soft, now })
}

/// Bind one worker's listener with `SO_REUSEPORT`, so every worker accepts on the same
/// address and the kernel spreads new connections across them without a shared accept lock.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Bind `count` listeners on one address. With port 0 the first bind picks the port and the
/// others join it, so all workers share the one port that gets printed.
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
) -> io::Result<(SocketAddr, Vec<mio::net::TcpListener>)> {
    let first = reuseport_listener(addr)?;
    let actual = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(reuseport_listener(actual)?);
    }
    Ok((actual, listeners))
}

/// Pick the core each worker is pinned to: the requested list, or every core the process may
/// run on; workers beyond the list wrap around.
pub fn plan_cores(
    requested: Option<&[usize]>,
    threads: Option<usize>,
) -> Vec<Option<core_affinity::CoreId>> {
    let available = core_affinity::get_core_ids().unwrap_or_default();
    let cores: Vec<core_affinity::CoreId> = match requested {
        Some(list) => list
            .iter()
            .map(|&id| core_affinity::CoreId { id })
            .collect(),
        None => available,
    };
    let count = threads.unwrap_or(cores.len().max(1));
    (0..count)
        .map(|i| {
            if cores.is_empty() {
                None
            } else {
                Some(cores[i % cores.len()])
            }
        })
        .collect()
}

/// True for the accept errors that mean "out of descriptors": back off instead of spinning.
pub fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}
