//! The interactive `tantra run` session, driven through a real pseudo-terminal: with a
//! terminal on stdin and no prompt, `run` prints a `>>> ` prompt, answers each line with the
//! same text a one-shot run generates, and ends on `/bye` or on end of input (Ctrl-D).
//!
//! The terminal is a Linux pty opened with libc (`posix_openpt`, `ptsname_r`), the child's
//! stdin, stdout and stderr all on its slave side, as in a shell; the test reads the master.
#![cfg(target_os = "linux")]
// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{create_samples, ok_json, tantra};

/// A pty: the master as a file, the slave as an fd to hand to the child.
fn open_pty() -> (File, OwnedFd) {
    // SAFETY: plain libc calls on fds this function owns; every result is checked.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            slave >= 0,
            "open slave: {}",
            std::io::Error::last_os_error()
        );
        // No echo, so that what the master reads is only what tantra wrote; the line
        // discipline stays canonical, so Ctrl-D at the start of a line is end of input.
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut t), 0);
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
        (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    }
}

/// A `tantra` child on a terminal, with everything it writes collected.
struct Session {
    child: Child,
    master: File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Session {
    fn start(root: &std::path::Path, args: &[&str]) -> Session {
        let (master, slave) = open_pty();
        let child = common::bin()
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child has exited and the slave is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Session {
            child,
            master,
            seen,
        }
    }

    /// Everything written so far, without the `\r` the terminal adds before each `\n`.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).replace('\r', "")
    }

    /// Waits (up to two minutes) until the output holds `n` prompts; returns the output.
    fn wait_prompts(&mut self, n: usize) -> String {
        let start = Instant::now();
        loop {
            let t = self.text();
            if t.matches(">>> ").count() >= n {
                return t;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tantra exited ({status}) before prompt {n}:\n{t}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no prompt {n} after two minutes:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits (up to a minute) for the child to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("tantra did not exit:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn interactive_run_answers_each_line_and_ends_on_bye_or_eof() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    create_samples(&root, "mamba", "safetensors");
    // What a one-shot (greedy) run generates for the prompt the session will get.
    let one_shot = ok_json(&tantra(
        &root,
        &["run", "mamba", "hello", "--max-new-tokens", "12", "--json"],
    ));
    let expected = one_shot["text"].as_str().unwrap().replace('\r', "");
    assert_eq!(
        one_shot["output_ids"].as_array().unwrap().len(),
        one_shot["input_ids"].as_array().unwrap().len() + 12
    );

    // A line is answered, an empty line only prompts again, /bye ends the session.
    let mut s = Session::start(&root, &["run", "mamba", "--max-new-tokens", "12"]);
    let first = s.wait_prompts(1);
    assert!(first.contains("one prompt per line"), "{first}");
    s.send(b"hello\n");
    let answered = s.wait_prompts(2);
    let after_first = &answered[answered.find(">>> ").unwrap() + 4..];
    assert!(
        after_first.contains(&expected),
        "the session's answer is not the one-shot run's text {expected:?}:\n{answered}"
    );
    assert!(
        after_first.contains("prefill: ") && after_first.contains("tokens/s"),
        "no speeds after the answer:\n{answered}"
    );
    s.send(b"\n");
    s.wait_prompts(3);
    s.send(b"/bye\n");
    assert_eq!(s.wait_exit(), Some(0), "{}", s.text());
    let all = s.text();
    assert_eq!(all.matches(">>> ").count(), 3, "{all}");
    assert_eq!(
        all.matches("prefill:").count(),
        1,
        "one answer only:\n{all}"
    );

    // End of input (Ctrl-D at the start of a line) ends it too, without generating.
    let mut s = Session::start(&root, &["run", "mamba:sample_small"]);
    s.wait_prompts(1);
    s.send(&[4]);
    assert_eq!(s.wait_exit(), Some(0), "{}", s.text());
    let all = s.text();
    assert_eq!(all.matches(">>> ").count(), 1, "{all}");
    assert!(!all.contains("prefill:"), "{all}");
}
