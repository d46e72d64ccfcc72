//! Sign-in without typing: a page served on 127.0.0.1 for a short while, to this user only and
//! only once, that posts the user name and password to the tunnelled sign-in form. The browser
//! opens the page's address, which contains a random token and no secret.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long the page is served when no request fetches it.
pub const LIFETIME: Duration = Duration::from_secs(60);

/// A running one-time page.
pub struct Page {
    pub url: String,
}

/// Serves the sign-in page for the server behind `tunnel_port`.
pub fn serve(tunnel_port: u16, user: &str, password: &str) -> Result<Page> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|err| Error::failed(format!("cannot open the sign-in page: {err}")))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let token = random_token();
    let csrf = random_token();
    let url = format!("http://127.0.0.1:{port}/{token}");
    let body = page(tunnel_port, user, password, &csrf);
    std::thread::spawn(move || serve_once(&listener, &token, &csrf, &body));
    Ok(Page { url })
}

/// Accepts connections until the page was sent once or its time is up, then closes.
fn serve_once(listener: &TcpListener, token: &str, csrf: &str, body: &str) {
    let deadline = Instant::now() + LIFETIME;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                if answer(stream, token, csrf, body) {
                    return;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Responds to one request and returns whether it served the page.
fn answer(mut stream: TcpStream, token: &str, csrf: &str, body: &str) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    // Other users on this computer can reach 127.0.0.1 too: only this user's programs get it.
    if !peer_is_own(&stream) {
        let _ = stream.write_all(b"HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return false;
    }
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let wanted = format!("GET /{token} ");
    if !text.starts_with(&wanted) {
        let _ = stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return false;
    }
    // The form's hidden field and this cookie carry the same random value, as RStudio's sign-in
    // form expects (cookies are shared by all ports of 127.0.0.1).
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
         Set-Cookie: rs-csrf-token={csrf}; Path=/; SameSite=Lax\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    true
}

/// Checks whether the connecting socket belongs to this user, from the kernel's socket table.
fn peer_is_own(stream: &TcpStream) -> bool {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return false;
    };
    let table = super::tunnel::tcp_table();
    if table.is_empty() {
        // NOTE: outside Linux there is no such table, and only the random token guards the page.
        return true;
    }
    let uid = nix::unistd::getuid().as_raw();
    table
        .iter()
        .find(|e| e.local == peer && e.remote == local)
        .is_some_and(|e| e.uid == uid)
}

/// Builds the page: a form that the browser posts at once, with a button for browsers without
/// scripts.
fn page(tunnel_port: u16, user: &str, password: &str, csrf: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Signing in to RStudio Server</title></head>\n\
         <body onload=\"document.forms[0].submit()\">\n\
         <form method=\"post\" action=\"http://127.0.0.1:{tunnel_port}/auth-do-sign-in\">\n\
         <input type=\"hidden\" name=\"username\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"password\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"staySignedIn\" value=\"1\">\n\
         <input type=\"hidden\" name=\"persist\" value=\"1\">\n\
         <input type=\"hidden\" name=\"appUri\" value=\"\">\n\
         <input type=\"hidden\" name=\"rs-csrf-token\" value=\"{csrf}\">\n\
         <noscript><button type=\"submit\">Sign in to RStudio Server</button></noscript>\n\
         </form></body></html>\n",
        escape(user),
        escape(password)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the system random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens `url` in the user's browser. The address is no secret: the page it names is served
/// once, to this user.
pub fn open_browser(url: &str) -> bool {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let child = Command::new(program)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(mut child) => {
            // xdg-open returns once the browser has the address; reap it without blocking.
            std::thread::spawn(move || {
                let _ = wait_timeout::ChildExt::wait_timeout(&mut child, Duration::from_secs(30));
                let _ = child.kill();
                let _ = child.wait();
            });
            true
        }
        Err(err) => {
            tracing::debug!("cannot run {program}: {err}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str) -> std::io::Result<String> {
        let rest = url.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_once('/').unwrap();
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /{path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }

    #[test]
    fn page_is_served_once() {
        let page = serve(8787, "al\"ice", "p<w>&'").unwrap();
        let wrong = page.url.rsplit_once('/').unwrap().0.to_owned() + "/nope";
        assert!(get(&wrong).unwrap().starts_with("HTTP/1.0 404"));
        let text = get(&page.url).unwrap();
        assert!(text.starts_with("HTTP/1.0 200"), "{text}");
        assert!(text.contains("action=\"http://127.0.0.1:8787/auth-do-sign-in\""));
        assert!(text.contains("value=\"al&quot;ice\""));
        assert!(text.contains("value=\"p&lt;w&gt;&amp;&#39;\""));
        let cookie = text
            .lines()
            .find(|l| l.starts_with("Set-Cookie: rs-csrf-token="))
            .unwrap();
        let value = cookie.split('=').nth(1).unwrap().split(';').next().unwrap();
        assert!(text.contains(&format!("name=\"rs-csrf-token\" value=\"{value}\"")));
        // The listener closes right after the page was sent.
        let deadline = Instant::now() + Duration::from_secs(5);
        while get(&page.url).is_ok() {
            assert!(Instant::now() < deadline, "the page is still served");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
