use super::*;

const MS: Duration = Duration::from_millis(1);

fn config(in_flight: usize) -> SeriesConfig {
    SeriesConfig {
        ahead_files: 4,
        ahead_bytes: 1000,
        ..SeriesConfig::with_in_flight(in_flight)
    }
}

fn sizes(n: usize) -> impl FnOnce() -> Vec<u64> {
    move || vec![10; n]
}

/// Takes every file the policy lets start now.
fn take_all(p: &mut SeriesPolicy<&'static str>, now: Instant) -> Vec<(&'static str, usize)> {
    std::iter::from_fn(|| p.next(now, true, None)).collect()
}

#[test]
fn a_single_open_or_reopens_of_one_file_start_nothing() {
    let mut p = SeriesPolicy::new(config(8));
    let t = Instant::now();
    assert_eq!(p.opened(&"A", 0, true, t, sizes(100)), Opened::Nothing);
    assert!(
        take_all(&mut p, t).is_empty(),
        "one `head` downloads one file"
    );
    // The same file again (head, then cat): still one file.
    assert_eq!(p.opened(&"A", 0, true, t + MS, sizes(100)), Opened::Nothing);
    assert!(take_all(&mut p, t + MS).is_empty());
    // Warm opens are no sign of a cold series.
    assert_eq!(p.opened(&"B", 0, false, t, sizes(100)), Opened::Nothing);
    assert_eq!(
        p.opened(&"B", 1, false, t + MS, sizes(100)),
        Opened::Nothing
    );
    assert!(take_all(&mut p, t + MS).is_empty());
}

#[test]
fn two_cold_opens_far_apart_start_nothing() {
    let mut p = SeriesPolicy::new(config(8));
    let t = Instant::now();
    p.opened(&"A", 0, true, t, sizes(100));
    let later = t + p.config().gap + MS;
    assert_eq!(p.opened(&"A", 1, true, later, sizes(100)), Opened::Nothing);
    assert!(take_all(&mut p, later).is_empty());
    // ... but a third soon after the second does.
    assert_eq!(p.opened(&"A", 2, true, later + MS, sizes(100)), Opened::Run);
}

#[test]
fn a_sequential_reader_gets_the_files_after_it_within_the_windows() {
    let mut p = SeriesPolicy::new(config(2));
    let t = Instant::now();
    p.opened(&"A", 0, true, t, sizes(10));
    assert_eq!(p.opened(&"A", 1, true, t + MS, sizes(10)), Opened::Run);
    // Two in flight at most.
    assert_eq!(take_all(&mut p, t), vec![("A", 2), ("A", 3)]);
    p.finished(&"A", 2, true);
    p.finished(&"A", 3, true);
    // Four ahead of the reader at most.
    assert_eq!(take_all(&mut p, t), vec![("A", 4), ("A", 5)]);
    p.finished(&"A", 4, true);
    p.finished(&"A", 5, true);
    assert!(
        take_all(&mut p, t).is_empty(),
        "4 files ahead: the window is full"
    );
    // The reader opens what was fetched: the window moves on.
    p.opened(&"A", 2, false, t + 2 * MS, sizes(10));
    p.opened(&"A", 3, false, t + 3 * MS, sizes(10));
    assert_eq!(take_all(&mut p, t + 3 * MS), vec![("A", 6), ("A", 7)]);
}

#[test]
fn the_byte_window_bounds_what_is_ahead_and_huge_files_are_left_to_the_reader() {
    let mut p = SeriesPolicy::new(SeriesConfig {
        ahead_files: 100,
        ahead_bytes: 1000,
        ..SeriesConfig::with_in_flight(100)
    });
    let t = Instant::now();
    let sizes = || vec![400, 400, 400, 400, 5000, 100, 400];
    p.opened(&"A", 0, true, t, sizes);
    p.opened(&"A", 1, true, t + MS, sizes);
    // 2 and 3 (800 bytes); 4 (larger than the whole window) is passed over; 5 fits; 6 must
    // wait for the reader.
    assert_eq!(take_all(&mut p, t), vec![("A", 2), ("A", 3), ("A", 5)]);
    for i in [2, 3, 5] {
        p.finished(&"A", i, true);
    }
    assert!(
        take_all(&mut p, t).is_empty(),
        "400 + 400 + 100 + 400 > 1000"
    );
    p.opened(&"A", 2, false, t + 2 * MS, sizes);
    assert_eq!(take_all(&mut p, t + 2 * MS), vec![("A", 6)]);
}

