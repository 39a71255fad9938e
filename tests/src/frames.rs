//! Frame builders and an independent checksum check (etherparse), so the data path's own
//! checksum code is never used to judge itself.
use std::net::Ipv4Addr;

use etherparse::{PacketBuilder, SlicedPacket, TcpHeader};

pub const ETH_HDR: usize = 14;

#[derive(Clone, Copy, Debug)]
pub struct Tcp {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ack_flag: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub window: u16,
    pub ttl: u8,
}

impl Tcp {
    pub fn new(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Self {
        Self {
            smac: [0x02, 0, 0, 0, 0, 0x01],
            dmac: [0x02, 0, 0, 0, 0, 0x02],
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            seq: 1000,
            ack: 0,
            syn: false,
            ack_flag: false,
            fin: false,
            rst: false,
            psh: false,
            window: 64240,
            ttl: 64,
        }
    }
    pub fn syn(mut self) -> Self {
        self.syn = true;
        self
    }
    pub fn ack(mut self, ack: u32) -> Self {
        self.ack_flag = true;
        self.ack = ack;
        self
    }
    pub fn fin(mut self) -> Self {
        self.fin = true;
        self
    }
    pub fn rst(mut self) -> Self {
        self.rst = true;
        self
    }
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }
    pub fn macs(mut self, smac: [u8; 6], dmac: [u8; 6]) -> Self {
        self.smac = smac;
        self.dmac = dmac;
        self
    }

    /// Builds the frame with correct checksums; a SYN carries an MSS option like Linux's.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(self.smac, self.dmac)
            .ipv4(self.src.octets(), self.dst.octets(), self.ttl)
            .tcp(self.sport, self.dport, self.seq, self.window);
        let mut b = b;
        if self.syn {
            b = b.syn();
            b = b
                .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
                .expect("mss option fits");
        }
        if self.ack_flag {
            b = b.ack(self.ack);
        }
        if self.fin {
            b = b.fin();
        }
        if self.rst {
            b = b.rst();
        }
        if self.psh {
            b = b.psh();
        }
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).expect("frame builds");
        out
    }
}

/// Parsed view of an output frame, with checksums verified independently.
#[derive(Debug)]
pub struct Parsed {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub tcp: TcpHeader,
    pub payload: Vec<u8>,
    pub ip_csum_ok: bool,
    pub tcp_csum_ok: bool,
    pub ttl: u8,
    pub ip_total_len: u16,
}

pub fn parse(frame: &[u8]) -> anyhow::Result<Parsed> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| anyhow::anyhow!("parse: {e}"))?;
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
        anyhow::bail!("not ethernet");
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        anyhow::bail!("not ipv4");
    };
    let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
        anyhow::bail!("not tcp");
    };
    let iph = ip.header().to_header();
    let tcph = tcp.to_header();
    let payload = tcp.payload().to_vec();
    let ip_csum_ok = iph.calc_header_checksum() == iph.header_checksum;
    let tcp_csum_ok = tcph
        .calc_checksum_ipv4(&iph, &payload)
        .map(|c| c == tcph.checksum)
        .unwrap_or(false);
    Ok(Parsed {
        smac: eth.source(),
        dmac: eth.destination(),
        src: Ipv4Addr::from(iph.source),
        dst: Ipv4Addr::from(iph.destination),
        sport: tcph.source_port,
        dport: tcph.destination_port,
        ttl: iph.time_to_live,
        ip_total_len: iph.total_len,
        tcp: tcph,
        payload,
        ip_csum_ok,
        tcp_csum_ok,
    })
}
