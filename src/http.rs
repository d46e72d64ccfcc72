//! A minimal HTTP/1.0 client, enough to ask whether the server answers, over TCP or a Unix socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Sends `GET path` and returns the status code, or `None` when nothing answered with HTTP.
pub fn get_status(target: &Target, path: &str, timeout: Duration) -> Option<u16> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let response = match target {
        Target::Tcp(addr) => {
            let mut stream = TcpStream::connect_timeout(addr, timeout).ok()?;
            exchange(&mut stream, &request, timeout, |s, t| {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            })
        }
        Target::Unix(path) => {
            let mut stream = UnixStream::connect(path).ok()?;
            exchange(&mut stream, &request, timeout, |s, t| {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            })
        }
    }?;
    parse_status(&response)
}

fn exchange<S: Read + Write>(
    stream: &mut S,
    request: &str,
    timeout: Duration,
    set_timeouts: impl Fn(&S, Duration) -> std::io::Result<()>,
) -> Option<String> {
    set_timeouts(stream, timeout).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Reads the status code from a status line such as `HTTP/1.1 302 Found`.
pub fn parse_status(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status("HTTP/1.1 302 Found\r\nLocation: /x\r\n"),
            Some(302)
        );
        assert_eq!(parse_status("HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status("SSH-2.0-OpenSSH_9.2\r\n"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn answers_from_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 302 Found\r\nLocation: /auth-sign-in\r\n\r\n")
                .unwrap();
        });
        assert_eq!(
            get_status(&Target::Tcp(addr), "/", Duration::from_secs(5)),
            Some(302)
        );
        server.join().unwrap();
    }

    #[test]
    fn nothing_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert_eq!(
            get_status(&Target::Tcp(addr), "/", Duration::from_secs(1)),
            None
        );
    }
}
