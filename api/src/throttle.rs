//! Rate limiting by cost, per client.
//!
//! Every lake statement is priced before it runs, from [`lake::exec::Engine::estimate`]: one
//! unit, plus one per MiB of Parquet in the day partitions its time range leaves after pruning,
//! plus one per hundred rows it returns (see [`cost`]). A month-wide scan thus costs thousands of
//! units and a page of today's posts a handful.
//!
//! Each client (an API key; else the peer's IP address) has a budget that refills at a steady
//! rate up to a burst. A statement runs while its client's budget is above zero and takes its
//! cost from it: the budget may go below zero, so one large statement is never refused
//! outright, but the client then waits until the budget refills. A statement refused for want
//! of budget fails with `RATE_LIMITED` and the seconds to wait; the HTTP answer is a 429 with
//! `Retry-After`. Answers from the result cache cost nothing, and admins are not limited.
//!
//! Budgets are kept in each API process (a replica each), not in Redis: no round trip per
//! statement, and the limit still holds while Redis is down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lake::exec::Estimate;

/// Parquet bytes worth one cost unit.
pub const BYTES_PER_UNIT: u64 = 1 << 20;
/// Rows returned worth one cost unit.
pub const ROWS_PER_UNIT: u64 = 100;
/// Most clients whose budgets are kept; past it, full budgets (clients that owe nothing) are
/// forgotten.
const MAX_CLIENTS: usize = 100_000;

/// The cost of a statement expected to read `estimate`.
pub fn cost(estimate: Estimate) -> u64 {
    1 + estimate.bytes.div_ceil(BYTES_PER_UNIT) + estimate.rows.div_ceil(ROWS_PER_UNIT)
}

/// A wait in whole seconds, rounded up, at least one: what `Retry-After` and
/// `retryAfterSeconds` say.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Who a budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Client {
    /// A key, by the first bytes of its SHA-256.
    Key([u8; 8]),
    /// A caller without a key, by the address it connected from.
    Address(IpAddr),
    /// A caller whose address is not known (not over TCP).
    #[default]
    Unknown,
}

/// The budgets of every client.
#[derive(Debug)]
pub struct Throttle {
    /// Units a budget regains per second.
    per_second: f64,
    /// Units a budget holds at most (and starts with).
    burst: f64,
    budgets: Mutex<HashMap<Client, Budget>>,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    units: f64,
    at: Instant,
}

impl Throttle {
    /// Budgets of `per_minute` units a minute, holding at most `burst`; `None` (no limit) when
    /// `per_minute` is 0.
    pub fn new(per_minute: u64, burst: u64) -> Option<Throttle> {
        (per_minute > 0).then(|| Throttle {
            per_second: per_minute as f64 / 60.0,
            burst: burst.max(1) as f64,
            budgets: Mutex::new(HashMap::new()),
        })
    }

    pub fn burst(&self) -> u64 {
        self.burst as u64
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Takes `cost` from `client`'s budget if it is above zero, and tells what is left;
    /// otherwise how long until it is above zero again.
    pub fn take(&self, client: Client, cost: u64) -> Result<f64, Duration> {
        self.take_at(client, cost, Instant::now())
    }

    fn take_at(&self, client: Client, cost: u64, now: Instant) -> Result<f64, Duration> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if budgets.len() >= MAX_CLIENTS && !budgets.contains_key(&client) {
            budgets.retain(|_, budget| self.refilled(*budget, now) < self.burst);
        }
        let budget = budgets.entry(client).or_insert(Budget { units: self.burst, at: now });
        let units = self.refilled(*budget, now);
        if units <= 0.0 {
            // Just past zero, so the next statement is not refused by a rounding.
            let wait = (-units + 1e-3) / self.per_second;
            *budget = Budget { units, at: now };
            return Err(Duration::from_secs_f64(wait));
        }
        let left = units - cost as f64;
        *budget = Budget { units: left, at: now };
        Ok(left)
    }

    /// What `client`'s budget holds now.
    pub fn left(&self, client: Client) -> f64 {
        let budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        budgets.get(&client).map_or(self.burst, |budget| self.refilled(*budget, Instant::now()))
    }

    fn refilled(&self, budget: Budget, now: Instant) -> f64 {
        let regained = now.saturating_duration_since(budget.at).as_secs_f64() * self.per_second;
        (budget.units + regained).min(self.burst)
    }
}

/// The cost of one request: what its statements were priced at, and the budget they are taken
/// from (none for admins, or when rate limiting is off).
#[derive(Debug, Default)]
pub struct RequestCost {
    units: AtomicU64,
    limit: Option<(std::sync::Arc<Throttle>, Client)>,
    /// How long the client must wait, once one of its statements was refused.
    refused_for: Mutex<Option<Duration>>,
}

impl RequestCost {
    pub fn new(limit: Option<(std::sync::Arc<Throttle>, Client)>) -> RequestCost {
        RequestCost { limit, ..RequestCost::default() }
    }

