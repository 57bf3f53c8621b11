//! Notifications: what happened ([`Event`], [`Notification`]) and the channels that carry it —
//! webhooks (JSON POST in the shape ntfy, Gotify, Slack-style or generic receivers expect),
//! email over SMTP (`lettre`), and a structured line on standard error that journald and
//! syslog keep with its priority.
//!
//! The settings are one TOML file, by default `/etc/bulwark/notify.toml` (see
//! `dist/notify.toml` and `docs/notifications.md`). Sending never panics and never blocks for
//! long: each channel has a timeout, and each delivery's outcome is returned so that the
//! caller can log it. Neither the immutability service nor the transport library links this
//! crate; the job runner (`bulwark job`) and the host's notifier (`bulwark-notify`) do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod dedup;

/// Largest settings file read.
const MAX_CONFIG: u64 = 64 * 1024;
/// Largest secret file (token, password) read.
const MAX_SECRET: u64 = 4096;
/// Default time a channel may take.
const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Errors of the notification settings and channels.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("notification settings {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("webhook {url}: {msg}")]
    Webhook { url: String, msg: String },
    #[error("email through {server}: {msg}")]
    Email { server: String, msg: String },
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A backup run failed on at least one disk.
    BackupFailed,
    /// No successful backup within the job's alert interval (missed or killed runs).
    BackupMissed,
    /// Verify found damaged restore points.
    VerifyDamage,
    /// The immutability service's trusted clock raised an alert.
    ClockAlert,
    /// Unlocks are frozen until root accepts the time.
    ClockFrozen,
    /// A finished restore point was not sealed within a minute.
    NotSealed,
    /// Locked bytes above 80 % of the root-owned cap.
    LockedBytesHigh,
    /// Copying to the S3 tier is failing.
    TierSyncFailed,
}

impl Event {
    /// Every event, for documentation and tests.
    pub const ALL: [Event; 8] = [
        Event::BackupFailed,
        Event::BackupMissed,
        Event::VerifyDamage,
        Event::ClockAlert,
        Event::ClockFrozen,
        Event::NotSealed,
        Event::LockedBytesHigh,
        Event::TierSyncFailed,
    ];

    /// The event's name in payloads and settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::BackupFailed => "backup_failed",
            Event::BackupMissed => "backup_missed",
            Event::VerifyDamage => "verify_damage",
            Event::ClockAlert => "clock_alert",
            Event::ClockFrozen => "clock_frozen",
            Event::NotSealed => "not_sealed",
            Event::LockedBytesHigh => "locked_bytes_high",
            Event::TierSyncFailed => "tier_sync_failed",
        }
    }

    /// Parses [`Event::as_str`].
    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// syslog priority: 2 critical, 3 error, 4 warning.
    pub fn priority(self) -> u8 {
        match self {
            Event::VerifyDamage | Event::ClockFrozen | Event::NotSealed => 2,
            Event::BackupFailed | Event::BackupMissed | Event::ClockAlert => 3,
            Event::LockedBytesHigh | Event::TierSyncFailed => 4,
        }
    }

    /// A short title.
    pub fn title(self) -> &'static str {
        match self {
            Event::BackupFailed => "backup failed",
            Event::BackupMissed => "backup missed",
            Event::VerifyDamage => "verify found damage",
            Event::ClockAlert => "clock alert",
            Event::ClockFrozen => "unlocks frozen by a clock alert",
            Event::NotSealed => "restore point not sealed",
            Event::LockedBytesHigh => "locked bytes near the cap",
            Event::TierSyncFailed => "S3 tier sync failing",
        }
    }
}

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub event: Event,
    /// The job, repository or service it is about.
    pub subject: String,
    pub message: String,
    /// The machine that noticed.
    pub host: String,
    pub at_unix: i64,
}

impl Notification {
    /// A notification of `event` about `subject` from this host, now.
    pub fn new(event: Event, subject: &str, message: &str) -> Notification {
        Notification {
            event,
            subject: subject.to_string(),
            message: message.to_string(),
            host: hostname(),
            at_unix: bulwark_time::UnixTime::now().secs(),
        }
    }

    /// `Bulwark on HOST: TITLE (SUBJECT)`.
    pub fn title(&self) -> String {
        format!(
            "Bulwark on {}: {} ({})",
            self.host,
            self.event.title(),
            self.subject
        )
    }

