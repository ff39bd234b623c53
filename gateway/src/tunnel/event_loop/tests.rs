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

/// Run `task` on a loop of its own and return what it returned.
fn on_a_loop<T: Send + 'static>(task: impl Future<Output = T> + Send + 'static) -> T {
    let l = start("test-loop".into()).unwrap();
    let (tx, rx) = mpsc::channel();
    l.spawn(async move {
        let _ = tx.send(task.await);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the task finished on the loop")
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
    // More than loopback's send and receive buffers hold together at their largest defaults.
    const LEN: usize = 32 << 20;
    let (done_tx, done_rx) = mpsc::channel();
    l.spawn(async move {
        let mut s = LoopStream::from_std(theirs).unwrap();
        // Far more than the socket buffers hold: the writes wait for writability.
        s.write_all(&vec![7u8; LEN]).await.unwrap();
        done_tx.send(()).unwrap();
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "32 MiB cannot be written before the peer reads"
    );
    let mut got = vec![0u8; LEN];
    ours.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|b| *b == 7));
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_timer_fires_no_earlier_than_its_deadline_and_a_reset_moves_it() {
    let took = on_a_loop(async {
        let t0 = Instant::now();
        let mut sleep = sleep_until(t0 + Duration::from_secs(3600));
        let mut sleep = Pin::new(&mut sleep);
        assert!(!sleep.is_elapsed());
        sleep.as_mut().reset(t0 + Duration::from_millis(30));
        (&mut sleep).await;
        assert!(sleep.is_elapsed());
        t0.elapsed()
    });
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
fn timers_that_were_reset_or_dropped_leave_the_heap_while_a_live_one_waits() {
    let (len, sleeps) = on_a_loop(async {
        let now = Instant::now();
        // A live timer due before all the others keeps their entries from reaching the top.
        let _live = sleep_until(now + Duration::from_secs(3600));
        for i in 0..1000u64 {
            let mut s = sleep_until(now + Duration::from_secs(7200 + i));
            Pin::new(&mut s).reset(now + Duration::from_secs(10800 + i));
        }
        let (len, sleeps) = {
            let local = local().unwrap();
            let len = local.timers.borrow().len();
            (len, local.sleeps.get())
        };
        // The live one's entry survived the pruning: moved close, it fires.
        let mut live = _live;
        Pin::new(&mut live).reset(Instant::now() + Duration::from_millis(5));
        live.await;
        (len, sleeps)
    });
    assert_eq!(sleeps, 1);
    assert!(
        len <= 2 + 64 + 2,
        "{len} entries kept for one live timer after 2,000 stale ones"
    );
}

#[test]
fn a_timer_reset_to_later_does_not_fire_at_its_old_deadline() {
    let (early, took) = on_a_loop(async {
        let t0 = Instant::now();
        let mut moved = sleep_until(t0 + Duration::from_millis(10));
        Pin::new(&mut moved).reset(t0 + Duration::from_millis(300));
        sleep_until(t0 + Duration::from_millis(100)).await;
        // Fired before its deadline, not merely seen late by a loaded machine.
        let early = moved.is_elapsed() && t0.elapsed() < Duration::from_millis(300);
        (&mut moved).await;
        (early, t0.elapsed())
    });
    assert!(!early, "fired at the deadline it was moved from");
    assert!(took >= Duration::from_millis(300), "fired after {took:?}");
}

/// Wakes its own task and yields, `n` times.
struct YieldTimes(u32);

impl Future for YieldTimes {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn a_task_that_wakes_itself_on_its_thread_is_polled_again() {
    // As a tunnel direction does after its read budget.
    on_a_loop(YieldTimes(100));
}

#[test]
fn a_short_read_waits_for_the_next_event_instead_of_reading_again() {
    let l = start("test-loop".into()).unwrap();
    let (theirs, mut ours) = pair();
    let (to_test, from_task) = mpsc::channel();
    let (to_task, from_test) = mpsc::channel::<()>();
    l.spawn(async move {
        let mut s = LoopStream::from_std(theirs).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        // More arrives before the loop has waited again (the test writes it now).
        to_test.send(n).unwrap();
        from_test.recv().unwrap();
        let mut rb = ReadBuf::new(&mut buf);
        let waker = Waker::noop();
        let again = Pin::new(&mut s).poll_read(&mut Context::from_waker(waker), &mut rb);
        to_test.send(usize::from(again.is_pending())).unwrap();
        // The event for what arrived lets it be read.
        let n = s.read(&mut buf).await.unwrap();
        to_test.send(n).unwrap();
    });
    ours.write_all(b"abc").unwrap();
    assert_eq!(from_task.recv_timeout(Duration::from_secs(10)), Ok(3));
    ours.write_all(b"defg").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    to_task.send(()).unwrap();
    assert_eq!(
        from_task.recv_timeout(Duration::from_secs(10)),
        Ok(1),
        "after a short read the socket is not read again before its next event"
    );
    assert_eq!(from_task.recv_timeout(Duration::from_secs(10)), Ok(4));
}

#[test]
fn a_panicking_task_is_dropped_alone_and_the_loop_goes_on() {
    let l = start("test-loop".into()).unwrap();
    let (theirs, mut ours) = pair();
    l.spawn(async move {
        let _held = LoopStream::from_std(theirs).unwrap();
        YieldTimes(1).await;
        panic!("a tunnel's bug");
    });
    let mut buf = [0u8; 1];
    let read = ours.read(&mut buf);
    assert!(
        matches!(read, Ok(0)),
        "the panicking task's socket is closed: {read:?}"
    );
    let (tx, rx) = mpsc::channel();
    l.spawn(async move {
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the loop still runs tasks");
}

#[test]
fn a_task_handed_to_a_stopped_loop_is_dropped_with_its_socket() {
    let l = start("test-loop".into()).unwrap();
    l.stop();
    std::thread::sleep(Duration::from_millis(20));
    let (theirs, mut ours) = pair();
    l.spawn(async move {
        let _held = theirs;
        std::future::pending::<()>().await;
    });
    let mut buf = [0u8; 1];
    let read = ours.read(&mut buf);
    assert!(matches!(read, Ok(0)), "closed at once: {read:?}");
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

#[test]
fn data_and_the_peers_end_arriving_together_are_both_read() {
    let (theirs, mut ours) = pair();
    // Both are there before the task first reads: one event says readable and read-closed.
    ours.write_all(b"abc").unwrap();
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let reads = on_a_loop(async move {
        let mut s = LoopStream::from_std(theirs).unwrap();
        let mut buf = [0u8; 64];
        // Make sure the loop has taken the event before the short read.
        YieldTimes(2).await;
        let first = s.read(&mut buf).await.unwrap();
        let second = s.read(&mut buf).await.unwrap();
        (first, second)
    });
    assert_eq!(
        reads,
        (3, 0),
        "the end is read after a short read that came with it"
    );
}

#[test]
fn a_loop_that_ends_without_being_stopped_drops_what_waits_for_it_and_takes_no_more() {
    let l = start("test-loop".into()).unwrap();
    let (theirs, mut ours) = pair();
    // Handed over but not yet taken when the loop's thread leaves it (as on a failure).
    l.inbox.spawned.lock().unwrap().push(Box::pin(async move {
        let _held = theirs;
        std::future::pending::<()>().await;
    }));
    drop(Closed(l.inbox.clone()));
    let mut buf = [0u8; 1];
    assert!(
        matches!(ours.read(&mut buf), Ok(0)),
        "dropped, its socket closed"
    );
    let (theirs, mut ours) = pair();
    l.spawn(async move {
        let _held = theirs;
        std::future::pending::<()>().await;
    });
    assert!(
        matches!(ours.read(&mut buf), Ok(0)),
        "a later spawn is dropped too"
    );
}
