// The timeBuckets chart: posts per bucket, one line per group (the five biggest groups, the
// rest summed as "other"), drawn as SVG with a point per bucket.
import { label } from './time.js';

const WIDTH = 480;
const HEIGHT = 200;
const PAD = { left: 40, right: 16, top: 10, bottom: 26 };
const COLORS = ['#1d6fe8', '#e8591d', '#18a058', '#a23fd1', '#d1a23f', '#6b7280'];
const MOST_GROUPS = 5;

/** Series `{ name, values }` over `starts`, from the rows of `timeBuckets`. */
export function series(rows) {
  const starts = [...new Set(rows.map((r) => r.start))].sort();
  const index = new Map(starts.map((s, i) => [s, i]));
  const totals = new Map();
  for (const row of rows) totals.set(row.group ?? '', (totals.get(row.group ?? '') ?? 0) + row.posts);
  const ranked = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || a.localeCompare(b));
  const kept = new Set(ranked.slice(0, MOST_GROUPS));
  const lines = new Map();
  for (const row of rows) {
    const group = row.group ?? '';
    const name = kept.has(group) ? group : 'other';
    if (!lines.has(name)) lines.set(name, new Array(starts.length).fill(0));
    lines.get(name)[index.get(row.start)] += row.posts;
  }
  const order = [...ranked.filter((g) => kept.has(g)), ...(lines.has('other') && !kept.has('other') ? ['other'] : [])];
  return { starts, lines: order.map((name) => ({ name: name || 'posts', values: lines.get(name) })) };
}

export function Chart({ rows, interval, zone }) {
  const { starts, lines } = series(rows);
  if (starts.length === 0) return <p className="empty">No posts in this range.</p>;
  const max = Math.max(1, ...lines.flatMap((l) => l.values));
  const x = (i) => PAD.left + (starts.length === 1 ? 0.5 : i / (starts.length - 1)) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / max) * (HEIGHT - PAD.top - PAD.bottom);
  const ticks = [0, Math.round(max / 2), max];
  const labelled = [0, Math.floor((starts.length - 1) / 2), starts.length - 1];
  return (
    <figure>
      <svg
        id="chart"
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-label={`posts per ${interval.toLowerCase()}`}
        data-buckets={starts.length}
        data-series={lines.length}
      >
        {ticks.map((t) => (
          <g key={`y${t}`} className="tick">
            <line x1={PAD.left} x2={WIDTH - PAD.right} y1={y(t)} y2={y(t)} />
            <text x={PAD.left - 6} y={y(t) + 4} textAnchor="end">{t}</text>
          </g>
        ))}
        {[...new Set(labelled)].map((i) => (
          <text key={`x${i}`} className="tick" x={x(i)} y={HEIGHT - 8} textAnchor="middle">
            {label(starts[i], zone, interval)}
          </text>
        ))}
        {lines.map((line, n) => (
          <g key={line.name} className="series" data-name={line.name} style={{ color: COLORS[n % COLORS.length] }}>
            <polyline fill="none" stroke="currentColor" strokeWidth="2" points={line.values.map((v, i) => `${x(i)},${y(v)}`).join(' ')} />
            {line.values.map((v, i) => (
              <circle key={starts[i]} cx={x(i)} cy={y(v)} r="3" fill="currentColor">
                <title>{`${line.name}: ${v} posts, ${label(starts[i], zone, interval)}`}</title>
              </circle>
            ))}
          </g>
        ))}
      </svg>
      {lines.length > 1 && (
        <figcaption className="legend">
          {lines.map((line, n) => (
            <span key={line.name} style={{ color: COLORS[n % COLORS.length] }}>● {line.name}</span>
          ))}
        </figcaption>
      )}
    </figure>
  );
}
