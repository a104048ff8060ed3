//! Controls of a running interactive execution that are not the container daemon's:
//! bytes for the program's stdin, closing it, and signals to its process group (the
//! server's WebSocket route drives them). The agent receives them as `Stdin`,
//! `StdinClose` and `Signal` frames.

use tokio::sync::mpsc;

/// Input for a running interactive execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Bytes for the program's standard input.
    Stdin(Vec<u8>),
    /// Close the program's standard input.
    CloseStdin,
    /// Deliver a signal (number) to the program's process group.
    Signal(i32),
}

/// Feeds a running interactive execution (the `Engine` trait's `execute_interactive`).
#[derive(Debug, Clone)]
pub struct Controller {
    tx: mpsc::Sender<Control>,
}

impl Controller {
    /// A controller and the receiving end the execution reads its controls from (for
    /// implementations of the `Engine` trait's `execute_interactive`).
    pub fn channel() -> (Controller, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(64);
        (Controller { tx }, rx)
    }

    /// Sends input; false once the execution has ended.
    pub async fn send(&self, control: Control) -> bool {
        self.tx.send(control).await.is_ok()
    }
}

/// Parses a signal name (`SIGINT`, `INT`, `SIGTERM`, `SIGKILL`, `SIGHUP`, `SIGQUIT`).
pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name.trim_start_matches("SIG") {
        "INT" => 2,
        "TERM" => 15,
        "KILL" => 9,
        "HUP" => 1,
        "QUIT" => 3,
        _ => return None,
    })
}

/// The name (`SIGINT`…) of a signal [`signal_number`] knows.
pub fn signal_name(number: i32) -> Option<&'static str> {
    Some(match number {
        2 => "SIGINT",
        15 => "SIGTERM",
        9 => "SIGKILL",
        1 => "SIGHUP",
        3 => "SIGQUIT",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_with_or_without_the_prefix() {
        assert_eq!(signal_number("SIGINT"), Some(2));
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("SIGSTOP"), None);
        for name in ["SIGINT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGQUIT"] {
            assert_eq!(signal_number(name).and_then(signal_name), Some(name));
        }
    }

    #[tokio::test]
    async fn a_controller_reports_when_the_execution_has_ended() {
        let (controller, mut rx) = Controller::channel();
        assert!(controller.send(Control::Stdin(b"x".to_vec())).await);
        assert_eq!(rx.recv().await, Some(Control::Stdin(b"x".to_vec())));
        drop(rx);
        assert!(!controller.send(Control::CloseStdin).await);
    }
}
