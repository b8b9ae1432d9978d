//! Lookups off the event loop: procfs and the kubelet's files are read by worker threads,
//! and the collector waits for an answer at most a deadline. A read that hangs (a process
//! whose memory lock is held makes `/proc/PID/cmdline` block; a wedged FUSE or NFS mount
//! under `/var/log`) holds up one worker, never the collector: once every worker has
//! spent longer than the deadline on one lookup, another is started, up to
//! [`MAX_WORKERS`]; past that, lookups are refused at once until one comes back. A mere
//! backlog (many new processes at once) is not a stuck worker: it only makes answers
//! late. Answers that come after their deadline are handed to the next caller, so they
//! still fill the caches.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

/// Workers at most (the stuck ones included).
pub const MAX_WORKERS: usize = 4;
/// Lookups queued at most.
const QUEUE: usize = 1024;

/// The result of one [`Pool::ask`].
#[derive(Debug, PartialEq, Eq)]
pub enum Asked<A> {
    Answered(A),
    /// Sent, but not answered in time; the answer will come later, to `late`.
    TimedOut,
    /// Not sent: every worker is stuck, or the queue is full.
    Busy,
}

type Job<Q> = (u64, Q);
/// Makes one worker's handler (each worker owns its state: no lock is held while a
/// worker reads).
pub type Factory<Q, A> = Arc<dyn Fn() -> Box<dyn FnMut(Q) -> A + Send> + Send + Sync>;

pub struct Pool<Q: Send + 'static, A: Send + 'static> {
    jobs: SyncSender<Job<Q>>,
    queue: Arc<Mutex<Receiver<Job<Q>>>>,
    answers_tx: mpsc::Sender<Job<A>>,
    answers: Receiver<Job<A>>,
    factory: Factory<Q, A>,
    /// Per worker: when it started its current lookup (microseconds since `epoch`, plus
    /// one), 0 while it waits for one.
    busy_since: Vec<Arc<AtomicU64>>,
    epoch: Instant,
    next_id: u64,
    /// How long one lookup must take for its worker to count as stuck.
    stuck_after: Duration,
}

impl<Q: Send + 'static, A: Send + 'static> Pool<Q, A> {
    pub fn new(factory: Factory<Q, A>, stuck_after: Duration) -> Pool<Q, A> {
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let (answers_tx, answers) = mpsc::channel();
        let mut pool = Pool {
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            answers_tx,
            answers,
            factory,
            busy_since: Vec::new(),
            epoch: Instant::now(),
            next_id: 0,
            stuck_after,
        };
        pool.spawn();
        pool
    }

    pub fn workers(&self) -> usize {
        self.busy_since.len()
    }

    fn spawn(&mut self) {
        let queue = Arc::clone(&self.queue);
        let answers = self.answers_tx.clone();
        let factory = Arc::clone(&self.factory);
        let busy = Arc::new(AtomicU64::new(0));
        let busy_here = Arc::clone(&busy);
        let epoch = self.epoch;
        let started = std::thread::Builder::new()
            .name("conntrace-lookup".into())
            .spawn(move || {
                let mut handle = factory();
                loop {
                    // The lock is held only while waiting for a job, never during one.
                    let job = match queue.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((id, query)) = job else { return };
                    let since = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
                    busy_here.store(since + 1, Ordering::Relaxed);
                    let answer = handle(query);
                    busy_here.store(0, Ordering::Relaxed);
                    if answers.send((id, answer)).is_err() {
                        return;
                    }
                }
            });
        match started {
            Ok(_) => self.busy_since.push(busy),
            Err(e) => tracing::warn!("could not start a lookup thread: {e}"),
        }
    }

