//! `conntrace top`: the aggregate as a live full-screen table, redrawn every second, one
//! row per (workload, destination) with its verdict. Keys: `s` cycles the sort column,
//! `f` `a` `p` `w` `d` sort by failures %, attempts, p99, workload, destination, `r`
//! reverses, `q` (or Ctrl-C, Esc) quits.
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::{
    Frame, Terminal,
    backend::Backend,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row, Table},
};

use crate::{
    aggregate::{Aggregator, Entry, Key},
    diagnose::{Context, Facts, verdicts},
    model::{ConnEvent, RunInfo},
    output::{
        terminal::{escape, escape_owned},
        time::human_duration,
    },
    sinks::{Flow, Sink},
    stats::Snapshot,
};

/// How often the screen is redrawn.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How often keys are read (the collector's tick).
pub const KEY_POLL: Duration = Duration::from_millis(100);

/// The sort column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Failures,
    FailurePct,
    Attempts,
    P99,
    Workload,
    Destination,
}

impl SortKey {
    const ALL: [SortKey; 6] = [
        SortKey::Failures,
        SortKey::FailurePct,
        SortKey::Attempts,
        SortKey::P99,
        SortKey::Workload,
        SortKey::Destination,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Failures => "failures",
            SortKey::FailurePct => "failure %",
            SortKey::Attempts => "attempts",
            SortKey::P99 => "p99",
            SortKey::Workload => "workload",
            SortKey::Destination => "destination",
        }
    }

    fn next(self) -> SortKey {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// What the user chose: the sort, and whether to quit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewState {
    pub sort: SortKey,
    pub reverse: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState {
            sort: SortKey::Failures,
            reverse: false,
        }
    }
}

impl ViewState {
    /// Applies a key press; `Flow::Stop` to quit.
    pub fn on_key(&mut self, key: KeyEvent) -> Flow {
        if key.kind == KeyEventKind::Release {
            return Flow::Continue;
        }
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        match key.code {
            _ if ctrl_c => return Flow::Stop,
            KeyCode::Char('q') | KeyCode::Esc => return Flow::Stop,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('f') => self.sort = SortKey::FailurePct,
            KeyCode::Char('a') => self.sort = SortKey::Attempts,
            KeyCode::Char('p') => self.sort = SortKey::P99,
            KeyCode::Char('w') => self.sort = SortKey::Workload,
            KeyCode::Char('d') => self.sort = SortKey::Destination,
            _ => {}
        }
        Flow::Continue
    }
}

/// The entries in display order: the chosen column (numbers largest first), then the key.
pub fn ordered(agg: &Aggregator, view: ViewState) -> Vec<(&Key, &Entry)> {
    let mut rows: Vec<_> = agg.iter().collect();
    let p99 = |e: &Entry| e.connect_time.quantiles().map_or(0, |q| q.p99);
    rows.sort_by(|(ka, a), (kb, b)| {
        let by = match view.sort {
            SortKey::Failures => b.failures().cmp(&a.failures()),
            SortKey::FailurePct => b.failure_ratio().total_cmp(&a.failure_ratio()),
            SortKey::Attempts => b.attempts.cmp(&a.attempts),
            SortKey::P99 => p99(b).cmp(&p99(a)),
            SortKey::Workload => ka.workload_label().cmp(&kb.workload_label()),
            SortKey::Destination => ka.destination.cmp(&kb.destination),
        };
        let by = if view.reverse { by.reverse() } else { by };
        by.then_with(|| ka.cmp(kb))
    });
    rows
}

pub const COLUMNS: [&str; 13] = [
    "WORKLOAD",
    "DESTINATION",
    "ATTEMPTS",
    "FAIL%",
    "REFUSED",
    "TIMEOUT",
    "UNREACH",
    "ABANDON",
    "LOCAL",
    "RESETS",
    "P99",
    "VERDICT",
    "",
];

/// One row's cells, in [`COLUMNS`] order (the last, empty, column pads the table), each
/// escaped for the terminal (the workload is the name a process chose).
pub fn cells(key: &Key, e: &Entry, verdict: Option<String>) -> Vec<String> {
    let cells = vec![
        key.workload_label(),
        key.destination_label(),
        e.attempts.to_string(),
        if e.attempts == 0 {
            "-".into()
        } else {
            format!("{:.1}", e.failure_ratio() * 100.0)
        },
        e.refused.count.to_string(),
        e.timeout.count.to_string(),
        e.unreachable.count.to_string(),
        e.abandoned.count.to_string(),
        e.local_error_count().to_string(),
        e.resets_received.to_string(),
        e.connect_time
            .quantiles()
            .map_or_else(|| "-".into(), |q| human_duration(q.p99)),
        verdict.unwrap_or_else(|| "ok".into()),
        String::new(),
    ];
    cells.into_iter().map(escape_owned).collect()
}

