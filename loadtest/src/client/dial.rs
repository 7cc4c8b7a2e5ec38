//! Opening client sockets: loopback source-address selection and the non-blocking connect.
//!
//! Each source address gives a full ephemeral port range per server address, which is how
//! one machine opens 100k connections to one server port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking socket bound to source address `127.0.0.(1 + src_index)` with the port left
/// to `connect` (IP_BIND_ADDRESS_NO_PORT), so ports are shared across destinations, and the
/// connect started.
pub fn open_socket(addr: SocketAddr, src_index: u64) -> io::Result<mio::net::TcpStream> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    if addr.is_ipv4() {
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + src_index as u32);
        socket.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connects_from_a_second_loopback_address() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _s = open_socket(l.local_addr().expect("addr"), 1).expect("socket");
        let (_, peer) = l.accept().expect("accept");
        assert_eq!(peer.ip(), "127.0.0.2".parse::<IpAddr>().expect("ip"));
    }
}
