//! A Jetstream stand-in: a real websocket server on a loopback port that plays fixture events
//! to every connection, then any event pushed later, and otherwise stays open and silent (so a
//! source reading it never ends).

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Message;

pub struct JetstreamStandIn {
    /// The `ws://…/subscribe` address, for `--source jetstream:URL`.
    pub url: String,
    pushed: broadcast::Sender<String>,
}

impl JetstreamStandIn {
    /// Serves `lines` to each connection once `gate` is open.
    pub fn start(lines: Vec<String>, gate: watch::Receiver<bool>) -> JetstreamStandIn {
        let (pushed, _) = broadcast::channel::<String>(1024);
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = pushed.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    let (lines, mut gate, mut later) = (lines.clone(), gate.clone(), sender.subscribe());
                    tokio::spawn(async move {
                        let Ok(socket) = tokio_tungstenite::accept_async(tcp).await else { return };
                        let (mut sink, mut stream) = socket.split();
                        let _ = gate.wait_for(|open| *open).await;
                        for line in lines {
                            if sink.send(Message::text(line)).await.is_err() {
                                return;
                            }
                        }
                        loop {
                            tokio::select! {
                                line = later.recv() => match line {
                                    Ok(line) => if sink.send(Message::text(line)).await.is_err() { return },
                                    Err(_) => return,
                                },
                                message = stream.next() => if !matches!(message, Some(Ok(_))) { return },
                            }
                        }
                    });
                }
            });
        });
        JetstreamStandIn { url: format!("ws://{}/subscribe", rx.recv().unwrap()), pushed }
    }

    /// Plays `line` to every open connection; false when none is open.
    pub fn push(&self, line: String) -> bool {
        self.pushed.send(line).is_ok()
    }
}
