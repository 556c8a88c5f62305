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
//!
//! Behind a reverse proxy every caller connects from the proxy's address. Peers in
//! `--trusted-proxies` are taken at their word: the client is the nearest address in
//! `X-Forwarded-For` that is not itself a trusted proxy ([`client_address`]). Nobody else's
//! header is believed, so a client cannot pick its own budget.

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

/// A block of addresses (`10.0.0.0/8`, `fd00::/8`, or one address) whose connections are
/// trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBlock {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for AddressBlock {
    type Err = String;

    fn from_str(text: &str) -> Result<AddressBlock, String> {
        let bad = || format!("`{text}` is not an address or a block like 10.0.0.0/8 or fd00::/8");
        let (address, prefix) = text.trim().split_once('/').map_or((text.trim(), None), |(a, p)| (a, Some(p)));
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(bad)?,
        };
        Ok(AddressBlock { network, prefix })
    }
}

impl AddressBlock {
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let leading = |bytes: &[u8], bits: u8| -> u128 {
            let value = bytes.iter().fold(0_u128, |acc, b| (acc << 8) | u128::from(*b));
            let width = bytes.len() as u32 * 8;
            if bits == 0 { 0 } else { value >> (width - u32::from(bits)) }
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                leading(&net.octets(), self.prefix) == leading(&ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                leading(&net.octets(), self.prefix) == leading(&ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// The address a request comes from: its peer's, unless the peer is a trusted proxy; then,
/// walking `X-Forwarded-For` (`forwarded`, every value of the header in order) from the
/// nearest hop, the first address that is not a trusted proxy (or the farthest one, when every
/// hop is trusted). A value that does not parse ends the walk at the hop before it.
pub fn client_address(peer: IpAddr, forwarded: &[&str], trusted: &[AddressBlock]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|block| block.contains(address));
    let mut client = peer;
    let hops = forwarded.iter().rev().flat_map(|value| value.rsplit(','));
    for hop in hops {
        if !is_trusted(client) {
            break;
        }
        match hop.trim().parse::<IpAddr>() {
            Ok(address) => client = address,
            Err(_) => break,
        }
    }
    client
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

    #[test]
    fn a_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let blocks: Vec<AddressBlock> =
            ["10.0.0.0/8", "fd00::/8", "192.0.2.7"].iter().map(|b| b.parse().unwrap()).collect();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(blocks[0].contains(ip("10.255.0.1")) && !blocks[0].contains(ip("11.0.0.1")));
        assert!(blocks[0].contains(ip("::ffff:10.1.2.3")), "IPv4 mapped into IPv6");
        assert!(blocks[1].contains(ip("fd12::1")) && !blocks[1].contains(ip("fe80::1")));
        assert!(blocks[2].contains(ip("192.0.2.7")) && !blocks[2].contains(ip("192.0.2.8")));
        assert!("0.0.0.0/0".parse::<AddressBlock>().unwrap().contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "proxy", "10.0.0/8", "::/129", ""] {
            assert!(bad.parse::<AddressBlock>().is_err(), "{bad}");
        }

        let client = |peer: &str, forwarded: &[&str]| client_address(ip(peer), forwarded, &blocks);
        // An untrusted peer: its header is not believed.
        assert_eq!(client("203.0.113.5", &["198.51.100.1"]), ip("203.0.113.5"));
        // Through one trusted proxy, and through two (the farther one's hop in the header too).
        assert_eq!(client("10.0.0.2", &["198.51.100.1"]), ip("198.51.100.1"));
        assert_eq!(client("10.0.0.2", &["198.51.100.1, 10.0.0.9"]), ip("198.51.100.1"));
        assert_eq!(client("10.0.0.2", &["198.51.100.1", "10.0.0.9"]), ip("198.51.100.1"));
        // What a client wrote itself, farther than the first untrusted hop, is not believed.
        assert_eq!(client("10.0.0.2", &["1.1.1.1, 198.51.100.1"]), ip("198.51.100.1"));
        // No header, or garbage: the proxy itself.
        assert_eq!(client("10.0.0.2", &[]), ip("10.0.0.2"));
        assert_eq!(client("10.0.0.2", &["unknown"]), ip("10.0.0.2"));
        assert_eq!(client("10.0.0.2", &["1.1.1.1, unknown, 10.0.0.3"]), ip("10.0.0.3"));
    }

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