    /// The generic JSON payload.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "source": "bulwark",
            "event": self.event.as_str(),
            "severity": match self.event.priority() { 2 => "critical", 3 => "error", _ => "warning" },
            "title": self.title(),
            "subject": self.subject,
            "message": self.message,
            "host": self.host,
            "at": bulwark_time::utc(self.at_unix),
            "at_unix": self.at_unix,
        })
    }

    /// The structured line for journald/syslog: `<PRIORITY>` then key=value pairs, values
    /// quoted as JSON strings.
    pub fn journal_line(&self) -> String {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        format!(
            "<{}>bulwark-event event={} subject={} host={} message={}",
            self.event.priority(),
            self.event.as_str(),
            q(&self.subject),
            q(&self.host),
            q(&self.message.replace('\n', " "))
        )
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 253)
        .unwrap_or_else(|| "localhost".into())
}

/// The body shape a webhook receiver expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The generic JSON payload ([`Notification::json`]).
    #[default]
    Json,
    /// Gotify's `POST /message`: title, message, priority.
    Gotify,
    /// ntfy's JSON publishing: topic taken from the URL path's last part.
    Ntfy,
    /// Slack-style incoming webhooks (Slack, Mattermost, Rocket.Chat): `{"text": …}`.
    Slack,
}

/// `[[webhook]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// File holding a token: sent as `X-Gotify-Key` for Gotify, else as a bearer token.
    pub token_file: Option<PathBuf>,
    /// Only these events (all when absent).
    pub events: Option<Vec<String>>,
    pub timeout_secs: Option<u64>,
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on this machine or a trusted network.
    None,
}

/// `[[email]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// `HOST:PORT` of the SMTP server.
    pub server: String,
    #[serde(default)]
    pub security: SmtpSecurity,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    /// File holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// Only these events (all when absent).
    pub events: Option<Vec<String>>,
    pub timeout_secs: Option<u64>,
}

/// The notification settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<Webhook>,
    #[serde(default, rename = "email")]
    pub emails: Vec<Email>,
    /// The same event about the same subject is sent again after this many hours while it
    /// lasts (host notifier); default 24.
    pub repeat_hours: Option<u32>,
}

/// Default settings file.
pub const DEFAULT_CONFIG: &str = "/etc/bulwark/notify.toml";

fn read_bounded(path: &Path, max: u64) -> Result<String, NotifyError> {
    use std::io::Read;
    let io = |source| NotifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut s = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(max + 1)
        .read_to_string(&mut s)
        .map_err(io)?;
    if s.len() as u64 > max {
        return Err(NotifyError::Config {
            path: path.to_path_buf(),
            msg: format!("larger than {max} bytes"),
        });
    }
    Ok(s)
}

impl Config {
    /// Reads and checks a settings file.
    pub fn load(path: &Path) -> Result<Config, NotifyError> {
        let text = read_bounded(path, MAX_CONFIG)?;
        Config::parse(&text).map_err(|msg| NotifyError::Config {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses and checks the text of a settings file.
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if c.webhooks.len() + c.emails.len() > 32 {
            return Err("more than 32 channels".into());
        }
        let check_events = |ev: &Option<Vec<String>>| -> Result<(), String> {
            for e in ev.iter().flatten() {
                if Event::parse(e).is_none() {
                    let all: Vec<_> = Event::ALL.iter().map(|e| e.as_str()).collect();
                    return Err(format!("unknown event {e:?}: use {}", all.join(", ")));
                }
            }
            Ok(())
        };
        for w in &c.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(format!(
                    "webhook url {:?} must start with http:// or https://",
                    w.url
                ));
            }
            check_events(&w.events)?;
        }
        for e in &c.emails {
            if e.to.is_empty() {
                return Err(format!(
                    "email through {}: give at least one `to`",
                    e.server
                ));
            }
            split_server(&e.server)?;
            for a in std::iter::once(&e.from).chain(&e.to) {
                a.parse::<lettre::message::Mailbox>()
                    .map_err(|x| format!("email address {a:?}: {x}"))?;
            }
            check_events(&e.events)?;
        }
        Ok(c)
    }

