//! Retention policies with restic's meaning (`restic forget`): which snapshots of a group to
//! keep, and for each one the rules that decided. Pure: no I/O, time and zone passed in.
//!
//! Within a group, snapshots are taken newest first. `keep_last` keeps the n newest. Each
//! bucketed rule (hourly … yearly) keeps the newest snapshot of each of the n most recent
//! periods that have a snapshot. `keep_within` keeps every snapshot within that duration of
//! the group's newest (not of now). `keep_tags` keeps every snapshot carrying all tags of any
//! one of its entries (`"a,b"` means a and b). A snapshot dated after `now` (plus a small
//! tolerance) is kept with a warning and takes no slot, so a forged or mis-clocked future
//! snapshot cannot push real ones out.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::format::snapshot::Snapshot;
use crate::id::Id;

/// Snapshots newer than now by more than this are "from the future" (clocks drift a little).
pub const FUTURE_TOLERANCE_SECS: i64 = 300;

/// A retention policy. Field names match the `[retention]` table of a profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// A duration such as `30d`, `2y5m7d3h` (y, m = month, w, d, h).
    pub keep_within: Option<String>,
    pub keep_tags: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("invalid duration {0:?}: use numbers with units y, m (months), w, d, h, e.g. 30d or 1y6m")]
    Duration(String),
    #[error("no retention rule given: nothing would be kept, so nothing is removed (give --keep-last etc.)")]
    Empty,
}

/// A parsed `keep_within` duration (calendar months and years, as restic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl Span {
    pub fn parse(text: &str) -> Result<Span, PolicyError> {
        let err = || PolicyError::Duration(text.to_string());
        let mut span = Span::default();
        let mut number = String::new();
        let mut any = false;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let n: i32 = number.parse().map_err(|_| err())?;
            number.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'w' => span.days += 7 * n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(err()),
            }
            any = true;
        }
        if !number.is_empty() || !any {
            return Err(err());
        }
        Ok(span)
    }

    /// `time` minus this span (calendar arithmetic, clamped to the month's last day).
    fn before(&self, time: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years * 12 + self.months;
        let shifted =
            if months > 0 { time.checked_sub_months(chrono::Months::new(months as u32)).unwrap_or(time) } else { time };
        shifted - chrono::Duration::days(self.days.into()) - chrono::Duration::hours(self.hours.into())
    }
}

impl RetentionPolicy {
    /// No rule that could keep anything: `--keep-last 0` counts as no rule (as in restic), so
    /// a policy of zeros is refused instead of removing every snapshot.
    pub fn is_empty(&self) -> bool {
        [self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly]
            .iter()
            .all(|n| n.unwrap_or(0) == 0)
            && self.keep_within.is_none()
            && self.keep_tags.iter().all(|t| t.trim().is_empty())
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.is_empty() {
            return Err(PolicyError::Empty);
        }
        if let Some(within) = &self.keep_within {
            Span::parse(within)?;
        }
        Ok(())
    }
}

/// The decision for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: Id,
    pub keep: bool,
    /// The rules that kept it (`last`, `daily`, `within 30d`, `tag a,b`, `future`); empty when removed.
    pub reasons: Vec<String>,
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: Id,
    pub time_unix: i64,
    pub time_nsec: u32,
    pub tags: Vec<String>,
}

impl Candidate {
    pub fn of(id: Id, snapshot: &Snapshot) -> Candidate {
        Candidate { id, time_unix: snapshot.time_unix, time_nsec: snapshot.time_nsec, tags: snapshot.tags.clone() }
    }
}

