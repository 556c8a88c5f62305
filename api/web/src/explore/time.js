// Dates in a chosen IANA time zone, with nothing but Intl.

/** Minutes `zone` is ahead of UTC at `instant`. */
function offsetMinutes(instant, zone) {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  }).formatToParts(instant);
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  const asUtc = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return Math.round((asUtc - instant.getTime()) / 60_000);
}

/** The instant a calendar day (`YYYY-MM-DD`) starts in `zone`; `days` moves the day first. */
export function startOfDay(day, zone, days = 0) {
  const [year, month, date] = day.split('-').map(Number);
  const midnightUtc = Date.UTC(year, month - 1, date + days);
  // The zone's offset near that midnight, then again at the guess (a DST change may lie between).
  let guess = midnightUtc - offsetMinutes(new Date(midnightUtc), zone) * 60_000;
  guess = midnightUtc - offsetMinutes(new Date(guess), zone) * 60_000;
  return new Date(guess);
}

/** Zones offered first: UTC, the browser's own, and some whose offsets are not whole hours. */
const USUAL_ZONES = ['UTC', 'America/New_York', 'Europe/Berlin', 'Asia/Kolkata', 'Asia/Kathmandu', 'Asia/Tokyo'];

/** Whether the browser knows `zone` (by its IANA name, old aliases included). */
export function isTimeZone(zone) {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return Boolean(zone);
  } catch {
    return false;
  }
}

/** Every time zone the browser knows (its list names some by old aliases), the usual ones first. */
export function timeZones(current) {
  const own = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const all = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  return [...new Set([current, own, ...USUAL_ZONES, ...all])].filter(isTimeZone);
}

/** `instant` as a short label in `zone`: the hour for hourly buckets, the day otherwise. */
export function label(instant, zone, interval) {
  const options =
    interval === 'HOUR'
      ? { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }
      : { year: 'numeric', month: 'short', day: 'numeric' };
  return new Intl.DateTimeFormat(undefined, { timeZone: zone, ...options }).format(new Date(instant));
}
