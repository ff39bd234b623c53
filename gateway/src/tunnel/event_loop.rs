//! The tunnel threads' event loop: one `epoll` set (through mio), the tasks it drives, their
//! sockets ([`LoopStream`]) and timers ([`LoopSleep`]). It does what the tunnel threads need
//! and nothing more, so a wake-up costs less than a general runtime's: an event names its
//! socket, which names its task and marks the socket ready, and the task is polled at once,
//! with no waker clone, no task state machine and no timer wheel to turn. Readiness is
//! edge-triggered and kept as tokio keeps it: a socket is read or written only while the loop
//! has seen it ready, and a read or write that returns less than was asked for means it no
//! longer is (a new event will say when it is again), so a wake-up makes the same system calls
//! as under tokio (`epoll_wait`, a read, a write). They are made directly (rustix) rather than
//! through glibc's wrappers, which in a process with threads mark each call as a cancellation
//! point.
//!
//! A socket or timer belongs to the task that made it (the loop wakes that task for it) and is
//! polled by that task only, as a tunnel's are. A task that panics is dropped alone, as on
//! tokio; if the loop itself ends (its `epoll` set fails, or the thread unwinds), it stops
//! taking tasks, and those handed to it are dropped (their sockets closed, their admission
//! released) rather than left waiting.
//!
//! Tasks come from other threads ([`LoopHandle::spawn`]) and are woken from other threads
//! through their waker (the drain signal), both through the loop's `eventfd`. A task woken on
//! its own thread (a tunnel direction yielding after its read budget) is queued without it.
//! Timers are a heap of deadlines behind one `timerfd` in the same `epoll` set, set to the
//! earliest: a wake-up for data reads no clock, and the clock is read when the `timerfd` fires
//! or a timer is armed earlier than it. A timer that is reset leaves its old entry behind,
//! which is dropped when it comes up (a tunnel resets its timer only when a deadline is armed
//! or fires, not per frame).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use slab::Slab;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::relay::Timer;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The loop's `eventfd` (tasks spawned or woken from other threads, the stop).
const INBOX: Token = Token(usize::MAX);
/// The loop's `timerfd` (the earliest timer's deadline).
const TIMER: Token = Token(usize::MAX - 1);
/// Most events taken from the kernel per wait.
const EVENTS: usize = 256;

/// What other threads hand a loop.
struct Inbox {
    spawned: Mutex<Vec<Task>>,
    woken: Mutex<Vec<usize>>,
    /// Set with anything put in `spawned` or `woken`, so a turn takes their locks only then.
    posted: AtomicBool,
    stop: AtomicBool,
    waker: mio::Waker,
}

impl Inbox {
    fn drop_spawned(&self) {
        let spawned = std::mem::take(&mut *self.spawned.lock().unwrap_or_else(|p| p.into_inner()));
        drop(spawned);
    }

    /// Tell the loop something was posted (one `eventfd` write until it looks).
    fn ring(&self) {
        if !self.posted.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    fn ring_always(&self) {
        // Fails only if the eventfd is gone, and then the loop is too.
        let _ = self.waker.wake();
    }
}

/// Hands tasks to one loop thread and stops it.
pub struct LoopHandle {
    inbox: Arc<Inbox>,
}

impl LoopHandle {
    /// Run `task` on the loop. Sockets it makes there with [`LoopStream::from_std`] are served
    /// by the loop's event set.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inbox
            .spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::pin(task));
        self.inbox.ring();
        if self.inbox.stop.load(Ordering::Acquire) {
            // The loop is gone or going: the task is dropped unrun.
            self.inbox.drop_spawned();
        }
    }

    /// End the loop: its tasks are dropped (closing their sockets) and the thread returns.
    pub fn stop(&self) {
        self.inbox.stop.store(true, Ordering::Release);
        // Not `ring`: a wake-up another thread posted may already have been taken.
        self.inbox.ring_always();
    }
}

impl Drop for LoopHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A socket's readiness as the loop last saw it.
#[derive(Debug)]
struct Readiness {
    readable: AtomicBool,
    writable: AtomicBool,
    /// The peer's end or an error was seen: reads go on until they say so, however short.
    closed: AtomicBool,
}

/// A registered socket: whose it is and where its readiness goes.
struct Source {
    task: usize,
    ready: Arc<Readiness>,
}

/// A timer's entry in the heap; stale once its timer was reset or dropped.
struct Due {
    at: Instant,
    generation: u64,
    task: usize,
    timer: Arc<TimerState>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.generation) == (other.at, other.generation)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

impl Due {
    /// Whether the timer still waits for this deadline.
    fn live(&self) -> bool {
        self.timer.generation.load(Ordering::Relaxed) == self.generation
    }
}

