//! The `current_time` built-in capability: the current time in any IANA time zone,
//! conversion between zones, and time arithmetic (add a duration, difference of two
//! times). Time zone rules come from the tz database bundled into the component (jiff),
//! so results do not depend on the host.

use everruns_sdk::prelude::*;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, SpanRound, Timestamp, Unit, Zoned};

/// Arguments of `now`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NowArgs {
    /// IANA time zone, e.g. `Europe/Paris` or `America/New_York`. Default `UTC`.
    timezone: Option<String>,
}

/// Arguments of `convert`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConvertArgs {
    /// The time: RFC 3339 with an offset (`2025-03-01T09:30:00Z`,
    /// `2025-03-01T09:30:00+01:00`) or a local date and time (`2025-03-01T09:30`,
    /// `2025-03-01 09:30`) read in `from_timezone`.
    datetime: String,
    /// Zone of a local `datetime`. Default `UTC`.
    from_timezone: Option<String>,
    /// Zone to express the time in.
    to_timezone: String,
}

/// Arguments of `add`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddArgs {
    /// Start time (as for `convert`). Default: now.
    datetime: Option<String>,
    /// Zone for a local `datetime` and for the result; calendar units (days, months)
    /// follow its daylight-saving rules. Default `UTC`.
    timezone: Option<String>,
    /// What to add, e.g. `2 hours 30 minutes`, `-3 days`, `1 month`, or ISO 8601
    /// `P1DT2H`. Negative durations go back in time.
    duration: String,
}

/// Arguments of `difference`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DifferenceArgs {
    /// The earlier time (as for `convert`).
    start: String,
    /// The later time (as for `convert`). Default: now.
    end: Option<String>,
    /// Zone for local times and calendar units. Default `UTC`.
    timezone: Option<String>,
}

fn zone(field: &str, name: Option<&str>) -> Result<TimeZone, ToolError> {
    let name = name.unwrap_or("UTC");
    TimeZone::get(name).map_err(|_| {
        ToolError::invalid_argument(
            field,
            format!("unknown time zone `{name}` (use an IANA name like `Europe/Berlin`)"),
        )
    })
}

/// Reads `text` as an instant (with offset) or as a local time in `tz`.
fn parse_time(field: &str, text: &str, tz: &TimeZone) -> Result<Zoned, ToolError> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts.to_zoned(tz.clone()));
    }
    if let Ok(zoned) = text.parse::<Zoned>() {
        return Ok(zoned.with_time_zone(tz.clone()));
    }
    let local = text.replacen(' ', "T", 1);
    let civil = local
        .parse::<DateTime>()
        .or_else(|_| {
            local
                .parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| {
            ToolError::invalid_argument(
                field,
                format!("`{text}` is not a time like `2025-03-01T09:30:00Z` or `2025-03-01 09:30`"),
            )
        })?;
    civil
        .to_zoned(tz.clone())
        .map_err(|e| ToolError::invalid_argument(field, e))
}

fn describe(time: &Zoned) -> serde_json::Value {
    serde_json::json!({
        "datetime": time.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        "timezone": time.time_zone().iana_name().unwrap_or("UTC"),
        "date": time.strftime("%Y-%m-%d").to_string(),
        "time": time.strftime("%H:%M:%S").to_string(),
        "weekday": time.strftime("%A").to_string(),
        "utc_offset": time.strftime("%:z").to_string(),
        "unix_seconds": time.timestamp().as_second(),
    })
}

fn now(_ctx: &Context, args: NowArgs) -> ToolResult {
    let tz = zone("timezone", args.timezone.as_deref())?;
    Ok(describe(&Timestamp::now().to_zoned(tz)).into())
}

fn convert(_ctx: &Context, args: ConvertArgs) -> ToolResult {
    let from = zone("from_timezone", args.from_timezone.as_deref())?;
    let to = zone("to_timezone", Some(&args.to_timezone))?;
    let time = parse_time("datetime", &args.datetime, &from)?;
    Ok(describe(&time.with_time_zone(to)).into())
}

fn add(_ctx: &Context, args: AddArgs) -> ToolResult {
    let tz = zone("timezone", args.timezone.as_deref())?;
    let start = match &args.datetime {
        Some(text) => parse_time("datetime", text, &tz)?,
        None => Timestamp::now().to_zoned(tz),
    };
    let span: Span = args.duration.trim().parse().map_err(|_| {
        ToolError::invalid_argument(
            "duration",
            format!(
                "`{}` is not a duration like `2 hours 30 minutes` or `P1DT2H`",
                args.duration
            ),
        )
    })?;
    let end = start
        .checked_add(span)
        .map_err(|e| ToolError::invalid_argument("duration", e))?;
    Ok(describe(&end).into())
}

fn difference(_ctx: &Context, args: DifferenceArgs) -> ToolResult {
    let tz = zone("timezone", args.timezone.as_deref())?;
    let start = parse_time("start", &args.start, &tz)?;
    let end = match &args.end {
        Some(text) => parse_time("end", text, &tz)?,
        None => Timestamp::now().to_zoned(tz),
    };
    let seconds = end.timestamp().as_second() - start.timestamp().as_second();
    let span = start
        .until((Unit::Year, &end))
        .and_then(|s| s.round(SpanRound::new().smallest(Unit::Second).relative(&start)))
        .map_err(|e| ToolError::Failed(e.to_string()))?;
    Ok(serde_json::json!({
        "seconds": seconds,
        "human": format!("{span:#}"),
        "iso8601": span.to_string(),
    })
    .into())
}

struct CurrentTime;

impl Capability for CurrentTime {
    fn tools(tools: &mut Tools) {
        tools
            .add(
                "now",
                "The current date and time in an IANA time zone (default UTC)",
                now,
            )
            .add(
                "convert",
                "Expresses a date and time in another time zone",
                convert,
            )
            .add(
                "add",
                "Adds a duration (e.g. `3 days`, `-90 minutes`) to a date and time (default now)",
                add,
            )
            .add(
                "difference",
                "The time between two dates and times (end defaults to now)",
                difference,
            );
    }
}

everruns_sdk::export_capability!(CurrentTime, id = "current_time");