#[test]
fn files_wrap_round_and_each_is_taken_once() {
    let mut p = SeriesPolicy::new(SeriesConfig::with_in_flight(100));
    let t = Instant::now();
    p.opened(&"A", 3, true, t, sizes(6));
    p.opened(&"A", 4, true, t + MS, sizes(6));
    assert_eq!(
        take_all(&mut p, t),
        vec![("A", 5), ("A", 0), ("A", 1), ("A", 2)]
    );
    for i in [5, 0, 1, 2] {
        p.finished(&"A", i, i != 1); // 1 failed: left to the reader
    }
    assert!(take_all(&mut p, t).is_empty());
}

#[test]
fn a_reader_that_stops_pauses_its_series_and_resumes_on_what_was_fetched() {
    let mut p = SeriesPolicy::new(SeriesConfig {
        ahead_files: 2,
        ..SeriesConfig::with_in_flight(8)
    });
    let t = Instant::now();
    p.opened(&"A", 0, true, t, sizes(100));
    p.opened(&"A", 1, true, t + MS, sizes(100));
    assert_eq!(take_all(&mut p, t), vec![("A", 2), ("A", 3)]);
    p.finished(&"A", 2, true);
    p.finished(&"A", 3, true);
    // The reader stops: after the idle time nothing more starts, however the windows stand.
    let idle = t + p.config().idle + 2 * MS;
    p.tick(idle);
    assert!(!p.any_running());
    p.opened(&"A", 50, true, idle, sizes(100)); // a cold jump elsewhere in it: still paused
    assert!(take_all(&mut p, idle).is_empty());
    // It comes back to a file fetched ahead: the series runs again, from there.
    assert_eq!(p.opened(&"A", 2, false, idle + MS, sizes(100)), Opened::Run);
    assert_eq!(take_all(&mut p, idle + MS), vec![("A", 4)]);
    // Forgotten a while after the last open.
    p.finished(&"A", 4, true);
    p.tick(idle + p.config().forget_after + 2 * MS);
    assert!(p.series.is_empty());
}

#[test]
fn a_reader_that_moves_to_other_series_pauses_the_oldest() {
    let mut p = SeriesPolicy::new(SeriesConfig {
        running_at_most: 2,
        widest: 1,
        ..SeriesConfig::with_in_flight(1)
    });
    let t = Instant::now();
    for (i, key) in ["A", "B", "C"].into_iter().enumerate() {
        let at = t + 10 * i as u32 * MS;
        p.opened(&key, 0, true, at, sizes(100));
        assert_eq!(p.opened(&key, 1, true, at + MS, sizes(100)), Opened::Run);
    }
    let running: Vec<_> = ["A", "B", "C"]
        .into_iter()
        .filter(|k| p.series[k].phase == Phase::Running)
        .collect();
    assert_eq!(running, vec!["B", "C"]);
    // The series opened last is served first; the in-flight bound holds over all series.
    assert_eq!(take_all(&mut p, t), vec![("C", 2)]);
    p.finished(&"C", 2, true);
    assert_eq!(take_all(&mut p, t), vec![("C", 3)]);
}

