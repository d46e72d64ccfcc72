//! The local end of the tunnel: a free local port (or the pinned one), the forward through the
//! shared connection to the server's port or Unix socket, and the HTTP check through it. A busy
//! port is skipped; a pinned busy one is an error that names the process holding it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::http;

use super::control::Control;
use super::remote::Ready;

/// Local ports tried first, so that the URL is the same from one session to the next.
const PREFERRED: std::ops::RangeInclusive<u16> = 8787..=8886;
/// How long the server may take to respond through a new forward.
const VERIFY_LIMIT: Duration = Duration::from_secs(20);
const REQUEST_LIMIT: Duration = Duration::from_secs(5);

/// Destination of the tunnel on the far side.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Tcp { node: String, port: u16 },
    Socket(PathBuf),
}

impl Target {
    /// Returns the target of a ready server. A Unix socket is reachable only where the master
    /// runs, so the compute node must be the ssh host itself.
    pub fn of(ready: &Ready, host: &str, remote_hostname: &str) -> Result<Target> {
        match (&ready.socket, ready.port) {
            (Some(socket), _) => {
                let short = |name: &str| name.split('.').next().unwrap_or(name).to_owned();
                if short(&ready.node) != short(remote_hostname) {
                    // NOTE: a socket on another node needs a second ssh hop to that node.
                    return Err(Error::failed(format!(
                        "session {} serves on a Unix socket on {}, and connect reaches sockets only on {host} itself ({remote_hostname})",
                        ready.session, ready.node
                    ))
                    .with_hint("start sessions for connect without --socket, so that they serve on a TCP port"));
                }
                Ok(Target::Socket(socket.clone()))
            }
            (None, Some(port)) => Ok(Target::Tcp {
                node: ready.node.clone(),
                port,
            }),
            (None, None) => Err(Error::failed(format!(
                "session {} has neither a port nor a socket",
                ready.session
            ))),
        }
    }

    fn spec(&self, local: u16) -> String {
        match self {
            Target::Tcp { node, port } => format!("127.0.0.1:{local}:{node}:{port}"),
            Target::Socket(path) => format!("127.0.0.1:{local}:{}", path.display()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Tcp { node, port } => format!("{node}:{port}"),
            Target::Socket(path) => format!("socket {}", path.display()),
        }
    }
}

/// An open forward from a local port.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub port: u16,
    pub target: Target,
}

impl Tunnel {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Opens a forward to `target` on the pinned port, else on `previous` when it is free,
    /// else on the first free preferred port, else on any free port. Then it checks that the
    /// server responds to HTTP through it, and removes the forward again when it does not.
    pub fn open(
        control: &Control,
        target: &Target,
        pinned: Option<u16>,
        previous: Option<u16>,
    ) -> Result<Tunnel> {
        let candidates: Vec<u16> = match pinned {
            Some(port) => vec![port],
            None => previous
                .into_iter()
                .chain(PREFERRED)
                .chain([0; 5])
                .collect(),
        };
        for candidate in candidates {
            let port = if candidate == 0 {
                match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                    Ok(addr) => addr.port(),
                    Err(_) => continue,
                }
            } else {
                candidate
            };
            if !port_free(port) {
                if pinned.is_some() {
                    return Err(busy_error(port));
                }
                tracing::debug!(port, "local port in use, trying the next one");
                continue;
            }
            let tunnel = Tunnel {
                port,
                target: target.clone(),
            };
            let output = control.control("forward", &["-L", &target.spec(port)])?;
            if !output.success() {
                // Another program took the port since we looked: try the next one.
                if pinned.is_none() && output.stderr.contains("forwarding failed") {
                    continue;
                }
                let err = if pinned.is_some() && !port_free(port) {
                    busy_error(port)
                } else {
                    Error::failed(format!(
                        "ssh could not forward local port {port} to {} on {}",
                        target.describe(),
                        control.host
                    ))
                    .with_details(output.stderr.lines().map(str::to_owned).collect())
                };
                return Err(err);
            }
            if tunnel.responds_within(VERIFY_LIMIT) {
                return Ok(tunnel);
            }
            tunnel.close(control);
            let hint = match target {
                Target::Socket(_) => format!(
                    "the ssh server on {} may not allow forwarding to Unix sockets (AllowStreamLocalForwarding); start the session without --socket",
                    control.host
                ),
                Target::Tcp { .. } => format!(
                    "check the session with `hpc-rstudio connect {} --list`; a firewall between {} and the node may block the port",
                    control.host, control.host
                ),
            };
            return Err(Error::failed(format!(
                "RStudio Server ({}) does not respond through {}, so no tunnel was left open",
                target.describe(),
                control.host
            ))
            .with_hint(hint));
        }
        Err(Error::failed("no free local port for the tunnel")
            .with_hint("end old tunnels or pass a free port with --local-port"))
    }

    /// Checks whether the server responds to HTTP through the tunnel, retrying until `limit`.
    pub fn responds_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.responds() {
                return true;
            }
            if Instant::now() + Duration::from_millis(300) >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Sends one HTTP request through the tunnel. The local ssh accepts any connection, so only
    /// an HTTP response shows that the far end is there.
    pub fn responds(&self) -> bool {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port);
        http::get_status(&http::Target::Tcp(addr), "/", REQUEST_LIMIT).is_some()
    }

    /// Removes the forward from the master; the port is free again afterwards.
    pub fn close(&self, control: &Control) {
        let _ = control.control("cancel", &["-L", &self.target.spec(self.port)]);
    }
}