/// `service: no_listener`, from the headline verdict without host checks (those are for
/// `diagnose`; a screen redrawn every second does not scan every namespace).
fn short_verdict(key: &Key, e: &Entry, ctx: &Context<'_>) -> Option<String> {
    verdicts(key, e, ctx)
        .first()
        .map(|v| format!("{}: {}", v.layer.as_str(), v.cause))
}

/// Draws the screen: a status line, the key help, the table (as many rows as fit).
pub fn draw(frame: &mut Frame<'_>, agg: &Aggregator, view: ViewState, status: &str) {
    let [head, help, body] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(Line::from(escape(status).into_owned())),
        head,
    );
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            "sorted by {}{} · s: next column · f a p w d: failure% attempts p99 workload destination · r: reverse · q: quit",
            view.sort.label(),
            if view.reverse { " (reversed)" } else { "" }
        ))),
        help,
    );
    let facts = Facts::default();
    let ctx = Context {
        aggregate: agg,
        facts: &facts,
        window_ns: 0,
    };
    let fit = usize::from(body.height.saturating_sub(1));
    let rows = ordered(agg, view).into_iter().take(fit).map(|(k, e)| {
        Row::new(
            cells(k, e, short_verdict(k, e, &ctx))
                .into_iter()
                .map(Cell::from),
        )
    });
    let widths = [
        Constraint::Length(15),
        Constraint::Length(22),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Min(10),
        Constraint::Length(0),
    ];
    let header = Row::new(COLUMNS.iter().map(|c| Cell::from(*c)))
        .style(Style::default().add_modifier(Modifier::REVERSED));
    frame.render_widget(Table::new(rows, widths).header(header), body);
}

/// The status line: host, totals, losses.
pub fn status_line(host: &str, agg: &Aggregator, snapshot: Option<&Snapshot>) -> String {
    let (attempts, failures) = agg
        .iter()
        .fold((0, 0), |(a, f), (_, e)| (a + e.attempts, f + e.failures()));
    let lost = snapshot.map_or(0, |s| s.kernel.lost);
    format!(
        "conntrace top — {host}: {} (workload, destination), {attempts} attempts, {failures} failed, {lost} records lost{}",
        agg.len(),
        if agg.folded() > 0 {
            format!(", {} folded into `other`", agg.folded())
        } else {
            String::new()
        }
    )
}

/// The `top` consumer: aggregates, reads keys on every tick, redraws every [`REFRESH`].
pub struct Top<B: Backend> {
    pub aggregate: Aggregator,
    pub terminal: Terminal<B>,
    pub view: ViewState,
    pub host: String,
    snapshot: Option<Snapshot>,
    last_draw: Option<Instant>,
}

impl<B: Backend> Top<B> {
    pub fn new(terminal: Terminal<B>, aggregate: Aggregator, host: String) -> Top<B> {
        Top {
            aggregate,
            terminal,
            view: ViewState::default(),
            host,
            snapshot: None,
            last_draw: None,
        }
    }

    pub fn redraw(&mut self) -> std::io::Result<()> {
        let status = status_line(&self.host, &self.aggregate, self.snapshot.as_ref());
        let (agg, view) = (&self.aggregate, self.view);
        self.terminal
            .draw(|f| draw(f, agg, view, &status))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.last_draw = Some(Instant::now());
        Ok(())
    }

    /// Handles waiting key presses; whether to quit, and whether the view changed.
    fn read_keys(&mut self) -> std::io::Result<(Flow, bool)> {
        let mut changed = false;
        while event::poll(Duration::ZERO)? {
            if let Event::Key(key) = event::read()? {
                if self.view.on_key(key) == Flow::Stop {
                    return Ok((Flow::Stop, changed));
                }
                changed = true;
            }
        }
        Ok((Flow::Continue, changed))
    }
}

impl<B: Backend> Sink for Top<B> {
    fn start(&mut self, _info: &RunInfo) -> std::io::Result<()> {
        self.redraw()
    }

    fn event(&mut self, e: &ConnEvent) -> std::io::Result<()> {
        self.aggregate.record(e);
        Ok(())
    }

    fn stats(&mut self, s: &Snapshot) -> std::io::Result<()> {
        self.snapshot = Some(s.clone());
        Ok(())
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(KEY_POLL)
    }

    fn tick(&mut self) -> std::io::Result<Flow> {
        let (flow, changed) = self.read_keys()?;
        if flow == Flow::Stop {
            return Ok(Flow::Stop);
        }
        if changed || self.last_draw.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.redraw()?;
        }
        Ok(Flow::Continue)
    }
}

