//! nginx's `log_format`: literals and `$variables`, matched against a line.

use corral_guest::Value;

/// A part of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text that must be there.
    Literal(String),
    /// A variable's value: whatever comes up to the next literal.
    Variable(String),
}

/// A parsed `log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
}

/// What a variable gives.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// The message's timestamp, in nanoseconds since the Unix epoch.
    Timestamp(i64),
    /// A field.
    Field(Value),
}

const INTS: &[&str] = &[
    "status",
    "body_bytes_sent",
    "bytes_sent",
    "request_length",
    "connection",
    "connection_requests",
    "pid",
];
const FLOATS: &[&str] = &[
    "request_time",
    "upstream_connect_time",
    "upstream_header_time",
    "upstream_response_time",
    "msec",
];

impl Format {
    /// Parses a format: `$name` or `${name}` are variables, the rest literals.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            let braced = chars.peek() == Some(&'{');
            if braced {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if braced && chars.next() != Some('}') {
                return Err(format!("`${{{name}` is not closed"));
            }
            if name.is_empty() {
                literal.push('$');
                continue;
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            } else if matches!(pieces.last(), Some(Piece::Variable(_))) {
                return Err(format!(
                    "`${name}` follows another variable with nothing between them: where one ends cannot be told"
                ));
            }
            pieces.push(Piece::Variable(name));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Variable(_))) {
            return Err("it has no `$variable`".into());
        }
        Ok(Format { pieces })
    }

    /// The format's parts.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Matches `line`: each variable's name and what it gives, in order; or where the
    /// line differs from the format.
    pub fn parse_line<'a>(&'a self, line: &str) -> Result<Vec<(&'a str, Parsed)>, String> {
        let mut out = Vec::with_capacity(self.pieces.len());
        let mut rest = line;
        let mut pieces = self.pieces.iter().peekable();
        while let Some(piece) = pieces.next() {
            match piece {
                Piece::Literal(text) => {
                    rest = rest.strip_prefix(text.as_str()).ok_or_else(|| {
                        format!(
                            "expected {text:?} at byte {} of the line",
                            line.len() - rest.len()
                        )
                    })?;
                }
                Piece::Variable(name) => {
                    let value = match pieces.peek() {
                        Some(Piece::Literal(next)) => {
                            let end = rest
                                .find(next.as_str())
                                .ok_or_else(|| format!("no {next:?} after `${name}` in the line"))?;
                            let (value, after) = rest.split_at(end);
                            rest = after;
                            value
                        }
                        _ => std::mem::take(&mut rest),
                    };
                    if let Some(parsed) = typed(name, value)? {
                        if name == "request" {
                            let mut parts = value.splitn(3, ' ');
                            for (field, part) in ["request_method", "request_uri", "request_protocol"]
                                .iter()
                                .zip(&mut parts)
                            {
                                out.push((*field, Parsed::Field(Value::String(part.to_owned()))));
                            }
                        }
                        out.push((name.as_str(), parsed));
                    }
                }
            }
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes left over at the end of the line", rest.len()));
        }
        Ok(out)
    }
}

/// A variable's value, typed by its name; `None` for `-` (no value).
fn typed(name: &str, value: &str) -> Result<Option<Parsed>, String> {
    if value == "-" {
        return Ok(None);
    }
    let bad = |what: &str| format!("`${name}` is not {what}: {value:?}");
    Ok(Some(match name {
        "time_local" => Parsed::Timestamp(
            time_local(value).ok_or_else(|| bad("a time such as 10/Oct/2000:13:55:36 -0700"))?,
        ),
        "time_iso8601" => Parsed::Timestamp(iso8601(value).ok_or_else(|| bad("an ISO 8601 time"))?),
        _ if INTS.contains(&name) => Parsed::Field(Value::Int(value.parse().map_err(|_| bad("an integer"))?)),
        _ if FLOATS.contains(&name) => {
            // An upstream list ("0.010, 0.020" or "0.010 : 0.020"): the first.
            let first = value.split([',', ' ', ':']).next().unwrap_or(value);
            match first.parse() {
                Ok(v) => Parsed::Field(Value::Float(v)),
                Err(_) if first == "-" => return Ok(None),
                Err(_) => return Err(bad("a number")),
            }
        }
        _ => Parsed::Field(Value::String(value.to_owned())),
    }))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A date and a time of day at a UTC offset, in nanoseconds since the Unix epoch.
fn ns(
    (year, month, day): (i64, i64, i64),
    (h, m, s): (i64, i64, i64),
    frac_ns: i64,
    offset_s: i64,
) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

fn month(name: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as i64 + 1)
}

