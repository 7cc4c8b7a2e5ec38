//! Waking a listening bridge that waits on its Redis pub/sub sockets as soon as a request
//! (an interest change, a join) is queued for it.
//!
//! Why: the listener serves its request queue between waits on the pub/sub sockets. A
//! blocking read with a timeout cannot be interrupted, and the kernel rounds such timeouts
//! up to whole clock ticks, so a join waited about 5 to 12 ms for the listener to look. A
//! join is on the path of every subscribe in cluster mode (a `herald.v1` `subscribed`, a raw
//! path `101`, an SSE head), so the listener instead waits in `epoll` on its sockets and on
//! a [`mio::Waker`] that every sender rings ([`Bell`]).

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

const RUNG: Token = Token(usize::MAX);

/// The waiting side, owned by the listener thread.
pub struct Alarm {
    poll: Poll,
    events: Events,
}

/// The ringing side, cloned into every sender of the listener's queue.
#[derive(Clone)]
pub struct Bell(Arc<Waker>);

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bell")
    }
}

/// A new alarm and the bell that rings it.
pub fn alarm() -> io::Result<(Alarm, Bell)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), RUNG)?;
    let alarm = Alarm {
        poll,
        events: Events::with_capacity(16),
    };
    Ok((alarm, Bell(Arc::new(waker))))
}

impl Bell {
    /// A request was queued: wake the listener if it waits (best effort: at worst it looks
    /// at its queue when its wait ends anyway).
    pub fn ring(&self) {
        let _ = self.0.wake();
    }
}

impl Alarm {
    /// Wake on input from socket `fd` too (each socket once; closing it forgets it).
    pub fn watch(&self, fd: RawFd) -> io::Result<()> {
        let token = Token(fd as usize);
        let registry = self.poll.registry();
        match registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                registry.reregister(&mut SourceFd(&fd), token, Interest::READABLE)
            }
            other => other,
        }
    }

    /// Wait until a watched socket has input, the bell rings, or `wait` passes.
    pub fn wait(&mut self, wait: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    const LONG: Duration = Duration::from_secs(20);

    #[test]
    fn a_ring_or_a_watched_socket_ends_the_wait() {
        let (mut alarm, bell) = alarm().expect("alarm");
        let ringer = bell.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ringer.ring();
        });
        let start = Instant::now();
        alarm.wait(LONG).expect("wait");
        assert!(start.elapsed() < LONG / 2, "the bell did not end the wait");
        t.join().expect("ringer");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        alarm.watch(server.as_raw_fd()).expect("watch");
        alarm
            .watch(server.as_raw_fd())
            .expect("watching twice is harmless");
        client.write_all(b"x").expect("write");
        let start = Instant::now();
        alarm.wait(LONG).expect("wait");
        assert!(start.elapsed() < LONG / 2, "input did not end the wait");
        // Nothing new: the wait lasts its time.
        let start = Instant::now();
        alarm.wait(Duration::from_millis(30)).expect("wait");
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