#[derive(Debug)]
struct TimerState {
    elapsed: AtomicBool,
    generation: AtomicU64,
}

/// What sockets, timers and wakers reach while the loop's thread polls a task.
struct Local {
    inbox: Arc<Inbox>,
    registry: mio::Registry,
    /// The task being polled.
    current: Cell<usize>,
    sources: RefCell<Slab<Source>>,
    timers: RefCell<BinaryHeap<Reverse<Due>>>,
    /// Fires at `armed`, the earliest deadline in `timers` when it was set (or none).
    timerfd: OwnedFd,
    armed: Cell<Option<Instant>>,
    /// Setting the timerfd failed: the loop's waits time out on their own (a millisecond)
    /// and look at the timers after each.
    timerfd_failed: Cell<bool>,
    /// Timers alive on this thread: each has at most one live entry in `timers`, so the heap
    /// is cleared of stale entries once it holds more than twice as many (and a few).
    sleeps: Cell<usize>,
    /// Tasks to poll in the next turn.
    ready: RefCell<Vec<usize>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// This thread's loop, if it is a loop thread (and not tearing down its thread-locals).
fn local() -> Option<Rc<Local>> {
    LOCAL.try_with(|l| l.borrow().clone()).ok().flatten()
}

fn not_on_loop() -> io::Error {
    io::Error::other("not on a tunnel loop thread")
}

/// A task's waker: on its own thread it queues the task; from elsewhere it goes through the
/// inbox and rings the loop.
struct TaskWaker {
    task: usize,
    inbox: Arc<Inbox>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let queued_here = match local() {
            Some(local) if Arc::ptr_eq(&local.inbox, &self.inbox) => {
                local.ready.borrow_mut().push(self.task);
                true
            }
            _ => false,
        };
        if !queued_here {
            self.inbox
                .woken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.task);
            self.inbox.ring();
        }
    }
}

struct Entry {
    task: Task,
    waker: Waker,
    /// The turn it was last polled in (a task named twice in one turn is polled once).
    turn: u64,
}

/// Marks a loop ended when its thread leaves it: spawns from then on are dropped, and so are
/// those handed over and not yet taken.
struct Closed(Arc<Inbox>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
        self.0.drop_spawned();
        // Wake-ups of tasks that are gone: nobody takes them any more.
        drop(std::mem::take(
            &mut *self.0.woken.lock().unwrap_or_else(|p| p.into_inner()),
        ));
    }
}

/// Start a loop on a new thread named `name`.
pub fn start(name: String) -> io::Result<LoopHandle> {
    let poll = mio::Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), INBOX)?;
    let inbox = Arc::new(Inbox {
        spawned: Mutex::new(Vec::new()),
        woken: Mutex::new(Vec::new()),
        posted: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        waker,
    });
    let registry = poll.registry().try_clone()?;
    let timerfd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    registry.register(
        &mut SourceFd(&timerfd.as_raw_fd()),
        TIMER,
        Interest::READABLE,
    )?;
    let theirs = inbox.clone();
    std::thread::Builder::new().name(name).spawn(move || {
        let local = Rc::new(Local {
            inbox: theirs,
            registry,
            current: Cell::new(usize::MAX),
            sources: RefCell::new(Slab::new()),
            timers: RefCell::new(BinaryHeap::new()),
            timerfd,
            armed: Cell::new(None),
            timerfd_failed: Cell::new(false),
            sleeps: Cell::new(0),
            ready: RefCell::new(Vec::new()),
        });
        LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
        // However the loop ends (stopped, failed, unwinding), it takes no more tasks.
        let _closed = Closed(local.inbox.clone());
        let mut tasks = Slab::new();
        run(poll, &local, &mut tasks);
        // Dropping the tasks drops their sockets, which leave the event set (and close).
        drop(tasks);
        LOCAL.with(|l| l.borrow_mut().take());
    })?;
    Ok(LoopHandle { inbox })
}

