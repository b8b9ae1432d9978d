//! `conntrace top` needs a terminal: without one it says so and exits 2, before loading
//! anything (so this runs without privileges).
use assert_cmd::Command;

#[test]
fn top_without_a_terminal_says_so_and_exits_2() {
    let out = Command::cargo_bin("conntrace")
        .unwrap()
        .arg("top")
        .write_stdin("")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "stdout carries data only");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("top needs a terminal"), "{err}");
}

#[test]
fn diagnose_rejects_a_zero_duration_as_usage() {
    let out = Command::cargo_bin("conntrace")
        .unwrap()
        .args(["diagnose", "--duration", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration 0"));
}

#[test]
fn max_keys_must_be_positive() {
    let out = Command::cargo_bin("conntrace")
        .unwrap()
        .args(["diagnose", "--max-keys", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-keys"));
}