    /// The settings at `explicit`, else `$BULWARK_NOTIFY_CONFIG`, else the default file when
    /// it exists; `Ok(None)` when there is none (only the journal line is written).
    pub fn find(explicit: Option<&Path>) -> Result<Option<Config>, NotifyError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("BULWARK_NOTIFY_CONFIG") {
                Some(p) => PathBuf::from(p),
                None => {
                    let p = PathBuf::from(DEFAULT_CONFIG);
                    if !p.exists() {
                        return Ok(None);
                    }
                    p
                }
            },
        };
        Config::load(&path).map(Some)
    }
}

fn split_server(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("SMTP server {s:?}: write HOST:PORT, e.g. smtp.example.org:587"))?;
    let port = port
        .parse()
        .map_err(|_| format!("SMTP server {s:?}: port {port:?} is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("SMTP server {s:?} has no host"));
    }
    Ok((host.to_string(), port))
}

fn wants(events: &Option<Vec<String>>, e: Event) -> bool {
    events
        .as_ref()
        .is_none_or(|v| v.iter().any(|x| x == e.as_str()))
}

fn secret(path: &Path) -> Result<String, NotifyError> {
    Ok(read_bounded(path, MAX_SECRET)?.trim().to_string())
}

/// The outcome of one channel.
#[derive(Debug)]
pub struct Delivery {
    /// `webhook URL` or `email SERVER`.
    pub channel: String,
    pub result: Result<(), NotifyError>,
}

/// Writes the journal line, then sends `n` to every channel of `cfg` that wants its event.
pub fn send(cfg: Option<&Config>, n: &Notification) -> Vec<Delivery> {
    eprintln!("{}", n.journal_line());
    let Some(cfg) = cfg else {
        return vec![];
    };
    let mut out = Vec::new();
    for w in cfg.webhooks.iter().filter(|w| wants(&w.events, n.event)) {
        out.push(Delivery {
            channel: format!("webhook {}", w.url),
            result: send_webhook(w, n),
        });
    }
    for e in cfg.emails.iter().filter(|e| wants(&e.events, n.event)) {
        out.push(Delivery {
            channel: format!("email {}", e.server),
            result: send_email(e, n),
        });
    }
    out
}

/// The body a webhook of `format` gets.
pub fn webhook_body(format: WebhookFormat, url: &str, n: &Notification) -> serde_json::Value {
    match format {
        WebhookFormat::Json => n.json(),
        WebhookFormat::Gotify => serde_json::json!({
            "title": n.title(),
            "message": n.message,
            // Gotify: 8 and above are high.
            "priority": match n.event.priority() { 2 => 9, 3 => 7, _ => 5 },
            "extras": {"bulwark::event": n.json()},
        }),
        WebhookFormat::Ntfy => serde_json::json!({
            "topic": url.rsplit('/').next().unwrap_or_default(),
            "title": n.title(),
            "message": n.message,
            "priority": match n.event.priority() { 2 => 5, 3 => 4, _ => 3 },
            "tags": ["warning", n.event.as_str()],
        }),
        WebhookFormat::Slack => serde_json::json!({
            "text": format!("*{}*\n{}", n.title(), n.message),
        }),
    }
}

fn send_webhook(w: &Webhook, n: &Notification) -> Result<(), NotifyError> {
    let err = |msg: String| NotifyError::Webhook {
        url: w.url.clone(),
        msg,
    };
    // ntfy's JSON publishing goes to the server's root, the topic in the body.
    let url = match w.format {
        WebhookFormat::Ntfy => match w.url.rsplit_once('/') {
            Some((base, _)) if base.contains("://") && base.split("://").nth(1) != Some("") => {
                format!("{base}/")
            }
            _ => w.url.clone(),
        },
        _ => w.url.clone(),
    };
    let body = webhook_body(w.format, &w.url, n).to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(
            w.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
        )))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("bulwark/", env!("CARGO_PKG_VERSION")));
    if let Some(tf) = &w.token_file {
        let t = secret(tf)?;
        req = match w.format {
            WebhookFormat::Gotify => req.header("X-Gotify-Key", &t),
            _ => req.header("Authorization", &format!("Bearer {t}")),
        };
    }
    let resp = req
        .send(body.as_bytes())
        .map_err(|e| err(format!("{e}; check the URL and that the receiver is up")))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(err(format!(
            "the receiver answered HTTP {status}; check the URL and its token"
        )));
    }
    Ok(())
}

