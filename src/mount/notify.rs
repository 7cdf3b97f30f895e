//! Telling systemd how the mount is doing (the sd_notify protocol): a datagram to the unix
//! socket named by `$NOTIFY_SOCKET`, where it is set (a `Type=notify` service). A name that
//! starts with `@` is in the abstract namespace.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Sends `message` (like `READY=1`) to `$NOTIFY_SOCKET`; `Ok(false)` where it is not set.
pub fn notify(message: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    send(&socket, message)?;
    Ok(true)
}

/// Sends `message` to the socket named `socket` (a path, or `@name` in the abstract namespace).
fn send(socket: &OsStr, message: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sender.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            sender.send_to(message.as_bytes(), Path::new(socket))?;
        }
    }
    Ok(())
}

/// Tells systemd the mount is ready, logging (not failing) when that cannot be said.
pub fn ready(status: &str) {
    match notify(&format!("READY=1\nSTATUS={status}")) {
        Ok(true) => tracing::info!("told systemd the mount is ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot tell systemd the mount is ready (NOTIFY_SOCKET): {e}"),
    }
}

/// Tells systemd the mount is going away.
pub fn stopping() {
    let _ = notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("xnatfs-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