    /// Charges a statement priced at `cost`, or refuses it.
    pub fn charge(&self, cost: u64) -> async_graphql::Result<()> {
        if let Some((throttle, client)) = &self.limit
            && let Err(wait) = throttle.take(*client, cost)
        {
            metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
            let mut refused = self.refused_for.lock().unwrap_or_else(|p| p.into_inner());
            *refused = Some(refused.map_or(wait, |before| before.max(wait)));
            return Err(crate::error::rate_limited(wait));
        }
        self.units.fetch_add(cost, Ordering::Relaxed);
        metrics::counter!(crate::metrics::QUERY_COST).increment(cost);
        Ok(())
    }

    /// How long to wait before asking again, when a statement of this request was refused.
    pub fn retry_after(&self) -> Option<Duration> {
        *self.refused_for.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `extensions.cost`: the units this request's statements cost, and where there is a limit,
    /// the budget left, its size and how fast it refills.
    pub fn to_json(&self) -> serde_json::Value {
        let units = self.units.load(Ordering::Relaxed);
        match &self.limit {
            None => serde_json::json!({ "units": units }),
            Some((throttle, client)) => serde_json::json!({
                "units": units,
                "budget": {
                    "remaining": throttle.left(*client).floor() as i64,
                    "capacity": throttle.burst(),
                    "refillPerSecond": throttle.per_second(),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> Client {
        Client::Key([n; 8])
    }

    #[test]
    fn a_statement_costs_one_plus_its_mebibytes_plus_its_hundreds_of_rows() {
        assert_eq!(cost(Estimate::default()), 1);
        assert_eq!(cost(Estimate { bytes: 1, partitions: 1, rows: 20 }), 3);
        assert_eq!(cost(Estimate { bytes: 5 << 20, partitions: 3, rows: 100 }), 7);
        assert_eq!(cost(Estimate { bytes: (5 << 20) + 1, partitions: 3, rows: 101 }), 9);
    }

    #[test]
    fn a_budget_may_go_below_zero_once_then_refuses_until_it_refills() {
        let throttle = Throttle::new(600, 100).unwrap(); // 10 units a second
        let start = Instant::now();
        assert_eq!(throttle.take_at(client(1), 60, start), Ok(40.0));
        assert_eq!(throttle.take_at(client(1), 90, start), Ok(-50.0), "one more statement runs on credit");
        let wait = throttle.take_at(client(1), 1, start).unwrap_err();
        assert!((wait.as_secs_f64() - 5.0).abs() < 0.01, "50 units owed at 10 a second: {wait:?}");
        // Others are not held up by it.
        assert_eq!(throttle.take_at(client(2), 1, start), Ok(99.0));
        // Still owing after 4 s; free to run after 5 s.
        assert!(throttle.take_at(client(1), 1, start + Duration::from_secs(4)).is_err());
        let left = throttle.take_at(client(1), 1, start + Duration::from_millis(5_100)).unwrap();
        assert!((left - 0.0).abs() < 0.01, "{left}");
        // Refills up to the burst, not past it.
        let left = throttle.take_at(client(1), 0, start + Duration::from_secs(3600)).unwrap();
        assert_eq!(left, 100.0);
    }

    #[test]
    fn no_limit_at_zero_units_a_minute() {
        assert!(Throttle::new(0, 100).is_none());
    }

    #[test]
    fn full_budgets_are_forgotten_when_there_are_too_many_clients() {
        let throttle = Throttle::new(60, 10).unwrap();
        let now = Instant::now();
        throttle.take_at(Client::Unknown, 20, now).unwrap();
        for n in 0..MAX_CLIENTS as u32 {
            let address = IpAddr::from(n.to_be_bytes());
            throttle.take_at(Client::Address(address), 0, now).unwrap();
        }
        let budgets = throttle.budgets.lock().unwrap();
        assert!(budgets.len() < 10, "{} kept", budgets.len());
        assert!(budgets.contains_key(&Client::Unknown), "a client that owes is kept");
    }

    #[test]
    fn a_request_adds_up_what_ran_and_remembers_the_longest_wait() {
        let throttle = std::sync::Arc::new(Throttle::new(60, 5).unwrap());
        let cost = RequestCost::new(Some((throttle.clone(), client(7))));
        cost.charge(3).unwrap();
        cost.charge(4).unwrap();
        let refused = cost.charge(1).unwrap_err();
        assert_eq!(cost.units.load(Ordering::Relaxed), 7, "a refused statement costs nothing");
        assert!(cost.retry_after().is_some_and(|wait| wait >= Duration::from_secs(1)));
        let json = serde_json::to_value(refused.extensions.unwrap()).unwrap();
        assert_eq!(json["code"], "RATE_LIMITED");
        let json = cost.to_json();
        assert_eq!((json["units"].as_u64(), json["budget"]["capacity"].as_u64()), (Some(7), Some(5)));
        assert!(json["budget"]["remaining"].as_i64().unwrap() < 0);
        assert_eq!(RequestCost::new(None).to_json(), serde_json::json!({ "units": 0 }));
    }
}
