//! `bulwark-monitor check` counts a condition as sent only when a channel accepted it: a
//! receiver that answers 503 (or is unreachable) gets it again at the next check, and the run
//! that failed says so (exit 2, a `<4>` warning naming the channel). The condition staged is
//! a finished file left in `incoming/` of an unguarded repository (`not_sealed`).

use std::net::TcpListener;
use std::process::Output;

use bulwark_testkit::webhook::Hook;
use common::Staged;

mod common;

/// A URL nothing listens on.
fn unreachable_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hook", l.local_addr().unwrap())
}

/// An unguarded repository with a finished file that has waited two minutes in `incoming/`,
/// and a webhook channel for each of `urls`.
fn stage(urls: &[&str]) -> Staged {
    let mut cfg = String::new();
    for u in urls {
        cfg.push_str(&format!("[[webhook]]\nurl = \"{u}\"\ntimeout_secs = 5\n"));
    }
    Staged::new(true, &cfg)
}

/// `bulwark-monitor --json check` on `s`.
fn check(s: &Staged) -> Output {
    s.check(true).output().unwrap()
}

fn row(o: &Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    let rows = v["conditions"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["event"], "not_sealed", "{v}");
    rows[0].clone()
}

#[test]
fn a_notification_the_webhook_refused_is_sent_again_at_the_next_check_and_then_not_repeated() {
    let sink = Hook::answering(&[503]);
    let s = stage(&[&sink.url]);

    // The receiver answers 503: not sent, the run says so, nothing is remembered.
    let o = check(&s);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(sink.events("not_sealed").len(), 1);
    let r = row(&o);
    assert_eq!(r["due"], true);
    assert_eq!(r["sent"], false);
    assert_eq!(r["failed"][0]["channel"], format!("webhook {}", sink.url));
    assert!(
        err.contains("<4>warning: notification not_sealed about ")
            && err.contains(&format!("to webhook {} failed", sink.url))
            && err.contains("HTTP 503")
            && err.contains("tried again at the next check"),
        "{err}"
    );

    // A minute later the receiver is back: delivered.
    let o = check(&s);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sink.events("not_sealed").len(), 2);
    let r = row(&o);
    assert_eq!(
        (r["due"].clone(), r["sent"].clone()),
        (true.into(), true.into())
    );

    // Still within repeat_hours: reported, not sent again.
    let o = check(&s);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(sink.events("not_sealed").len(), 2);
    let r = row(&o);
    assert_eq!(
        (r["due"].clone(), r["sent"].clone()),
        (false.into(), false.into())
    );
}

#[test]
fn an_unreachable_webhook_is_tried_at_every_check_until_it_accepts() {
    let s = stage(&[&unreachable_url()]);
    for _ in 0..2 {
        let o = check(&s);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(row(&o)["sent"], false);
        assert!(
            err.contains("check the URL and that the receiver is up")
                && err.contains("tried again at the next check"),
            "{err}"
        );
    }
}

#[test]
fn a_notification_one_of_two_webhooks_accepted_counts_as_sent_and_the_other_is_named() {
    let sink = Hook::answering(&[]);
    let down = unreachable_url();
    let s = stage(&[&down, &sink.url]);
    let o = check(&s);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "a channel failed: {err}");
    let r = row(&o);
    assert_eq!(r["sent"], true);
    assert_eq!(r["failed"].as_array().unwrap().len(), 1);
    assert_eq!(r["failed"][0]["channel"], format!("webhook {down}"));
    assert!(
        err.contains(&format!("to webhook {down} failed"))
            && err.contains("another channel accepted it"),
        "{err}"
    );
    assert_eq!(sink.events("not_sealed").len(), 1);
    // Sent: not again before repeat_hours, to either.
    let o = check(&s);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(row(&o)["due"], false);
    assert_eq!(sink.events("not_sealed").len(), 1);
}
