//! A DNS server for tests on loopback (UDP): answers SRV and A questions from a fixed
//! table, NXDOMAIN for other names, an empty answer for other types. Enough for the
//! connector's SRV lookups (RFC 1035 wire format, no compression in what it writes except
//! the pointer to the question).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;

#[derive(Debug, Clone)]
pub enum Answer {
    /// priority, weight, port, target
    Srv(u16, u16, u16, String),
    A(Ipv4Addr),
}

pub struct FakeDns {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDns {
    /// Serves `records` (names without the trailing dot, any case).
    pub async fn start(records: Vec<(&str, Answer)>) -> std::io::Result<FakeDns> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        let mut table: HashMap<String, Vec<Answer>> = HashMap::new();
        for (name, answer) in records {
            table
                .entry(name.to_ascii_lowercase())
                .or_default()
                .push(answer);
        }
        let table = Arc::new(table);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(reply) = respond(&buf[..n], &table) {
                    let _ = sock.send_to(&reply, from).await;
                }
            }
        });
        Ok(FakeDns { addr, task })
    }
}

const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;

fn respond(query: &[u8], table: &HashMap<String, Vec<Answer>>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let known = table.get(&name);
    let answers: Vec<&Answer> = known
        .map(|a| {
            a.iter()
                .filter(|a| match a {
                    Answer::Srv(..) => qtype == TYPE_SRV,
                    Answer::A(_) => qtype == TYPE_A,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]);
    // Response, authoritative, recursion desired/available; NXDOMAIN for unknown names.
    let rcode = if known.is_some() { 0 } else { 3 };
    out.extend_from_slice(&[0x85, 0x80 | rcode]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    for a in answers {
        out.extend_from_slice(&[0xc0, 12]);
        let (rtype, rdata) = match a {
            Answer::A(ip) => (TYPE_A, ip.octets().to_vec()),
            Answer::Srv(priority, weight, port, target) => {
                let mut d = Vec::new();
                d.extend_from_slice(&priority.to_be_bytes());
                d.extend_from_slice(&weight.to_be_bytes());
                d.extend_from_slice(&port.to_be_bytes());
                for label in target.split('.').filter(|l| !l.is_empty()) {
                    d.push(label.len() as u8);
                    d.extend_from_slice(label.as_bytes());
                }
                d.push(0);
                (TYPE_SRV, d)
            }
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
