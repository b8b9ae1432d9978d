//! Secrets out of process arguments, before they reach a record. Errs on the side of
//! hiding: a redacted harmless value costs a little context, a leaked password costs the
//! operator a credential rotation. The forms covered, each replaced by `REDACTED` (the
//! word OpenTelemetry's conventions use):
//!
//! - `--password=X`, `-Dkey.store.password=X`, `password=X` inside an argument (libpq
//!   conninfo, URL queries, `env NAME=X`), `"password": "X"` (JSON bodies);
//! - a sensitive flag followed by its value: `--token X`, `--client-secret X`;
//! - `-pX` (mysql and friends), `-u user:X`, `--user=user:X`;
//! - `Authorization: X`, `Cookie: X`, `X-Api-Key: X` and other sensitive headers;
//!   `Bearer X`, `Basic X` anywhere;
//! - URL user-info: `https://user:X@host` becomes `https://REDACTED:REDACTED@host`;
//! - JSON Web Tokens (`eyJ….….…`) anywhere.
//!
//! A name is sensitive when one of its words (split at punctuation and camelCase) is
//! `password`, `passwd`, `pass`, `pwd`, `passphrase`, `secret`, `token`, `key`, `apikey`,
//! `auth`, `authorization`, `credential(s)`, `cookie`, `signature`, `sig`, `bearer`, or
//! when it ends with `password`, `passwd`, `secret`, `token`, `key`, `auth`,
//! `signature`, `credential(s)`, `sessionid` (`PGPASSWORD`, `oauth`, `AWSAccessKeyId`).

pub const REDACTED: &str = "REDACTED";

const WORDS: [&str; 19] = [
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "key",
    "apikey",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "cookie",
    "signature",
    "sig",
    "bearer",
];
const SUFFIXES: [&str; 10] = [
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "auth",
    "signature",
    "credential",
    "credentials",
    "sessionid",
];

/// Whether a flag, key or header name names a secret.
pub fn sensitive_name(name: &str) -> bool {
    let joined: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if joined.is_empty() {
        return false;
    }
    SUFFIXES.iter().any(|s| joined.ends_with(s)) || words(name).any(|w| WORDS.contains(&w.as_str()))
}

/// Lower-cased words: split at anything not alphanumeric and at camelCase boundaries
/// (`keyStorePassword` → key, store, password; `AWSAccessKeyId` → aws, access, key, id).
fn words(name: &str) -> impl Iterator<Item = String> + '_ {
    let chars: Vec<char> = name.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let boundary = c.is_ascii_uppercase()
            && prev.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || (p.is_ascii_uppercase() && next.is_some_and(char::is_ascii_lowercase))
            });
        if boundary && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        word.push(c.to_ascii_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out.into_iter()
}

/// What the next argument is, given this one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Any,
    /// The value of a sensitive flag.
    Secret,
    /// `user:password` (curl's `-u`).
    UserPassword,
}

/// Redacts `args` in place. `cut[i]` says argument `i` was not read to its end, so a
/// secret may start in it and go on past what was read.
pub fn redact(args: &mut [String], cut: &[bool]) {
    let mut next = Next::Any;
    for (i, arg) in args.iter_mut().enumerate() {
        let expected = std::mem::replace(&mut next, Next::Any);
        let is_flag = arg.starts_with('-') && arg.len() > 1;
        if !is_flag {
            match expected {
                Next::Secret => {
                    REDACTED.clone_into(arg);
                    continue;
                }
                Next::UserPassword => {
                    *arg = user_password(arg);
                    continue;
                }
                Next::Any => {}
            }
        }
        next = expects(arg);
        *arg = redact_one(arg, cut.get(i).copied().unwrap_or(false));
    }
}

/// Whether a flag without `=` takes a secret as its next argument.
fn expects(arg: &str) -> Next {
    if !arg.starts_with('-') || arg.contains('=') {
        return Next::Any;
    }
    match arg {
        "-u" | "--user" | "--proxy-user" => Next::UserPassword,
        _ => {
            let name = arg.trim_start_matches('-');
            // `--token`, and single-dash long flags (`-password`); not a short flag with
            // its value attached (`-pSECRET`, `-Xmx4g`).
            let long = arg.starts_with("--")
                || (name.len() > 2
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_'));
            if long && sensitive_name(name) {
                Next::Secret
            } else {
                Next::Any
            }
        }
    }
}

/// `user:secret` → `user:REDACTED`.
fn user_password(value: &str) -> String {
    match value.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => value.to_owned(),
    }
}

