//! Aggregates of posts: trending items, top authors and hashtags, and time buckets.

use super::*;

/// Every bucket of the range (the filter's, else from the first to the last counted bucket),
/// times every group seen, with zeros where nothing was counted.
pub(super) fn zero_filled(
    rows: Vec<Bucket>,
    filter: &PostFilter,
    interval: Interval,
    zone: chrono_tz::Tz,
    offsets: &zone::Offsets,
) -> Result<Vec<Bucket>> {
    let from = filter.since_us.or_else(|| rows.first().map(|b| b.start_us));
    let to = filter.until_us.or_else(|| rows.last().map(|b| b.start_us + 1));
    let (Some(from), Some(to)) = (from, to) else { return Ok(Vec::new()) };
    // The last bucket may start before `since` (a month holding it): it still ends the range.
    let to = to.max(from.saturating_add(1));
    let starts = zone::bucket_starts(interval, zone, offsets, from, to, MAX_BUCKET_ROWS)?;
    let mut groups: Vec<Option<String>> = rows.iter().map(|b| b.group.clone()).collect();
    // Named groups first, by name; the null group last.
    groups.sort_by(|a, b| match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    });
    groups.dedup();
    if groups.is_empty() {
        groups.push(None);
    }
    if starts.len().saturating_mul(groups.len()) > MAX_BUCKET_ROWS {
        return Err(Error::InvalidArgument(format!(
            "{} buckets times {} groups is more than {MAX_BUCKET_ROWS} rows; narrow the filter or the range",
            starts.len(),
            groups.len()
        )));
    }
    let mut counted: HashMap<(i64, Option<String>), Bucket> =
        rows.into_iter().map(|b| ((b.start_us, b.group.clone()), b)).collect();
    let mut out = Vec::with_capacity(starts.len() * groups.len());
    for start_us in starts {
        for group in &groups {
            let bucket = counted.remove(&(start_us, group.clone())).unwrap_or(Bucket {
                start_us,
                group: group.clone(),
                posts: 0,
                authors: 0,
                replies: 0,
            });
            out.push(bucket);
        }
    }
    if !counted.is_empty() {
        // A counted bucket outside the listed range would be a bug; never drop its posts.
        tracing::error!(buckets = counted.len(), "time buckets outside the computed range");
        out.extend(counted.into_values());
        out.sort_by_key(|b| b.start_us);
    }
    Ok(out)
}

impl Engine {
    /// The items rising most in `plan.window` against `plan.baseline`, best first.
    pub fn trending(&self, plan: &TrendPlan) -> Result<Vec<Trend>> {
        self.run(&Plan::Trending(plan.clone()), |row| {
            Ok(Trend {
                item: row.get(0)?,
                posts: count(row, 1)?,
                baseline_posts: count(row, 2)?,
                expected: row.get(3)?,
                ratio: row.get(4)?,
                z_score: row.get(5)?,
            })
        })
    }

    /// Authors with the most matching posts, most first (ties by DID).
    pub fn top_authors(&self, plan: &TopPlan) -> Result<Vec<(String, u64)>> {
        self.run(&Plan::TopAuthors(plan.clone()), |row| Ok((row.get(0)?, count(row, 1)?)))
    }

    /// Hashtags on the most matching posts, most first (ties by tag).
    pub fn top_hashtags(&self, plan: &TopPlan) -> Result<Vec<HashtagCount>> {
        self.run(&Plan::TopHashtags(plan.clone()), |row| {
            Ok(HashtagCount { tag: row.get(0)?, posts: count(row, 1)?, authors: count(row, 2)? })
        })
    }

    /// Each author's (of `plan.filter.authors`) most used hashtags, by author; `authors` is 1.
    pub fn top_hashtags_per_author(&self, plan: &TopPlan) -> Result<Vec<(String, HashtagCount)>> {
        if plan.filter.authors.is_empty() {
            return Ok(Vec::new());
        }
        self.run(&Plan::TopHashtagsPerAuthor(plan.clone()), |row| {
            Ok((row.get(0)?, HashtagCount { tag: row.get(1)?, posts: count(row, 2)?, authors: 1 }))
        })
    }

