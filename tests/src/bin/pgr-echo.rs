//! A stand-in PostgreSQL node for network tests: on each connection it sends its name and a
//! newline, then echoes every byte back until the client closes.
use std::env;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let mut args = env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "node".into());
    let addr = args.next().unwrap_or_else(|| "0.0.0.0:5432".into());
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let banner = format!("{name}\n");
        tokio::spawn(async move {
            if s.write_all(banner.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 16384];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
