//! Syslog's two formats, without a dependency: RFC 5424 and RFC 3164.

/// A parsed syslog message, borrowing from the line.
#[derive(Debug, Clone, PartialEq)]
pub struct Syslog<'a> {
    /// From the priority; `None` without one.
    pub facility: Option<i64>,
    /// From the priority; 5 (notice) without one, as RFC 3164 says.
    pub severity: i32,
    /// In nanoseconds since the Unix epoch; `None` for a nil time.
    pub timestamp: Option<i64>,
    pub hostname: Option<&'a str>,
    pub app_name: Option<&'a str>,
    pub procid: Option<&'a str>,
    pub msgid: Option<&'a str>,
    /// Structured data as (`sd.ID.NAME`, value), in order.
    pub structured: Vec<(String, String)>,
    /// The free-form text.
    pub message: &'a str,
}

/// Parses `line`; `received_ns` gives a BSD time its year.
pub fn parse(line: &str, received_ns: i64) -> Result<Syslog<'_>, String> {
    let (facility, severity, rest) = match line.strip_prefix('<') {
        Some(after) => {
            let end = after.find('>').ok_or("a priority `<` without its `>`")?;
            let pri: i64 = after[..end]
                .parse()
                .ok()
                .filter(|p| (0..=191).contains(p))
                .ok_or_else(|| format!("the priority {:?} is not 0 to 191", &after[..end]))?;
            (Some(pri / 8), (pri % 8) as i32, &after[end + 1..])
        }
        None => (None, 5, line),
    };
    let mut out = Syslog {
        facility,
        severity,
        timestamp: None,
        hostname: None,
        app_name: None,
        procid: None,
        msgid: None,
        structured: Vec::new(),
        message: "",
    };
    if let Some(rest) = rest.strip_prefix("1 ") {
        rfc5424(rest, &mut out)?;
    } else {
        rfc3164(rest, received_ns, &mut out)?;
    }
    Ok(out)
}

fn nil(value: &str) -> Option<&str> {
    (value != "-").then_some(value)
}

fn rfc5424<'a>(rest: &'a str, out: &mut Syslog<'a>) -> Result<(), String> {
    let mut parts = rest.splitn(6, ' ');
    let mut next = |what: &str| parts.next().filter(|p| !p.is_empty()).ok_or(format!("no {what}"));
    let time = next("timestamp")?;
    out.timestamp = match time {
        "-" => None,
        _ => Some(rfc3339(time).ok_or_else(|| format!("the timestamp {time:?} is not RFC 3339"))?),
    };
    out.hostname = nil(next("hostname")?);
    out.app_name = nil(next("app-name")?);
    out.procid = nil(next("procid")?);
    out.msgid = nil(next("msgid")?);
    let rest = parts.next().ok_or("no structured data")?;
    let rest = match rest.strip_prefix('-') {
        Some(after) => after,
        None => structured(rest, &mut out.structured)?,
    };
    let message = rest.strip_prefix(' ').unwrap_or(rest);
    // A UTF-8 byte order mark may start the text.
    out.message = message.strip_prefix('\u{feff}').unwrap_or(message);
    Ok(())
}

/// Reads `[id name="value" ...]...` and returns what follows it.
fn structured<'a>(mut rest: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    while let Some(after) = rest.strip_prefix('[') {
        let id_end = after.find([' ', ']']).ok_or("structured data without its `]`")?;
        let id = &after[..id_end];
        rest = &after[id_end..];
        loop {
            if let Some(after) = rest.strip_prefix(']') {
                rest = after;
                break;
            }
            rest = rest
                .strip_prefix(' ')
                .ok_or("structured data: expected a space or `]`")?;
            let eq = rest.find('=').ok_or("a structured-data parameter without `=`")?;
            let name = &rest[..eq];
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("a structured-data value without its quote")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c @ ('"' | '\\' | ']'))) => value.push(c),
                        Some((_, c)) => {
                            value.push('\\');
                            value.push(c);
                        }
                        None => return Err("a structured-data value without its closing quote".into()),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err("a structured-data value without its closing quote".into()),
                }
            };
            rest = &rest[end + 1..];
            out.push((format!("sd.{id}.{name}"), value));
        }
    }
    Ok(rest)
}