/// Checks whether `port` is free on the loopback addresses of both families: a browser may resolve
/// `localhost` to either, and an old tunnel may hold just one of them.
pub fn port_free(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return false;
    }
    match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
        Ok(_) => true,
        Err(err) => err.kind() != std::io::ErrorKind::AddrInUse,
    }
}

/// Builds the error for a busy pinned port, naming the process that listens on it where that is
/// visible.
pub fn busy_error(port: u16) -> Error {
    let holder = holder(port);
    let (by, kill) = match &holder {
        Some(Holder {
            pid: Some(pid),
            command,
        }) => (
            format!(" by process {pid} ({command})"),
            format!("; if it is an old tunnel, end it with `kill {pid}`"),
        ),
        Some(Holder { pid: None, command }) => (format!(" by {command}"), String::new()),
        None => (String::new(), String::new()),
    };
    Error::usage(format!("local port {port} is in use{by}")).with_hint(format!(
        "choose another --local-port, or leave it out so that a free port is chosen{kill}"
    ))
}

/// Process listening on a local port, as far as this user can see.
#[derive(Debug, PartialEq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub command: String,
}

/// One row of the kernel's TCP socket tables.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub listening: bool,
    pub uid: u32,
    pub inode: u64,
}

/// The TCP sockets of this network namespace, from /proc/net/tcp and tcp6 (Linux only).
pub fn tcp_table() -> Vec<TcpEntry> {
    let mut entries = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(file) {
            entries.extend(text.lines().skip(1).filter_map(|l| parse_tcp_line(l, v6)));
        }
    }
    entries
}

/// Parses `sl local rem st tx:rx tr:when retr uid timeout inode ...`.
fn parse_tcp_line(line: &str, v6: bool) -> Option<TcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 {
        return None;
    }
    Some(TcpEntry {
        local: parse_proc_addr(fields[1], v6)?,
        remote: parse_proc_addr(fields[2], v6)?,
        listening: fields[3] == "0A",
        uid: fields[7].parse().ok()?,
        inode: fields[9].parse().ok()?,
    })
}

/// Reads `0100007F:1F90`: the address as 32-bit words in host byte order, the port in hex.
fn parse_proc_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::new();
    for chunk in addr.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes.extend(word.to_ne_bytes());
    }
    let ip = match (v6, bytes.len()) {
        (false, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        (true, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Finds who listens on `port`: a process of this user by pid and command line, another
/// user's by name only (their processes are not visible).
pub fn holder(port: u16) -> Option<Holder> {
    let listener = tcp_table()
        .into_iter()
        .find(|e| e.listening && e.local.port() == port)?;
    let expected = format!("socket:[{}]", listener.inode);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == expected.as_str())
        });
        if owns {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let command = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            return Some(Holder {
                pid: Some(pid),
                command,
            });
        }
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(listener.uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", listener.uid), |u| u.name);
    Some(Holder {
        pid: None,
        command: format!("a process of user {name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines() {
        let line = "   0: 0100007F:2253 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 123456 1 0000000000000000 100 0 0 10 0";
        let entry = parse_tcp_line(line, false).unwrap();
        assert_eq!(entry.local, "127.0.0.1:8787".parse().unwrap());
        assert!(entry.listening);
        assert_eq!(entry.uid, 1001);
        assert_eq!(entry.inode, 123456);
        let line6 = "   0: 00000000000000000000000001000000:2253 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 99 1";
        let entry = parse_tcp_line(line6, true).unwrap();
        assert_eq!(entry.local, "[::1]:8787".parse().unwrap());
    }

    #[test]
    fn busy_port_is_seen_and_named() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!port_free(port));
        let holder = holder(port).expect("our own listener is visible");
        assert_eq!(holder.pid, Some(std::process::id()));
        let err = busy_error(port);
        assert!(
            err.message
                .contains(&format!("local port {port} is in use by process")),
            "{}",
            err.message
        );
        drop(listener);
        assert!(port_free(port));
    }

    #[test]
    fn forward_specs() {
        let tcp = Target::Tcp {
            node: "node17".into(),
            port: 8842,
        };
        assert_eq!(tcp.spec(8787), "127.0.0.1:8787:node17:8842");
        let socket = Target::Socket("/tmp/x/rs.sock".into());
        assert_eq!(socket.spec(8788), "127.0.0.1:8788:/tmp/x/rs.sock");
    }
}