fn send_email(e: &Email, n: &Notification) -> Result<(), NotifyError> {
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};
    let err = |msg: String| NotifyError::Email {
        server: e.server.clone(),
        msg,
    };
    let (host, port) = split_server(&e.server).map_err(&err)?;
    let mut b = Message::builder()
        .from(
            e.from
                .parse()
                .map_err(|x| err(format!("from {:?}: {x}", e.from)))?,
        )
        .subject(n.title());
    for t in &e.to {
        b = b.to(t.parse().map_err(|x| err(format!("to {t:?}: {x}")))?);
    }
    let text = format!(
        "{}\n\nevent: {}\nsubject: {}\nhost: {}\nat: {}\n",
        n.message,
        n.event.as_str(),
        n.subject,
        n.host,
        bulwark_time::utc(n.at_unix)
    );
    let msg = b
        .body(text)
        .map_err(|x| err(format!("building the message: {x}")))?;
    let tls =
        |h: &str| TlsParameters::new(h.to_string()).map_err(|x| err(format!("TLS settings: {x}")));
    let mut t = SmtpTransport::builder_dangerous(&host)
        .port(port)
        .timeout(Some(Duration::from_secs(
            e.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
        )));
    t = match e.security {
        SmtpSecurity::None => t.tls(Tls::None),
        SmtpSecurity::Starttls => t.tls(Tls::Required(tls(&host)?)),
        SmtpSecurity::Tls => t.tls(Tls::Wrapper(tls(&host)?)),
    };
    if let (Some(u), Some(pf)) = (&e.username, &e.password_file) {
        t = t.credentials(lettre::transport::smtp::authentication::Credentials::new(
            u.clone(),
            secret(pf)?,
        ));
    }
    t.build().send(&msg).map(|_| ()).map_err(|x| {
        err(format!(
            "{x}; check the server, its port and security setting"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_with_what_to_fix() {
        let ok = Config::parse(
            "[[webhook]]\nurl = \"https://ntfy.sh/bulwark\"\nformat = \"ntfy\"\n\
             [[email]]\nserver = \"smtp.example.org:587\"\nfrom = \"bulwark@example.org\"\nto = [\"ops@example.org\"]\n\
             events = [\"verify_damage\"]\n",
        )
        .unwrap();
        assert_eq!(ok.webhooks[0].format, WebhookFormat::Ntfy);
        assert_eq!(ok.emails[0].security, SmtpSecurity::Starttls);
        for (text, want) in [
            ("[[webhook]]\nurl = \"ftp://x\"\n", "http://"),
            (
                "[[email]]\nserver = \"x:25\"\nfrom = \"a@b\"\nto = []\n",
                "at least one",
            ),
            (
                "[[email]]\nserver = \"x\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n",
                "HOST:PORT",
            ),
            (
                "[[email]]\nserver = \"x:25\"\nfrom = \"not an address\"\nto = [\"c@d\"]\n",
                "email address",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nevents = [\"oops\"]\n",
                "unknown event",
            ),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn payloads_carry_the_event_in_each_receivers_shape() {
        let n = Notification {
            event: Event::VerifyDamage,
            subject: "web01".into(),
            message: "point 01 damaged".into(),
            host: "h".into(),
            at_unix: 0,
        };
        let j = webhook_body(WebhookFormat::Json, "http://x/", &n);
        assert_eq!(j["event"], "verify_damage");
        assert_eq!(j["severity"], "critical");
        assert_eq!(j["at"], "1970-01-01 00:00:00 UTC");
        let g = webhook_body(WebhookFormat::Gotify, "http://x/message", &n);
        assert_eq!(g["priority"], 9);
        assert_eq!(g["message"], "point 01 damaged");
        let t = webhook_body(WebhookFormat::Ntfy, "https://ntfy.sh/ops", &n);
        assert_eq!(t["topic"], "ops");
        let s = webhook_body(WebhookFormat::Slack, "http://x", &n);
        assert!(s["text"].as_str().unwrap().contains("verify found damage"));
        assert_eq!(
            n.journal_line(),
            "<2>bulwark-event event=verify_damage subject=\"web01\" host=\"h\" message=\"point 01 damaged\""
        );
        for e in Event::ALL {
            assert_eq!(Event::parse(e.as_str()), Some(e));
        }
    }
}