/// Applies the policy to one group. Returns decisions newest first. `zone` decides where an
/// hour, day, week … begins (restic uses local time).
pub fn apply<Tz: TimeZone>(
    policy: &RetentionPolicy,
    group: &[Candidate],
    now_unix: i64,
    zone: &Tz,
) -> Result<Vec<Decision>, PolicyError> {
    policy.validate()?;
    let within = policy.keep_within.as_deref().map(Span::parse).transpose()?;
    let mut sorted: Vec<&Candidate> = group.iter().collect();
    sorted.sort_by_key(|c| std::cmp::Reverse((c.time_unix, c.time_nsec, c.id)));
    let is_future = |c: &Candidate| c.time_unix > now_unix + FUTURE_TOLERANCE_SECS;
    let newest_real = sorted.iter().find(|c| !is_future(c)).map(|c| c.time_unix);
    let within_since = match (within, newest_real) {
        (Some(span), Some(newest)) => Some(span.before(DateTime::from_timestamp(newest, 0).unwrap_or_default())),
        _ => None,
    };

    type Bucket = fn(&DateTime<chrono::FixedOffset>) -> i64;
    let rules: [(&str, Option<u32>, Bucket); 6] = [
        ("last", policy.keep_last, |_| 0),
        ("hourly", policy.keep_hourly, |t| (t.year() as i64 * 10_000 + t.ordinal() as i64) * 100 + t.hour() as i64),
        ("daily", policy.keep_daily, |t| t.year() as i64 * 10_000 + t.ordinal() as i64),
        ("weekly", policy.keep_weekly, |t| {
            let w = t.iso_week();
            w.year() as i64 * 100 + w.week() as i64
        }),
        ("monthly", policy.keep_monthly, |t| t.year() as i64 * 100 + t.month() as i64),
        ("yearly", policy.keep_yearly, |t| t.year() as i64),
    ];
    let mut remaining: Vec<u32> = rules.iter().map(|(_, n, _)| n.unwrap_or(0)).collect();
    let mut last_bucket: Vec<Option<i64>> = vec![None; rules.len()];
    let mut decisions = Vec::with_capacity(sorted.len());
    for (position, c) in sorted.iter().enumerate() {
        let mut reasons = Vec::new();
        if is_future(c) {
            reasons.push("future".to_string());
            decisions.push(Decision { id: c.id, keep: true, reasons });
            continue;
        }
        let local = zone.timestamp_opt(c.time_unix, c.time_nsec).single().map(|t| t.fixed_offset());
        let local =
            local.unwrap_or_else(|| DateTime::from_timestamp(c.time_unix, 0).unwrap_or_default().fixed_offset());
        for (i, (name, _, bucket)) in rules.iter().enumerate() {
            if remaining[i] == 0 {
                continue;
            }
            // keep-last: every snapshot is its own bucket.
            let value = if i == 0 { position as i64 } else { bucket(&local) };
            if last_bucket[i] != Some(value) {
                last_bucket[i] = Some(value);
                remaining[i] -= 1;
                reasons.push((*name).to_string());
            }
        }
        if let (Some(since), Some(within)) = (within_since, &policy.keep_within) {
            if c.time_unix >= since.timestamp() {
                reasons.push(format!("within {within}"));
            }
        }
        for tags in &policy.keep_tags {
            let wanted: Vec<&str> = tags.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
            if !wanted.is_empty() && wanted.iter().all(|w| c.tags.iter().any(|t| t == w)) {
                reasons.push(format!("tag {tags}"));
            }
        }
        decisions.push(Decision { id: c.id, keep: !reasons.is_empty(), reasons });
    }
    Ok(decisions)
}

/// What snapshots are grouped by before the policy applies (restic's `--group-by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
    /// The key that signed the snapshot (issue 15: a write-only key's holder who claims a
    /// host's name and paths must not be able to push that host's own snapshots out of a
    /// `--keep-last`).
    pub signer: bool,
}