fn redact_one(arg: &str, cut: bool) -> String {
    if let Some(rest) = arg.strip_prefix("-p")
        && !rest.is_empty()
        && !arg.starts_with("--")
    {
        return format!("-p{REDACTED}");
    }
    for flag in ["--user=", "--proxy-user="] {
        if let Some(value) = arg.strip_prefix(flag) {
            return format!("{flag}{}", user_password(value));
        }
    }
    if let Some(value) = arg.strip_prefix("-u")
        && value.contains(':')
        && !arg.starts_with("--")
    {
        return format!("-u{}", user_password(value));
    }
    if let Some(header) = header(arg) {
        return header;
    }
    // Schemes first: `Authorization: Bearer X` inside a longer argument must lose X,
    // not only the word `Bearer`.
    let s = userinfo(arg, cut);
    let s = auth_schemes(&s);
    let s = key_values(&s);
    let s = json_values(&s);
    jwts(&s)
}

/// `Name: value` with a sensitive header name.
fn header(arg: &str) -> Option<String> {
    let (name, _) = arg.split_once(':')?;
    let is_header_name =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let lower = name.to_ascii_lowercase();
    let sensitive = matches!(
        lower.as_str(),
        "cookie" | "set-cookie" | "proxy-authorization"
    ) || sensitive_name(name);
    (is_header_name && sensitive).then(|| format!("{name}: {REDACTED}"))
}

/// `scheme://user:pass@host` → `scheme://REDACTED:REDACTED@host`; with `cut`, an
/// authority that runs to the end of what was read is hidden whole (its `@` may lie
/// beyond).
fn userinfo(s: &str, cut: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            let info = &authority[..at];
            out.push_str(if info.contains(':') {
                "REDACTED:REDACTED"
            } else {
                REDACTED
            });
            out.push_str(&authority[at..]);
        } else if cut && end == tail.len() {
            out.push_str(REDACTED);
        } else {
            out.push_str(authority);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"' | '\'' | ')' | '}')
}

/// `name=value` and `name: value` with a sensitive name, anywhere in the argument.
fn key_values(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut ranges = Vec::new();
    for (sep, _) in s.match_indices(['=', ':']) {
        let start = (0..sep)
            .rev()
            .take_while(|&j| is_name_byte(bytes[j]))
            .last()
            .unwrap_or(sep);
        let after = &s[sep + 1..];
        let value = if bytes[sep] == b':' {
            after.trim_start_matches(' ')
        } else {
            after
        };
        let value_start = s.len() - value.len();
        let value_end = value.find(ends_value).map_or(s.len(), |e| value_start + e);
        if start < sep && value_end > value_start && sensitive_name(&s[start..sep]) {
            ranges.push((value_start, value_end));
        }
    }
    replace_ranges(s, ranges)
}

/// `Bearer X`, `Basic X` (any case) anywhere.
fn auth_schemes(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut ranges = Vec::new();
    for scheme in ["bearer ", "basic "] {
        for (at, _) in lower.match_indices(scheme) {
            let token = s[at + scheme.len()..].trim_start();
            let start = s.len() - token.len();
            let end = token.find(ends_value).map_or(s.len(), |e| start + e);
            if end > start {
                ranges.push((start, end));
            }
        }
    }
    replace_ranges(s, ranges)
}

/// `s` with each byte range (on character boundaries) replaced by `REDACTED`;
/// overlapping ranges count once.
fn replace_ranges(s: &str, mut ranges: Vec<(usize, usize)>) -> String {
    if ranges.is_empty() {
        return s.to_owned();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    for (start, end) in ranges {
        if start < copied {
            copied = copied.max(end);
            continue;
        }
        out.push_str(&s[copied..start]);
        out.push_str(REDACTED);
        copied = end;
    }
    out.push_str(&s[copied..]);
    out
}

/// `"name": "value"` with a sensitive name (a JSON body given on the command line).
fn json_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = s[i..].find("\":") {
        let colon = i + off + 1;
        let name_start = s[..colon - 1].rfind('"').map(|q| q + 1);
        let value = s[colon + 1..].trim_start();
        let value_start = s.len() - value.len();
        i = colon + 1;
        let (Some(name_start), Some(inner)) = (name_start, value.strip_prefix('"')) else {
            continue;
        };
        if !sensitive_name(&s[name_start..colon - 1]) {
            continue;
        }
        let close = inner.find('"').map_or(s.len(), |q| value_start + 1 + q);
        out.push_str(&s[copied..=value_start]);
        out.push_str(REDACTED);
        copied = close;
        i = close.max(i);
    }
    out.push_str(&s[copied..]);
    out
}

