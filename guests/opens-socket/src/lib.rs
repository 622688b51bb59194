//! Hostile plugin: on any process-message, tries the network — TCP connect to
//! 127.0.0.1:80 (`tcp-connect-local`) and 8.8.8.8:53 (`tcp-connect-remote`), TCP listen
//! on 127.0.0.1:0 (`tcp-listen`), UDP bind on 0.0.0.0:0 (`udp-bind`), a UDP datagram to
//! 127.0.0.1:53 from a fresh bind (`udp-send`; the bind's error if that fails), and name
//! lookups of `localhost:80` (`dns-localhost`) and `example.com:80` (`dns-remote`) — and
//! emits one `socket-report` message with those string fields: "allowed" or
//! "denied: <the error>". timer-event answers at once.

use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

fn outcome<T>(result: std::io::Result<T>) -> Value {
    Value::String(match result {
        Ok(_) => "allowed".to_owned(),
        Err(e) => format!("denied: {e}"),
    })
}

struct OpensSocket;

impl Guest for OpensSocket {
    fn process_message(_: &Message) -> Result<(), Failure> {
        let udp_send = UdpSocket::bind("0.0.0.0:0").and_then(|socket| socket.send_to(b"x", "127.0.0.1:53"));
        corral_guest::emit(
            &OutMessage::new("socket-report")
                .field("tcp-connect-local", outcome(TcpStream::connect("127.0.0.1:80")))
                .field("tcp-connect-remote", outcome(TcpStream::connect("8.8.8.8:53")))
                .field("tcp-listen", outcome(TcpListener::bind("127.0.0.1:0")))
                .field("udp-bind", outcome(UdpSocket::bind("0.0.0.0:0")))
                .field("udp-send", outcome(udp_send))
                .field("dns-localhost", outcome("localhost:80".to_socket_addrs()))
                .field("dns-remote", outcome("example.com:80".to_socket_addrs())),
        );
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(OpensSocket);