impl GroupBy {
    /// `host,paths,signer` (the default), any subset of host, paths, tags and signer, or `""`
    /// for one group.
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        let mut group = GroupBy::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => group.host = true,
                "paths" => group.paths = true,
                "tags" => group.tags = true,
                "signer" => group.signer = true,
                other => return Err(format!("cannot group by {other:?}: use host, paths, tags and/or signer")),
            }
        }
        Ok(group)
    }

    pub fn key(&self, snapshot: &Snapshot, signer: &Id) -> GroupKey {
        let mut paths: Vec<String> = if self.paths {
            snapshot.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
        } else {
            Vec::new()
        };
        paths.sort();
        let mut tags = if self.tags { snapshot.tags.clone() } else { Vec::new() };
        tags.sort();
        GroupKey {
            host: self.host.then(|| snapshot.hostname.clone()),
            paths,
            tags,
            signer: self.signer.then(|| signer.to_hex()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    pub host: Option<String>,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// The signing key's id (hex).
    pub signer: Option<String>,
}

/// Groups snapshots and applies the policy to each group.
pub fn apply_grouped<Tz: TimeZone>(
    policy: &RetentionPolicy,
    group_by: GroupBy,
    snapshots: &[(Id, Snapshot, Id)],
    now_unix: i64,
    zone: &Tz,
) -> Result<Vec<(GroupKey, Vec<Decision>)>, PolicyError> {
    let mut groups: BTreeMap<GroupKey, Vec<Candidate>> = BTreeMap::new();
    for (id, snapshot, signer) in snapshots {
        groups.entry(group_by.key(snapshot, signer)).or_default().push(Candidate::of(*id, snapshot));
    }
    groups.into_iter().map(|(key, group)| Ok((key, apply(policy, &group, now_unix, zone)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, 0).unwrap().and_utc().timestamp()
    }

    fn cand(n: u8, time: i64, tags: &[&str]) -> Candidate {
        Candidate {
            id: Id::of_bytes(&[n]),
            time_unix: time,
            time_nsec: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn kept(policy: &RetentionPolicy, group: &[Candidate], now: i64) -> Vec<u8> {
        let decisions = apply(policy, group, now, &Utc).unwrap();
        let mut out: Vec<u8> = group
            .iter()
            .enumerate()
            .filter(|(_, c)| decisions.iter().any(|d| d.id == c.id && d.keep))
            .map(|(i, _)| i as u8)
            .collect();
        out.sort();
        out
    }

    /// Snapshots twice a day for 60 days, oldest first.
    fn series() -> Vec<Candidate> {
        let start = at(2026, 1, 1, 8, 0);
        (0..120).map(|i| cand(i as u8, start + (i as i64) * 12 * 3600, &[])).collect()
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let s = series();
        let p = RetentionPolicy { keep_last: Some(3), ..Default::default() };
        assert_eq!(kept(&p, &s, at(2027, 1, 1, 0, 0)), vec![117, 118, 119]);
    }

    #[test]
    fn keep_daily_keeps_the_last_of_each_day() {
        let s = series();
        let p = RetentionPolicy { keep_daily: Some(3), ..Default::default() };
        // Days 59, 58, 57: their 20:00 snapshots (odd indexes).
        assert_eq!(kept(&p, &s, at(2027, 1, 1, 0, 0)), vec![115, 117, 119]);
    }

    #[test]
    fn weekly_and_monthly_count_periods_not_snapshots() {
        let s = series();
        let p = RetentionPolicy { keep_monthly: Some(2), ..Default::default() };
        // Jan 1 .. Mar 1 08:00: the newest of March (119 is Mar 1 20:00) and of February (Feb 28 20:00).
        let feb_last = s.iter().position(|c| c.time_unix == at(2026, 2, 28, 20, 0)).unwrap() as u8;
        assert_eq!(kept(&p, &s, at(2027, 1, 1, 0, 0)), vec![feb_last, 119]);
        let p = RetentionPolicy { keep_weekly: Some(1), keep_yearly: Some(5), ..Default::default() };
        assert_eq!(kept(&p, &s, at(2027, 1, 1, 0, 0)), vec![119]);
    }

    #[test]
    fn rules_combine_and_each_reason_is_reported() {
        let s = series();
        let p = RetentionPolicy { keep_last: Some(1), keep_daily: Some(2), ..Default::default() };
        let d = apply(&p, &s, at(2027, 1, 1, 0, 0), &Utc).unwrap();
        assert_eq!(d[0].reasons, vec!["last", "daily"]);
        assert!(d[1].reasons.is_empty() && !d[1].keep);
        assert_eq!(d[2].reasons, vec!["daily"]);
        assert_eq!(d.iter().filter(|d| d.keep).count(), 2);
    }

    #[test]
    fn keep_within_is_relative_to_the_newest_snapshot() {
        let s = series();
        let p = RetentionPolicy { keep_within: Some("2d".into()), ..Default::default() };
        // Newest Mar 1 20:00; within 2 days: from Feb 27 20:00 on = 5 snapshots.
        assert_eq!(kept(&p, &s, at(2030, 1, 1, 0, 0)), vec![115, 116, 117, 118, 119]);
    }

    #[test]
    fn keep_tag_needs_all_tags_of_one_entry() {
        let s = vec![cand(0, 100, &["a"]), cand(1, 200, &["a", "b"]), cand(2, 300, &["b"]), cand(3, 400, &[])];
        let p = RetentionPolicy { keep_tags: vec!["a,b".into(), "c".into()], ..Default::default() };
        assert_eq!(kept(&p, &s, 1000), vec![1]);
        let p = RetentionPolicy { keep_tags: vec!["a".into()], ..Default::default() };
        assert_eq!(kept(&p, &s, 1000), vec![0, 1]);
    }

    #[test]
    fn future_snapshots_are_kept_and_take_no_slot() {
        let now = at(2026, 6, 1, 0, 0);
        let s = vec![
            cand(0, now - 3000, &[]),
            cand(1, now - 2000, &[]),
            cand(2, now - 1000, &[]),
            cand(3, now + 86_400 * 365, &[]),
            cand(4, now + 86_400 * 400, &[]),
        ];
        let p = RetentionPolicy { keep_last: Some(2), keep_within: Some("1h".into()), ..Default::default() };
        let d = apply(&p, &s, now, &Utc).unwrap();
        assert_eq!(kept(&p, &s, now), vec![0, 1, 2, 3, 4]);
        assert_eq!(d.iter().filter(|d| d.reasons == ["future"]).count(), 2);
        let p = RetentionPolicy { keep_last: Some(2), ..Default::default() };
        assert_eq!(kept(&p, &s, now), vec![1, 2, 3, 4]);
    }

    #[test]
    fn an_empty_policy_is_refused() {
        assert_eq!(apply(&RetentionPolicy::default(), &series(), 0, &Utc), Err(PolicyError::Empty));
        let zeros = RetentionPolicy { keep_last: Some(0), keep_daily: Some(0), ..Default::default() };
        assert_eq!(apply(&zeros, &series(), 0, &Utc), Err(PolicyError::Empty));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(Span::parse("30d").unwrap(), Span { days: 30, ..Default::default() });
        assert_eq!(Span::parse("1y2m3w4d5h").unwrap(), Span { years: 1, months: 2, days: 25, hours: 5 });
        for bad in ["", "d", "30", "3x", "-1d"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grouping_by_host_and_paths() {
        let snap = |host: &str, path: &str| Snapshot {
            hostname: host.into(),
            paths: vec![serde_bytes::ByteBuf::from(path.as_bytes().to_vec())],
            ..Default::default()
        };
        let owner = Id([1; 32]);
        let list = vec![
            (Id::of_bytes(b"1"), snap("a", "/x"), owner),
            (Id::of_bytes(b"2"), snap("a", "/y"), owner),
            (Id::of_bytes(b"3"), snap("b", "/x"), owner),
        ];
        let p = RetentionPolicy { keep_last: Some(1), ..Default::default() };
        let by = GroupBy::parse("host,paths").unwrap();
        let groups = apply_grouped(&p, by, &list, 0, &Utc).unwrap();
        assert_eq!(groups.len(), 3);
        // Another key claiming host a and /x is a group of its own by default: its newer
        // snapshots take no `--keep-last` place from the real ones.
        let mut posing = list.clone();
        posing.push((Id::of_bytes(b"4"), Snapshot { time_unix: 99, ..snap("a", "/x") }, Id([2; 32])));
        let groups = apply_grouped(&p, GroupBy::parse("host,paths,signer").unwrap(), &posing, 0, &Utc).unwrap();
        assert_eq!(groups.len(), 4);
        assert!(groups.iter().all(|(_, d)| d.iter().all(|d| d.keep)));
        let groups = apply_grouped(&p, by, &posing, 0, &Utc).unwrap();
        assert!(groups.iter().any(|(_, d)| d.iter().any(|d| !d.keep)), "without signer grouping one is dropped");
        let groups = apply_grouped(&p, GroupBy::parse("").unwrap(), &list, 0, &Utc).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1.iter().filter(|d| d.keep).count(), 1);
        assert!(GroupBy::parse("colour").is_err());
    }
}