/// `eyJ<header>.<payload>[.<signature>]`: a JSON Web Token.
fn jwts(s: &str) -> String {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("eyJ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(b64(c) || c == '.'))
            .unwrap_or(tail.len());
        let candidate = &tail[..end];
        let parts: Vec<&str> = candidate.split('.').collect();
        if parts.len() >= 2 && parts[..2].iter().all(|p| p.len() >= 4) {
            out.push_str(REDACTED);
        } else {
            out.push_str(candidate);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        redact(&mut v, &[]);
        v
    }

    fn same(args: &[&str]) {
        assert_eq!(redacted(args), args, "left alone");
    }

    #[test]
    fn flags_with_equals() {
        assert_eq!(
            redacted(&[
                "app",
                "--password=hunter2",
                "--db-password=x",
                "--api-key=abc",
                "--client_secret=s"
            ]),
            [
                "app",
                "--password=REDACTED",
                "--db-password=REDACTED",
                "--api-key=REDACTED",
                "--client_secret=REDACTED"
            ]
        );
        assert_eq!(
            redacted(&[
                "java",
                "-Djavax.net.ssl.keyStorePassword=changeit",
                "-jar",
                "a.jar"
            ]),
            [
                "java",
                "-Djavax.net.ssl.keyStorePassword=REDACTED",
                "-jar",
                "a.jar"
            ]
        );
    }

    #[test]
    fn flags_followed_by_their_value() {
        assert_eq!(
            redacted(&[
                "vault",
                "login",
                "--token",
                "s.abc",
                "--auth-method",
                "ldap",
                "-v"
            ]),
            [
                "vault",
                "login",
                "--token",
                "REDACTED",
                "--auth-method",
                "REDACTED",
                "-v"
            ]
        );
        // A flag after a sensitive flag is not its value.
        assert_eq!(
            redacted(&["x", "--token", "--verbose"]),
            ["x", "--token", "--verbose"]
        );
        // Short flags take no secret as their next argument (`-p 22` is a port).
        same(&["ssh", "-p", "22", "host"]);
        assert_eq!(
            redacted(&["app", "-token", "x", "-pSECRET", "postgres://db/x"]),
            ["app", "-token", "REDACTED", "-pREDACTED", "postgres://db/x"]
        );
        // `-password x` could be mysql's `-p` with `assword` attached: both are hidden.
        assert_eq!(
            redacted(&["app", "-password", "x"]),
            ["app", "-pREDACTED", "REDACTED"]
        );
    }

    #[test]
    fn mysql_style_short_password() {
        assert_eq!(
            redacted(&["mysql", "-uroot", "-pSECRET", "-h", "db"]),
            ["mysql", "-uroot", "-pREDACTED", "-h", "db"]
        );
        // `-p` alone prompts for the password.
        same(&["mysql", "-p", "shop"]);
    }

    #[test]
    fn user_and_password() {
        assert_eq!(
            redacted(&[
                "curl",
                "-u",
                "alice:wonderland",
                "--user=bob:builder",
                "-ucarol:x",
                "http://h/"
            ]),
            [
                "curl",
                "-u",
                "alice:REDACTED",
                "--user=bob:REDACTED",
                "-ucarol:REDACTED",
                "http://h/"
            ]
        );
        same(&["curl", "-u", "alice", "http://h/"]);
    }

    #[test]
    fn headers_and_schemes() {
        assert_eq!(
            redacted(&[
                "curl",
                "-H",
                "Authorization: Bearer abc.def",
                "-H",
                "Accept: */*"
            ]),
            ["curl", "-H", "Authorization: REDACTED", "-H", "Accept: */*"]
        );
        assert_eq!(
            redacted(&[
                "curl",
                "-H",
                "X-Api-Key: k",
                "-H",
                "Cookie: sid=1",
                "--header=Proxy-Authorization: Basic Zm9v"
            ]),
            [
                "curl",
                "-H",
                "X-Api-Key: REDACTED",
                "-H",
                "Cookie: REDACTED",
                "--header=Proxy-Authorization: REDACTED REDACTED"
            ]
        );
        assert_eq!(
            redacted(&[
                "sh",
                "-c",
                "wget --header='authorization: bearer xyz' http://h/"
            ]),
            [
                "sh",
                "-c",
                "wget --header='authorization: REDACTED REDACTED' http://h/"
            ]
        );
    }

    #[test]
    fn url_userinfo() {
        assert_eq!(
            redacted(&[
                "psql",
                "postgres://app:s3cret@db:5432/shop",
                "https://token@github.com/x"
            ]),
            [
                "psql",
                "postgres://REDACTED:REDACTED@db:5432/shop",
                "https://REDACTED@github.com/x"
            ]
        );
        same(&["curl", "http://10.0.0.2:8080/path?q=1", "mailto:x@y"]);
        // Cut short: the authority may go on past what was read.
        let mut v = vec!["https://user:pa".to_owned()];
        redact(&mut v, &[true]);
        assert_eq!(v, ["https://REDACTED"]);
    }

    #[test]
    fn key_value_pairs_inside_arguments() {
        assert_eq!(
            redacted(&["psql", "host=db user=app password=x dbname=shop"]),
            ["psql", "host=db user=app password=REDACTED dbname=shop"]
        );
        assert_eq!(
            redacted(&[
                "curl",
                "https://s3/b?X-Amz-Credential=AK&X-Amz-Signature=ff&v=1"
            ]),
            [
                "curl",
                "https://s3/b?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&v=1"
            ]
        );
        assert_eq!(
            redacted(&[
                "env",
                "PGPASSWORD=x",
                "AWS_SECRET_ACCESS_KEY=y",
                "HOME=/root",
                "app"
            ]),
            [
                "env",
                "PGPASSWORD=REDACTED",
                "AWS_SECRET_ACCESS_KEY=REDACTED",
                "HOME=/root",
                "app"
            ]
        );
        assert_eq!(
            redacted(&[
                "curl",
                "-d",
                r#"{"user": "a", "password": "p\u00e9", "token":"t"}"#
            ]),
            [
                "curl",
                "-d",
                r#"{"user": "a", "password": "REDACTED", "token":"REDACTED"}"#
            ]
        );
    }

    #[test]
    fn secrets_inside_a_shell_command() {
        assert_eq!(
            redacted(&[
                "sh",
                "-c",
                "curl -H 'X-Api-Key: k1' -H 'Authorization: Basic Zm9v' https://u:p@h/ token:abc"
            ]),
            [
                "sh",
                "-c",
                "curl -H 'X-Api-Key: REDACTED' -H 'Authorization: REDACTED REDACTED' https://REDACTED:REDACTED@h/ token:REDACTED"
            ]
        );
    }

    #[test]
    fn json_web_tokens() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        assert_eq!(
            redacted(&["app", jwt, &format!("--x={jwt}")]),
            ["app", "REDACTED", "--x=REDACTED"]
        );
        same(&["app", "eyJ", "eyJhbGciOiJIUzI1NiJ9"]);
    }

    #[test]
    fn harmless_arguments_are_left_alone() {
        same(&["curl", "-sS", "--max-time", "2", "http://10.0.0.2:80/"]);
        same(&["nginx", "-g", "daemon off;"]);
        same(&["wget", "--passive-ftp", "ftp://h/f", "--keep-alive"]);
        same(&["python3", "-c", "print(1+1)", "", "ünï"]);
    }

    #[test]
    fn names() {
        for name in [
            "password",
            "DB_PASSWORD",
            "apiKey",
            "AWSAccessKeyId",
            "oauth",
            "X-Auth-Token",
            "sig",
            "client-secret",
            "passwd",
            "pwd",
        ] {
            assert!(sensitive_name(name), "{name}");
        }
        for name in [
            "passive",
            "keepalive",
            "host",
            "user",
            "bypass",
            "port",
            "signal",
            "",
        ] {
            assert!(!sensitive_name(name), "{name}");
        }
    }
}