#[test]
fn no_memory_room_or_off_starts_nothing() {
    let mut p = SeriesPolicy::new(SeriesConfig::with_in_flight(8));
    let t = Instant::now();
    p.opened(&"A", 0, true, t, sizes(10));
    p.opened(&"A", 1, true, t + MS, sizes(10));
    assert_eq!(p.next(t, false, None), None);
    assert_eq!(p.next(t, true, Some(40)), Some(("A", 2)));
    // A cache capped at 30 bytes holds 7 bytes ahead at most: no file of 10 fits.
    let mut q = SeriesPolicy::new(SeriesConfig::with_in_flight(8));
    q.opened(&"A", 0, true, t, sizes(10));
    q.opened(&"A", 1, true, t + MS, sizes(10));
    assert_eq!(q.next(t, true, Some(30)), None);
    let mut off = SeriesPolicy::new(SeriesConfig::with_in_flight(0));
    off.opened(&"A", 0, true, t, sizes(10));
    assert_eq!(
        off.opened(&"A", 1, true, t + MS, sizes(10)),
        Opened::Nothing
    );
    assert_eq!(off.next(t, true, None), None);
}

/// A reader that opens files 0, 1, ... of a series of `n` one after another, the read-ahead
/// taking what it may after each open; `waits`: the reader is faster than the server and
/// opens each file fetched ahead while it is still in flight, else after it finished. Gives
/// the files in flight after each open.
fn read_through(p: &mut SeriesPolicy<&'static str>, n: usize, waits: bool) -> Vec<usize> {
    let t = Instant::now();
    let mut flying: Vec<usize> = Vec::new();
    let mut done = std::collections::HashSet::new();
    let mut at_once = Vec::new();
    for i in 0..n {
        if !waits {
            for f in flying.drain(..) {
                p.finished(&"A", f, true);
                done.insert(f);
            }
        }
        let now = t + i as u32 * MS;
        p.opened(&"A", i, !done.contains(&i), now, sizes(n));
        if let Some(k) = flying.iter().position(|&f| f == i) {
            p.finished(&"A", flying.remove(k), true);
        }
        flying.extend(take_all(p, now).into_iter().map(|(_, f)| f));
        at_once.push(flying.len());
    }
    at_once
}

#[test]
fn a_reader_that_keeps_waiting_widens_its_series_up_to_the_widest() {
    let config = SeriesConfig {
        ahead_files: 100,
        ahead_bytes: 1 << 20,
        widest: 8,
        ..SeriesConfig::with_in_flight(2)
    };
    let mut p = SeriesPolicy::new(config);
    let at_once = read_through(&mut p, 60, true);
    assert_eq!(at_once[..2], [0, 2], "nothing on one open, two at first");
    assert_eq!(at_once.iter().max(), Some(&8), "doubled up to the widest");
    // Widened step by step: a whole width of opens between two doublings.
    let first_4 = at_once.iter().position(|&n| n > 2).unwrap();
    let first_8 = at_once.iter().position(|&n| n > 4).unwrap();
    assert!(first_4 >= 3 && first_8 >= first_4 + 4, "{at_once:?}");
}

#[test]
fn a_reader_slower_than_the_read_ahead_never_widens_it() {
    let mut p = SeriesPolicy::new(SeriesConfig {
        ahead_files: 100,
        ahead_bytes: 1 << 20,
        ..SeriesConfig::with_in_flight(2)
    });
    let at_once = read_through(&mut p, 60, false);
    assert!(at_once.iter().all(|&n| n <= 2), "{at_once:?}");
    assert!(
        at_once[1..20].iter().all(|&n| n == 2),
        "it runs: {at_once:?}"
    );
}

#[test]
fn the_widest_bounds_all_series_together() {
    let mut p = SeriesPolicy::new(SeriesConfig {
        widest: 3,
        ..SeriesConfig::with_in_flight(2)
    });
    let t = Instant::now();
    for key in ["A", "B"] {
        p.opened(&key, 0, true, t, sizes(100));
        p.opened(&key, 1, true, t + MS, sizes(100));
    }
    // Two per series at first, three over both.
    assert_eq!(take_all(&mut p, t + MS).len(), 3);
}