fn offset(text: &str) -> Option<i64> {
    if text == "Z" {
        return Some(0);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// `10/Oct/2000:13:55:36 -0700`.
fn time_local(text: &str) -> Option<i64> {
    let (date, zone) = text.split_once(' ')?;
    let mut parts = date.splitn(4, [':', '/']);
    let day = parts.next()?.parse().ok()?;
    let mon = month(parts.next()?)?;
    let year = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let h = clock.next()?.parse().ok()?;
    let m = clock.next()?.parse().ok()?;
    let s = clock.next()?.parse().ok()?;
    ns((year, mon, day), (h, m, s), 0, offset(zone)?)
}

/// `2000-10-10T13:55:36-07:00`, with optional fractions of a second.
pub(crate) fn iso8601(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-');
    let (year, mon, day) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let zone_at = time.find(['Z', '+', '-'])?;
    let (clock, zone) = time.split_at(zone_at);
    let (clock, frac) = match clock.split_once('.') {
        Some((c, f)) => (c, f),
        None => (clock, ""),
    };
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
        let n: i64 = digits.parse().ok()?;
        n * 10i64.pow(9 - digits.len() as u32)
    };
    ns((year, mon, day), (h, m, s), frac_ns, offset(zone)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(parsed: &'a [(&str, Parsed)], name: &str) -> Option<&'a Parsed> {
        parsed.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    fn int(parsed: &[(&str, Parsed)], name: &str) -> Option<i64> {
        match field(parsed, name)? {
            Parsed::Field(Value::Int(v)) => Some(*v),
            _ => None,
        }
    }

    fn float(parsed: &[(&str, Parsed)], name: &str) -> Option<f64> {
        match field(parsed, name)? {
            Parsed::Field(Value::Float(v)) => Some(*v),
            _ => None,
        }
    }

    fn string<'a>(parsed: &'a [(&str, Parsed)], name: &str) -> Option<&'a str> {
        match field(parsed, name)? {
            Parsed::Field(Value::String(v)) => Some(v),
            _ => None,
        }
    }

    fn time(parsed: &[(&str, Parsed)], name: &str) -> Option<i64> {
        match field(parsed, name)? {
            Parsed::Timestamp(t) => Some(*t),
            _ => None,
        }
    }

    #[test]
    fn the_combined_format_gives_typed_fields() {
        let format = Format::parse(crate::COMBINED).unwrap();
        let line = r#"203.0.113.9 - alice [10/Oct/2000:13:55:36 -0700] "GET /index.html?q=1 HTTP/1.1" 200 2326 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)""#;
        let parsed = format.parse_line(line).unwrap();
        assert_eq!(int(&parsed, "status"), Some(200));
        assert_eq!(int(&parsed, "body_bytes_sent"), Some(2326));
        assert_eq!(time(&parsed, "time_local"), Some(971_211_336_000_000_000));
        assert_eq!(string(&parsed, "request_uri"), Some("/index.html?q=1"));
        assert_eq!(
            string(&parsed, "http_user_agent"),
            Some("Mozilla/5.0 (X11; Linux x86_64)")
        );
        let anonymous =
            r#"198.51.100.7 - - [10/Oct/2000:13:55:36 +0000] "POST /api HTTP/2.0" 502 0 "-" "curl/8.5.0""#;
        let parsed = format.parse_line(anonymous).unwrap();
        assert!(field(&parsed, "remote_user").is_none(), "`-` is no value");
        assert!(format.parse_line("garbage").is_err());
    }

    #[test]
    fn a_custom_format_types_times() {
        let format = Format::parse(
            r#"$remote_addr [$time_iso8601] "$request" $status $request_time ${upstream_response_time}"#,
        )
        .unwrap();
        let parsed = format
            .parse_line(r#"10.0.0.1 [2024-03-01T12:00:00.5+01:00] "GET / HTTP/1.1" 404 0.012 0.010, 0.002"#)
            .unwrap();
        assert_eq!(float(&parsed, "request_time"), Some(0.012));
        assert_eq!(float(&parsed, "upstream_response_time"), Some(0.010));
        assert_eq!(time(&parsed, "time_iso8601"), Some(1_709_290_800_500_000_000));
        assert!(Format::parse("$a$b").is_err());
        assert!(Format::parse("no variables").is_err());
    }
}
