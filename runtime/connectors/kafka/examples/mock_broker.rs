//! Keeps a librdkafka mock cluster open for other processes (benchmarks,
//! trying things by hand, the e2e's `kafka` pod): prints its bootstrap
//! servers, creates the topics named as `name:partitions` arguments, and runs
//! until stdin closes.
//!
//!     cargo run -p weir-kafka --features testing --example mock_broker -- orders:4
//!
//! With `--listen ADDR` it also accepts clients at ADDR (a pod's address and
//! port 9092, say), passing each connection through to the cluster's
//! bootstrap server, and runs until it is killed. The cluster's metadata
//! names its brokers at their own loopback ports, which clients on the same
//! host (network namespace) reach directly.
//!
//!     mock_broker --listen 127.0.1.7:9092 orders:4 order-alerts:1

use std::io::Read;
use std::net::{TcpListener, TcpStream};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.iter().position(|a| a == "--listen") {
        Some(i) if i + 1 < args.len() => {
            let addr = args.remove(i + 1);
            args.remove(i);
            Some(addr)
        }
        Some(_) => fail("--listen: expected an address, such as 127.0.0.1:9092"),
        None => None,
    };
    let kafka = weir_kafka::testing::MockKafka::start(1);
    for arg in &args {
        let (name, partitions) = arg.split_once(':').unwrap_or((arg, "1"));
        let partitions = partitions.parse().unwrap_or_else(|_| fail(&format!("{arg}: expected TOPIC:PARTITIONS")));
        kafka.create_topic(name, partitions);
    }
    let bootstrap = kafka.bootstrap();
    println!("{bootstrap}");
    match listen {
        None => {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        Some(addr) => {
            let listener = TcpListener::bind(&addr).unwrap_or_else(|e| fail(&format!("--listen {addr}: {e}")));
            println!("listening on {addr}");
            let upstream = bootstrap.split(',').next().unwrap_or_default().to_string();
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                std::thread::spawn(move || pass_through(client, &upstream));
            }
        }
    }
}

/// Copies bytes both ways between `client` and a new connection to `upstream`.
fn pass_through(client: TcpStream, upstream: &str) {
    let Ok(server) = TcpStream::connect(upstream) else { return };
    let (Ok(mut client_in), Ok(mut server_in)) = (client.try_clone(), server.try_clone()) else { return };
    let (mut client_out, mut server_out) = (client, server);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

fn fail(message: &str) -> ! {
    eprintln!("mock_broker: {message}");
    std::process::exit(2);
}