fn rfc3164<'a>(rest: &'a str, received_ns: i64, out: &mut Syslog<'a>) -> Result<(), String> {
    // `Mmm dd hh:mm:ss`, the day padded with a space: 15 bytes.
    let time = rest.get(..15).ok_or("too short for a BSD syslog line")?;
    out.timestamp = Some(
        bsd_time(time, received_ns).ok_or_else(|| format!("the time {time:?} is not `Mmm dd hh:mm:ss`"))?,
    );
    let rest = rest[15..].strip_prefix(' ').ok_or("no space after the time")?;
    let (host, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    out.hostname = Some(host);
    // The tag: `app[pid]:` or `app:`, up to 32 characters; without one, all is text.
    match rest.find(':') {
        Some(colon) if colon <= 48 && !rest[..colon].contains(' ') => {
            let tag = &rest[..colon];
            match tag.split_once('[') {
                Some((app, pid)) => {
                    out.app_name = Some(app);
                    out.procid = pid.strip_suffix(']');
                }
                None => out.app_name = Some(tag),
            }
            out.message = rest[colon + 1..].strip_prefix(' ').unwrap_or(&rest[colon + 1..]);
        }
        _ => out.message = rest,
    }
    Ok(())
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn year_of(ns: i64) -> i64 {
    let days = ns.div_euclid(86_400_000_000_000);
    // civil_from_days, the year only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

fn secs(year: i64, month: i64, day: i64, h: i64, m: i64, s: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

fn bsd_time(text: &str, received_ns: i64) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == &text[..3])? as i64 + 1;
    let day: i64 = text[4..6].trim_start().parse().ok()?;
    let mut clock = text[7..].split(':');
    let (h, m, s) = (
        clock.next()?.parse().ok()?,
        clock.next()?.parse().ok()?,
        clock.next()?.parse().ok()?,
    );
    let year = year_of(received_ns);
    let mut at = secs(year, month, day, h, m, s)?;
    // Received in January, written in December: last year's.
    if at * 1_000_000_000 > received_ns + 86_400 * 1_000_000_000 {
        at = secs(year - 1, month, day, h, m, s)?;
    }
    at.checked_mul(1_000_000_000)
}

fn rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-');
    let (year, month, day) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let zone_at = time.find(['Z', '+', '-'])?;
    let (clock, zone) = time.split_at(zone_at);
    let (clock, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = clock.split(':');
    let (h, m, s) = (
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
    );
    let frac_ns = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
    };
    let offset = match zone {
        "Z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (hh, mm) = zone[1..].split_once(':')?;
            sign * (hh.parse::<i64>().ok()? * 3600 + mm.parse::<i64>().ok()? * 60)
        }
    };
    (secs(year, month, day, h, m, s)? - offset)
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_with_structured_data() {
        let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application"][examplePriority@32473 class="high"] An application event"#;
        let m = parse(line, 0).unwrap();
        assert_eq!((m.facility, m.severity), (Some(20), 5));
        assert_eq!(m.timestamp, Some(1_065_910_455_003_000_000));
        assert_eq!(m.hostname, Some("mymachine.example.com"));
        assert_eq!(
            (m.app_name, m.procid, m.msgid),
            (Some("evntslog"), None, Some("ID47"))
        );
        assert_eq!(m.structured[0], ("sd.exampleSDID@32473.iut".into(), "3".into()));
        assert_eq!(
            m.structured[2],
            ("sd.examplePriority@32473.class".into(), "high".into())
        );
        assert_eq!(m.message, "An application event");
        let bare = parse("<34>1 - - - - - -", 0).unwrap();
        assert_eq!((bare.timestamp, bare.message), (None, ""));
    }

    #[test]
    fn rfc3164_with_and_without_priority() {
        // 2024-06-01T00:00:00Z
        let received = 1_717_200_000_000_000_000;
        let m = parse(
            "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8",
            received,
        )
        .unwrap();
        assert_eq!((m.facility, m.severity), (Some(4), 2));
        assert_eq!(
            (m.hostname, m.app_name, m.procid),
            (Some("mymachine"), Some("su"), Some("230"))
        );
        assert_eq!(m.message, "'su root' failed for lonvick on /dev/pts/8");
        // Oct 11 is after June: last year's, 2023-10-11T22:14:15Z.
        assert_eq!(m.timestamp, Some(1_697_062_455_000_000_000));
        let file = parse(
            "Jun  1 00:00:00 web1 kernel: [    0.000000] Linux version 6.1",
            received,
        )
        .unwrap();
        assert_eq!(
            (file.facility, file.severity, file.app_name),
            (None, 5, Some("kernel"))
        );
        assert_eq!(file.timestamp, Some(received));
        assert!(parse("<999>x", 0).is_err());
        assert!(parse("short", 0).is_err());
    }
}
