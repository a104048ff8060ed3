//! Unit tests of the egress proxy with a fake network that records every lookup and
//! every dial, so "refused before anything is dialled" is proved, not assumed. This file
//! holds the fake network and the helpers; the tests are grouped by topic: [`parsing`]
//! (request heads and host spellings), [`host_rules`] (lists, ports, Host headers),
//! [`refusals`] (addresses refused before dialling), [`relay`] (relaying and logs) and
//! [`connections`] (accepting, connection caps, idle timeout, socket directories).

mod connections;
mod host_rules;
mod parsing;
mod refusals;
mod relay;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use isol8_protocol::NetworkFilter;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// A network whose names resolve from a table and whose dials reach in-memory servers.
#[derive(Default)]
struct FakeNet {
    names: Vec<(&'static str, Vec<IpAddr>)>,
    resolved: Mutex<Vec<String>>,
    dialled: Mutex<Vec<SocketAddr>>,
    /// The server side of each dialled connection.
    servers: Mutex<Vec<DuplexStream>>,
}

impl FakeNet {
    fn with(names: &[(&'static str, &str)]) -> Arc<FakeNet> {
        Arc::new(FakeNet {
            names: names
                .iter()
                .map(|(n, ip)| (*n, vec![ip.parse().expect("ip")]))
                .collect(),
            ..Default::default()
        })
    }
    fn dialled(&self) -> Vec<SocketAddr> {
        self.dialled.lock().expect("lock").clone()
    }
    fn resolved(&self) -> Vec<String> {
        self.resolved.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl Net for FakeNet {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.resolved.lock().expect("lock").push(host.to_string());
        self.names
            .iter()
            .find(|(n, _)| *n == host)
            .map(|(_, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<Box<dyn Upstream>> {
        self.dialled.lock().expect("lock").push(addr);
        let (a, b) = tokio::io::duplex(1 << 16);
        self.servers.lock().expect("lock").push(b);
        Ok(Box::new(a))
    }
}

fn rules(white: &[&str], black: &[&str]) -> Rules {
    Rules::new(
        &NetworkFilter {
            whitelist: white.iter().map(|s| s.to_string()).collect(),
            blacklist: black.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        &[],
        false,
    )
    .expect("rules")
}

fn target(head: &str) -> Target {
    parse_request(head.as_bytes()).expect("parse")
}

async fn roundtrip(
    net: Arc<FakeNet>,
    shared: Shared,
    request: &[u8],
) -> (String, Option<DuplexStream>) {
    let (mut client, proxy_side) = tokio::io::duplex(1 << 16);
    let task = {
        let net = net.clone();
        tokio::spawn(async move { serve_connection(proxy_side, net.as_ref(), &shared).await })
    };
    client.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = client.read(&mut buf).await.expect("read");
    let server = net.servers.lock().expect("lock").pop();
    drop(client);
    if server.is_none() {
        task.await.expect("task");
    }
    (String::from_utf8_lossy(&buf[..n]).into_owned(), server)
}

/// Waits (up to a generous bound, only to avoid hanging) for the proxy to dial, and
/// returns the upstream's end of that connection.
async fn next_server(net: &FakeNet) -> DuplexStream {
    for _ in 0..2000 {
        if let Some(s) = net.servers.lock().expect("lock").pop() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the proxy never dialled upstream");
}

/// Starts serving one client connection; returns the client's end and the task.
fn connect(net: &Arc<FakeNet>, shared: &Shared) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, proxy_side) = tokio::io::duplex(1 << 16);
    let (net, shared) = (net.clone(), shared.clone());
    let task =
        tokio::spawn(async move { serve_connection(proxy_side, net.as_ref(), &shared).await });
    (client, task)
}

fn open_rules(shared: &Shared, deny: &[&str]) {
    begin(shared, Arc::new(rules(&[], deny)), true);
}