    /// Whether every worker has spent longer than `stuck_after` on its current lookup.
    fn all_stuck(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let limit = u64::try_from(self.stuck_after.as_micros()).unwrap_or(u64::MAX);
        self.busy_since.iter().all(|b| {
            let since = b.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since - 1) >= limit
        })
    }

    /// Sends `query` and waits at most `wait` for its answer. Answers to earlier, late
    /// lookups that arrive meanwhile go to `late`.
    pub fn ask(&mut self, query: Q, wait: Duration, late: &mut impl FnMut(A)) -> Asked<A> {
        self.collect_late(late);
        if self.all_stuck() {
            if self.workers() >= MAX_WORKERS {
                return Asked::Busy;
            }
            self.spawn();
        }
        let id = self.next_id;
        self.next_id += 1;
        match self.jobs.try_send((id, query)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Asked::Busy,
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok((aid, answer)) => {
                    if aid == id {
                        return Asked::Answered(answer);
                    }
                    late(answer);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Asked::TimedOut;
                }
            }
        }
    }

    /// Hands answers that came after their deadline to `late`.
    pub fn collect_late(&mut self, late: &mut impl FnMut(A)) {
        while let Ok((_, answer)) = self.answers.try_recv() {
            late(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn doubling() -> Factory<u32, u32> {
        Arc::new(|| Box::new(|q: u32| q * 2))
    }

    #[test]
    fn answers_in_time() {
        let mut pool = Pool::new(doubling(), Duration::from_millis(50));
        let mut late = Vec::new();
        for q in 0..100 {
            assert_eq!(
                pool.ask(q, Duration::from_secs(5), &mut |a| late.push(a)),
                Asked::Answered(q * 2)
            );
        }
        assert!(late.is_empty());
        assert_eq!(pool.workers(), 1);
    }

    /// Many slow lookups queued at once are a backlog, not stuck workers.
    #[test]
    fn a_backlog_is_not_a_stuck_worker() {
        let factory: Factory<u32, u32> = Arc::new(|| {
            Box::new(|q: u32| {
                std::thread::sleep(Duration::from_millis(2));
                q
            })
        });
        let mut pool = Pool::new(factory, Duration::from_millis(50));
        let mut late = Vec::new();
        for q in 0..200 {
            let asked = pool.ask(q, Duration::ZERO, &mut |a| late.push(a));
            assert_ne!(asked, Asked::Busy);
        }
        assert_eq!(pool.workers(), 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while late.len() < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            pool.collect_late(&mut |a| late.push(a));
        }
        assert_eq!(late.len(), 200, "every late answer comes back");
    }

    /// A lookup that hangs (query 0 blocks until released) costs the caller its deadline
    /// once; the next lookups are answered by a new worker; when every worker hangs,
    /// lookups are refused at once; released, the late answers reach the caller.
    #[test]
    fn a_hung_lookup_never_holds_the_caller() {
        let release = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&release);
        let factory: Factory<u32, u32> = Arc::new(move || {
            let r = Arc::clone(&r);
            Box::new(move |q: u32| {
                while q == 0 && !r.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                q
            })
        });
        let wait = Duration::from_millis(30);
        let mut pool = Pool::new(factory, wait);
        let mut late = Vec::new();
        let t = Instant::now();
        assert_eq!(pool.ask(0, wait, &mut |a| late.push(a)), Asked::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2));
        // Stuck: busy on one lookup for longer than `wait` (measured from when the worker
        // took it up, which a loaded machine may delay).
        std::thread::sleep(2 * wait);
        assert_eq!(
            pool.ask(7, Duration::from_secs(5), &mut |a| late.push(a)),
            Asked::Answered(7)
        );
        assert_eq!(pool.workers(), 2);
        // Hang every worker.
        for _ in 1..MAX_WORKERS {
            assert_eq!(pool.ask(0, wait, &mut |a| late.push(a)), Asked::TimedOut);
            std::thread::sleep(2 * wait);
        }
        assert_eq!(pool.workers(), MAX_WORKERS);
        let t = Instant::now();
        assert_eq!(pool.ask(9, wait, &mut |a| late.push(a)), Asked::Busy);
        assert!(t.elapsed() < wait, "refused without waiting");
        release.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            pool.ask(5, Duration::from_secs(5), &mut |a| late.push(a)),
            Asked::Answered(5)
        );
        assert_eq!(late, vec![0; MAX_WORKERS]);
    }
}