    /// Posts, authors and replies per bucket of `interval` in `zone`: every bucket from
    /// `filter.since` (or the first post) to `filter.until` (or the last post), empty ones
    /// with zeros, ordered by start; with a dimension, one row per bucket and group (every
    /// group seen anywhere in the range), groups ordered by name with the null group last.
    pub fn time_buckets(
        &self,
        filter: &PostFilter,
        interval: Interval,
        zone: chrono_tz::Tz,
        group_by: Option<Dimension>,
        measures: Measures,
    ) -> Result<Vec<Bucket>> {
        let Some((rows, offsets)) = self.counted_buckets(filter, interval, zone, group_by, measures)? else {
            return Ok(Vec::new());
        };
        zero_filled(rows, filter, interval, zone, &offsets)
    }

    /// [`Engine::time_buckets`] for each author of `filter.authors` (as if asked one by one),
    /// in one statement. Authors without matching posts get no buckets.
    pub fn time_buckets_per_author(
        &self,
        filter: &PostFilter,
        interval: Interval,
        zone: chrono_tz::Tz,
        measures: Measures,
    ) -> Result<HashMap<String, Vec<Bucket>>> {
        let Some((rows, offsets)) = self.counted_buckets(filter, interval, zone, Some(Dimension::Author), measures)?
        else {
            return Ok(HashMap::new());
        };
        let mut by_author: HashMap<String, Vec<Bucket>> = HashMap::new();
        for mut bucket in rows {
            let Some(did) = bucket.group.take() else { continue };
            by_author.entry(did).or_default().push(bucket);
        }
        by_author
            .into_iter()
            .map(|(did, rows)| Ok((did, zero_filled(rows, filter, interval, zone, &offsets)?)))
            .collect()
    }

    /// The non-empty buckets (ordered by start), and the zone offsets they were computed with;
    /// `None` for an empty range.
    pub(super) fn counted_buckets(
        &self,
        filter: &PostFilter,
        interval: Interval,
        zone: chrono_tz::Tz,
        group_by: Option<Dimension>,
        measures: Measures,
    ) -> Result<Option<(Vec<Bucket>, zone::Offsets)>> {
        if let (Some(since), Some(until)) = (filter.since_us, filter.until_us)
            && since >= until
        {
            return Ok(None);
        }
        // Offsets must cover every clock value bucketed: the filter's range, else every day
        // that holds posts (with margin for indexed_at, which is near created_at).
        let partitions = self.post_partitions()?;
        let day_us = |day: chrono::NaiveDate| day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_micros();
        let lake_from = partitions.iter().min().map_or(0, |d| day_us(*d)) - 2 * MICROS_PER_DAY;
        let lake_to = partitions.iter().max().map_or(0, |d| day_us(*d)).max(chrono::Utc::now().timestamp_micros())
            + 2 * MICROS_PER_DAY;
        // The first bucket starts before `since` (up to a month): its offset is needed too.
        let offsets_from = filter.since_us.map_or(lake_from, |since| since.saturating_sub(32 * MICROS_PER_DAY));
        let offsets_to = filter.until_us.unwrap_or(lake_to).max(offsets_from);
        let offsets = zone::offsets(zone, offsets_from, offsets_to);
        let plan = BucketsPlan { filter: filter.clone(), interval, zone, offsets: offsets.clone(), group_by, measures };
        let calendar = interval.is_calendar();
        let rows = self.run(&Plan::Buckets(plan), |row| {
            let start = timestamp_micros(&row.get::<_, Value>(0)?)
                .ok_or_else(|| Error::Corrupt("a bucket without a start".into()))?;
            let start_us = if calendar {
                let local = chrono::DateTime::from_timestamp_micros(start).unwrap_or_default().naive_utc();
                zone::local_to_utc(zone, local)
            } else {
                start
            };
            Ok(Bucket {
                start_us,
                group: text(row.get::<_, Value>(1)?),
                posts: count(row, 2)?,
                authors: count(row, 3)?,
                replies: count(row, 4)?,
            })
        })?;
        Ok(Some((rows, offsets)))
    }
}
