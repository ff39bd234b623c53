use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A connected pair: (the end handed to the loop, the test's end).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (a, b)
}

#[test]
fn a_task_on_the_loop_reads_and_writes_its_socket_as_it_becomes_ready() {
    let l = start("test-loop".into()).unwrap();
    let (theirs, mut ours) = pair();
    l.spawn(async move {
        let mut s = LoopStream::from_std(theirs).unwrap();
        // Echo until the test closes its end: each read waits for the loop to see data.
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
        s.shutdown().await.unwrap();
    });
    for round in 0..50u8 {
        // Each round after the first finds the loop parked in its wait.
        std::thread::sleep(Duration::from_millis(1));
        ours.write_all(&[round; 3]).unwrap();
        let mut got = [0u8; 3];
        ours.read_exact(&mut got).unwrap();
        assert_eq!(got, [round; 3]);
    }
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    ours.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "the task shut its side down once the test did"
    );
}

#[test]
fn a_write_the_socket_cannot_take_waits_until_the_peer_reads() {
    let l = start("test-loop".into()).unwrap();
    let (theirs, mut ours) = pair();
    const LEN: usize = 8 << 20;
    let (done_tx, done_rx) = mpsc::channel();
    l.spawn(async move {
        let mut s = LoopStream::from_std(theirs).unwrap();
        // Far more than the socket buffers hold: the writes wait for writability.
        s.write_all(&vec![7u8; LEN]).await.unwrap();
        done_tx.send(()).unwrap();
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "8 MiB cannot be written before the peer reads"
    );
    let mut got = vec![0u8; LEN];
    ours.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|b| *b == 7));
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_timer_fires_no_earlier_than_its_deadline_and_a_reset_moves_it() {
    let l = start("test-loop".into()).unwrap();
    let (tx, rx) = mpsc::channel();
    l.spawn(async move {
        let t0 = Instant::now();
        let mut sleep = sleep_until(t0 + Duration::from_secs(3600));
        let mut sleep = Pin::new(&mut sleep);
        assert!(!sleep.is_elapsed());
        sleep.as_mut().reset(t0 + Duration::from_millis(30));
        (&mut sleep).await;
        assert!(sleep.is_elapsed());
        tx.send(t0.elapsed()).unwrap();
    });
    let took = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(took >= Duration::from_millis(30), "fired after {took:?}");
}

#[test]
fn a_task_woken_from_another_thread_runs_on_the_loop() {
    let l = start("test-loop".into()).unwrap();
    let notify = Arc::new(tokio::sync::Notify::new());
    let (tx, rx) = mpsc::channel();
    let n = notify.clone();
    l.spawn(async move {
        n.notified().await;
        tx.send(std::thread::current().name().map(str::to_owned))
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        rx.try_recv().is_err(),
        "the task waits for its notification"
    );
    notify.notify_one();
    let name = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(name.as_deref(), Some("test-loop"));
}

#[test]
fn timers_of_ended_tasks_leave_the_heap() {
    let l = start("test-loop".into()).unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..1000 {
        // Each task arms a far timer, resets it and ends: its entries go stale.
        l.spawn(async {
            let mut s = sleep_until(Instant::now() + Duration::from_secs(3600));
            Pin::new(&mut s).reset(Instant::now() + Duration::from_secs(7200));
        });
    }
    l.spawn(async move {
        let local = local().unwrap();
        let len = local.timers.borrow().len();
        tx.send((len, local.sleeps.get())).unwrap();
    });
    let (len, sleeps) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(sleeps, 0);
    assert!(len <= 64 + 2, "{len} entries left for no live timer");
}

#[test]
fn a_stream_cannot_be_made_off_a_loop_thread() {
    let (theirs, _ours) = pair();
    let err = LoopStream::from_std(theirs).unwrap_err();
    assert!(err.to_string().contains("tunnel loop"), "{err}");
}

#[test]
fn stopping_a_loop_drops_its_tasks_and_closes_their_sockets() {
    let l = start("test-loop".into()).unwrap();
    let (theirs, mut ours) = pair();
    l.spawn(async move {
        let _held = LoopStream::from_std(theirs).unwrap();
        std::future::pending::<()>().await;
    });
    std::thread::sleep(Duration::from_millis(20));
    l.stop();
    let mut buf = [0u8; 1];
    let read = ours.read(&mut buf);
    assert!(
        matches!(read, Ok(0)),
        "closed once the loop stops: {read:?}"
    );
}