/// Puts the terminal back (raw mode off, main screen) when dropped, however `top` ends.
pub struct RestoreGuard;

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::tests::connect, model::Reason};
    use ratatui::backend::TestBackend;

    fn agg() -> Aggregator {
        let mut agg = Aggregator::new(100);
        for _ in 0..3 {
            agg.record(&connect(Reason::Refused, "10.0.0.2:81", 1));
        }
        agg.record(&connect(Reason::Success, "10.0.0.2:81", 1));
        for ms in [1, 2, 50] {
            agg.record(&connect(Reason::Success, "10.0.0.3:80", ms));
        }
        agg.record(&connect(Reason::Timeout, "10.0.0.4:80", 3000));
        agg
    }

    fn order(agg: &Aggregator, view: ViewState) -> Vec<String> {
        ordered(agg, view)
            .iter()
            .map(|(k, _)| k.destination_label())
            .collect()
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn sorts_by_the_chosen_column() {
        let agg = agg();
        let mut view = ViewState::default();
        assert_eq!(
            order(&agg, view),
            ["10.0.0.2:81", "10.0.0.4:80", "10.0.0.3:80"]
        );
        view.on_key(key('f'));
        assert_eq!(
            order(&agg, view),
            ["10.0.0.4:80", "10.0.0.2:81", "10.0.0.3:80"]
        );
        view.on_key(key('p'));
        assert_eq!(order(&agg, view)[0], "10.0.0.3:80");
        view.on_key(key('r'));
        assert_eq!(order(&agg, view)[2], "10.0.0.3:80");
        view.on_key(key('d'));
        view.on_key(key('r'));
        assert_eq!(
            order(&agg, view),
            ["10.0.0.2:81", "10.0.0.3:80", "10.0.0.4:80"]
        );
    }

    #[test]
    fn s_cycles_through_every_column_and_q_quits() {
        let mut view = ViewState::default();
        let mut seen = vec![view.sort];
        for _ in 0..SortKey::ALL.len() {
            assert_eq!(view.on_key(key('s')), Flow::Continue);
            seen.push(view.sort);
        }
        assert_eq!(seen.first(), seen.last());
        assert_eq!(seen.len(), SortKey::ALL.len() + 1);
        assert_eq!(view.on_key(key('q')), Flow::Stop);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(view.on_key(ctrl_c), Flow::Stop);
    }

    #[test]
    fn a_row_has_every_column() {
        let agg = agg();
        let k = crate::aggregate::tests::key("10.0.0.2:81");
        let row = cells(
            &k,
            agg.get(&k).unwrap(),
            Some("service: no_listener".into()),
        );
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(
            row[..12],
            [
                "app",
                "10.0.0.2:81",
                "4",
                "75.0",
                "3",
                "0",
                "0",
                "0",
                "0",
                "0",
                "1.02ms",
                "service: no_listener"
            ]
        );
    }

    #[test]
    fn the_screen_shows_rows_and_verdicts() {
        let agg = agg();
        let mut term = Terminal::new(TestBackend::new(140, 8)).unwrap();
        let status = status_line("node-1", &agg, None);
        term.draw(|f| draw(f, &agg, ViewState::default(), &status))
            .unwrap();
        let screen: Vec<String> = term
            .backend()
            .buffer()
            .content()
            .chunks(140)
            .map(|line| line.iter().map(|c| c.symbol()).collect::<String>())
            .collect();
        assert!(
            screen[0].contains("3 (workload, destination), 8 attempts, 4 failed"),
            "{screen:#?}"
        );
        assert!(screen[2].starts_with("WORKLOAD"), "{screen:#?}");
        assert!(
            screen[3].contains("10.0.0.2:81") && screen[3].contains("service: no_listener"),
            "{screen:#?}"
        );
        // Port 80 works on 10.0.0.3 and fails on 10.0.0.4: a backend is down.
        assert!(
            screen[4].contains("service: some_backends_down"),
            "{screen:#?}"
        );
        assert!(
            screen[5].contains("10.0.0.3:80") && screen[5].contains(" ok"),
            "{screen:#?}"
        );
    }

    #[test]
    fn hostile_names_are_escaped_in_cells_and_on_screen() {
        use crate::output::terminal::tests::HOSTILE;
        for (raw, escaped) in HOSTILE {
            let mut agg = Aggregator::new(10);
            let mut e = connect(Reason::Refused, "10.0.0.2:81", 1);
            e.process.name = (*raw).to_owned();
            agg.record(&e);
            let (k, entry) = agg.iter().next().unwrap();
            assert_eq!(cells(k, entry, None)[0], *escaped);
            let mut term = Terminal::new(TestBackend::new(140, 4)).unwrap();
            let status = status_line(raw, &agg, None);
            term.draw(|f| draw(f, &agg, ViewState::default(), &status))
                .unwrap();
            let screen: String = term
                .backend()
                .buffer()
                .content()
                .iter()
                .map(|c| c.symbol())
                .collect();
            assert!(!screen.contains(char::is_control), "{raw:?}: {screen:?}");
            let shown: String = escaped.chars().take(15).collect();
            assert!(screen.contains(&shown), "{raw:?}: {screen}");
        }
    }
}