fn run(mut poll: mio::Poll, local: &Local, tasks: &mut Slab<Entry>) {
    let mut events = Events::with_capacity(EVENTS);
    let mut batch = Vec::new();
    let mut turn = 0u64;
    loop {
        if local.inbox.stop.load(Ordering::Acquire) {
            return;
        }
        adopt(local, tasks);
        turn += 1;
        std::mem::swap(&mut batch, &mut *local.ready.borrow_mut());
        for id in batch.drain(..) {
            let Some(entry) = tasks.get_mut(id) else {
                continue;
            };
            if entry.turn == turn {
                continue;
            }
            entry.turn = turn;
            local.current.set(id);
            let mut cx = Context::from_waker(&entry.waker);
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                entry.task.as_mut().poll(&mut cx).is_ready()
            }));
            match polled {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => {
                    tracing::error!("a tunnel panicked: it is closed, the other tunnels go on");
                }
            }
            // Finished or panicked: its drop is not allowed to end the loop either.
            let task = tasks.remove(id);
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(task)));
        }
        local.current.set(usize::MAX);
        // Timers wake the wait through the timerfd.
        let timeout = if !local.ready.borrow().is_empty() {
            Some(Duration::ZERO)
        } else if local.timerfd_failed.get() {
            Some(Duration::from_millis(1))
        } else {
            None
        };
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "a tunnel thread's event loop failed: its tunnels are closed");
            return;
        }
        let mut timer_fired = false;
        {
            let sources = local.sources.borrow();
            let mut ready = local.ready.borrow_mut();
            for ev in events.iter() {
                if ev.token() == TIMER {
                    timer_fired = true;
                    continue;
                }
                let Some(src) = sources.get(ev.token().0) else {
                    continue;
                };
                if ev.is_read_closed() || ev.is_error() {
                    src.ready.closed.store(true, Ordering::Relaxed);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    src.ready.readable.store(true, Ordering::Relaxed);
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    src.ready.writable.store(true, Ordering::Relaxed);
                }
                ready.push(src.task);
            }
        }
        if timer_fired || local.timerfd_failed.replace(false) {
            fire_timers(local);
        }
    }
}

/// Take the tasks and wake-ups other threads handed over.
fn adopt(local: &Local, tasks: &mut Slab<Entry>) {
    if !local.inbox.posted.swap(false, Ordering::Acquire) {
        return;
    }
    let mut ready = local.ready.borrow_mut();
    let spawned = std::mem::take(
        &mut *local
            .inbox
            .spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for task in spawned {
        let entry = tasks.vacant_entry();
        let id = entry.key();
        let waker = Waker::from(Arc::new(TaskWaker {
            task: id,
            inbox: local.inbox.clone(),
        }));
        entry.insert(Entry {
            task,
            waker,
            turn: 0,
        });
        ready.push(id);
    }
    ready.append(&mut local.inbox.woken.lock().unwrap_or_else(|p| p.into_inner()));
}

/// The timerfd fired: mark the timers whose deadline passed, queue their tasks, and set the
/// timerfd to the earliest deadline left.
fn fire_timers(local: &Local) {
    // Empty the timerfd's count (it is not read otherwise; a later expiry signals anew).
    let mut count = [0u8; 8];
    let _ = rustix::io::read(&local.timerfd, &mut count);
    local.armed.set(None);
    let now = Instant::now();
    let next = {
        let mut timers = local.timers.borrow_mut();
        let mut ready = local.ready.borrow_mut();
        loop {
            let Some(Reverse(top)) = timers.peek() else {
                break None;
            };
            if !top.live() {
                timers.pop();
                continue;
            }
            if top.at > now {
                break Some(top.at);
            }
            if let Some(Reverse(due)) = timers.pop() {
                due.timer.elapsed.store(true, Ordering::Relaxed);
                ready.push(due.task);
            }
        }
    };
    if let Some(at) = next {
        arm_timerfd(local, at, now);
    }
}

/// Set the timerfd to fire at `at` (`now` being the clock's reading).
fn arm_timerfd(local: &Local, at: Instant, now: Instant) {
    // A zero value disarms a timerfd: a deadline already passed fires in a nanosecond.
    let after = at
        .saturating_duration_since(now)
        .max(Duration::from_nanos(1));
    let value = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(after.subsec_nanos()),
        },
    };
    match timerfd_settime(&local.timerfd, TimerfdTimerFlags::empty(), &value) {
        Ok(_) => local.armed.set(Some(at)),
        Err(e) => {
            // Not expected (the value is valid); the loop then waits with a timeout instead.
            tracing::error!(error = %e, "a tunnel thread cannot set its timer");
            local.armed.set(None);
            local.timerfd_failed.set(true);
        }
    }
}

/// A TCP socket served by the loop of the thread it was made on, for the task that made it:
/// its readiness wakes that task, so only that task may poll it.
#[derive(Debug)]
pub struct LoopStream {
    io: mio::net::TcpStream,
    token: usize,
    ready: Arc<Readiness>,
    /// The loop it is registered with, so it leaves that loop only.
    owner: Weak<Inbox>,
}

impl LoopStream {
    /// Register `stream` with this thread's loop, for the task being polled. Fails off a
    /// loop thread.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<Self> {
        let local = local().ok_or_else(not_on_loop)?;
        stream.set_nonblocking(true)?;
        let mut io = mio::net::TcpStream::from_std(stream);
        let ready = Arc::new(Readiness {
            readable: AtomicBool::new(true),
            writable: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        });
        let token = local.sources.borrow_mut().insert(Source {
            task: local.current.get(),
            ready: ready.clone(),
        });
        if let Err(e) = local.registry.register(
            &mut io,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            local.sources.borrow_mut().remove(token);
            return Err(e);
        }
        let owner = Arc::downgrade(&local.inbox);
        Ok(Self {
            io,
            token,
            ready,
            owner,
        })
    }
}

impl Drop for LoopStream {
    fn drop(&mut self) {
        if let Some(local) = local()
            && std::ptr::eq(Arc::as_ptr(&local.inbox), self.owner.as_ptr())
        {
            let _ = local.registry.deregister(&mut self.io);
            if let Ok(mut sources) = local.sources.try_borrow_mut() {
                sources.try_remove(self.token);
            }
        }
    }
}

impl AsyncRead for LoopStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ready.readable.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        loop {
            let want = buf.remaining();
            match rustix::io::read(&this.io, buf.initialize_unfilled()) {
                Ok(n) => {
                    if n < want && n > 0 && !this.ready.closed.load(Ordering::Relaxed) {
                        // The socket had no more: the next event says when it has.
                        this.ready.readable.store(false, Ordering::Relaxed);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(Errno::AGAIN) => {
                    this.ready.readable.store(false, Ordering::Relaxed);
                    return Poll::Pending;
                }
                Err(Errno::INTR) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

impl LoopStream {
    /// Run a write `op` of `want` bytes while the socket is writable.
    fn poll_write_with(
        &self,
        want: usize,
        mut op: impl FnMut(&mio::net::TcpStream) -> rustix::io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if !self.ready.writable.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        loop {
            match op(&self.io) {
                Ok(n) => {
                    if n < want {
                        // The send buffer is full: the next event says when it has room.
                        self.ready.writable.store(false, Ordering::Relaxed);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(Errno::AGAIN) => {
                    self.ready.writable.store(false, Ordering::Relaxed);
                    return Poll::Pending;
                }
                Err(Errno::INTR) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

impl AsyncWrite for LoopStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // `send` with MSG_NOSIGNAL, as std does: a peer that reset does not raise SIGPIPE.
        self.poll_write_with(buf.len(), |io| {
            rustix::net::send(io, buf, SendFlags::NOSIGNAL)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // At most IOV_MAX buffers per call (as std caps them); `want` is what this call offers.
        let bufs = &bufs[..bufs.len().min(1024)];
        let want = bufs.iter().map(|b| b.len()).sum();
        self.poll_write_with(want, |io| {
            rustix::net::sendmsg(
                io,
                bufs,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(std::net::Shutdown::Write))
    }
}

/// A timer of the loop of the thread it was made on, for the task that made it (which it
/// wakes when it fires, so only that task may poll it).
#[derive(Debug)]
pub struct LoopSleep {
    deadline: Instant,
    state: Arc<TimerState>,
    task: usize,
}

/// A timer that fires at `deadline`. Off a loop thread it never fires.
pub fn sleep_until(deadline: Instant) -> LoopSleep {
    let task = local().map_or(usize::MAX, |l| {
        l.sleeps.set(l.sleeps.get() + 1);
        l.current.get()
    });
    let mut sleep = LoopSleep {
        deadline,
        state: Arc::new(TimerState {
            elapsed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }),
        task,
    };
    sleep.arm(deadline);
    sleep
}

impl LoopSleep {
    fn arm(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.state.elapsed.store(false, Ordering::Relaxed);
        let generation = self.state.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(local) = local() {
            let mut timers = local.timers.borrow_mut();
            if timers.len() > 2 * local.sleeps.get() + 64 {
                timers.retain(|Reverse(due)| due.live());
            }
            timers.push(Reverse(Due {
                at: deadline,
                generation,
                task: self.task,
                timer: self.state.clone(),
            }));
            drop(timers);
            if local.armed.get().is_none_or(|armed| deadline < armed) {
                arm_timerfd(&local, deadline, Instant::now());
            }
        }
    }
}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        // Its entries go stale.
        self.state.generation.fetch_add(1, Ordering::Relaxed);
        if let Some(local) = local() {
            local.sleeps.set(local.sleeps.get().saturating_sub(1));
        }
    }
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.state.elapsed.load(Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Timer for LoopSleep {
    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn is_elapsed(&self) -> bool {
        self.state.elapsed.load(Ordering::Relaxed)
    }

    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.get_mut().arm(deadline);
    }
}

#[cfg(test)]
mod tests;
