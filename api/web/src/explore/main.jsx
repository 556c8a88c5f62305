// The reference explorer at `/explore`, built only on the public GraphQL API: a search with
// filters, a result list paged by cursor, a timeBuckets chart, the top hashtags and authors of
// the filter, a live feed, and how fresh the answers are. The filter lives in the address, so
// a view can be shared.
import './style.css';
import { StrictMode, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { query, subscribe } from './api.js';
import { Chart } from './chart.jsx';
import { LIVE, POSTS, STATS } from './queries.js';
import { isTimeZone, startOfDay, timeZones } from './time.js';

const MODES = ['SUBSTRING', 'WORDS', 'PHRASE', 'PREFIX'];
const INTERVALS = ['HOUR', 'DAY'];
const LIVE_KEPT = 50;
const FIELDS = { q: '', mode: 'SUBSTRING', lang: '', author: '', tag: '', since: '', until: '', interval: 'HOUR', tz: 'UTC', group: '' };

function fromAddress() {
  const params = new URLSearchParams(window.location.search);
  const form = Object.fromEntries(Object.entries(FIELDS).map(([key, value]) => [key, params.get(key) ?? value]));
  // A link with a zone this browser does not know falls back to UTC rather than failing.
  if (!isTimeZone(form.tz)) form.tz = FIELDS.tz;
  if (!INTERVALS.includes(form.interval)) form.interval = FIELDS.interval;
  if (!MODES.includes(form.mode)) form.mode = FIELDS.mode;
  return form;
}

function toAddress(form) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(form)) if (value && value !== FIELDS[key]) params.set(key, value);
  const search = params.toString();
  window.history.replaceState(null, '', search ? `?${search}` : window.location.pathname);
}

const list = (text) => text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);

/** The PostFilter of the form; `live` leaves the date range out (live posts are new). */
function postFilter(form, { live = false } = {}) {
  const filter = {};
  if (form.q.trim()) filter.text = { query: form.q.trim(), mode: form.mode };
  if (list(form.lang).length) filter.langs = list(form.lang);
  if (list(form.author).length) filter.authors = list(form.author);
  if (list(form.tag).length) filter.hashtags = list(form.tag).map((t) => t.replace(/^#/, ''));
  if (!live && form.since) filter.since = startOfDay(form.since, form.tz).toISOString();
  // The until day is included: the range ends where the next day starts.
  if (!live && form.until) filter.until = startOfDay(form.until, form.tz, 1).toISOString();
  return filter;
}

function Post({ post, onAuthor, onTag }) {
  return (
    <li className="post" data-uri={post.uri}>
      <div className="meta">
        <button type="button" className="link" onClick={() => onAuthor(post.author.did)} title={post.author.did}>
          {post.author.handle ? `@${post.author.handle}` : post.author.did}
        </button>
        <time dateTime={post.createdAt}>{new Date(post.createdAt).toLocaleString()}</time>
        {post.langs.length > 0 && <span className="langs">{post.langs.join(' ')}</span>}
      </div>
      <p className="text">{post.text}</p>
      {post.hashtags.length > 0 && (
        <div className="tags">
          {post.hashtags.map((tag) => (
            <button type="button" className="link" key={tag} onClick={() => onTag(tag)}>#{tag}</button>
          ))}
        </div>
      )}
    </li>
  );
}

function Freshness({ extensions }) {
  const fresh = extensions?.freshness;
  if (!fresh) return <span id="freshness">freshness unknown</span>;
  const through = fresh.ingestedThrough ? new Date(fresh.ingestedThrough).toLocaleString() : 'nothing yet';
  const lag = fresh.lagMs == null ? '' : ` · ${(fresh.lagMs / 1000).toFixed(1)} s behind`;
  return (
    <span id="freshness" data-ingested-through={fresh.ingestedThrough ?? ''} title={`flushed through ${fresh.flushedThrough ?? 'nothing yet'}`}>
      data through {through}{lag}{extensions.cache ? ` · cache ${extensions.cache}` : ''}
    </span>
  );
}

function useLivePosts(form) {
  const [posts, setPosts] = useState([]);
  const [state, setState] = useState('connecting');
  const filter = JSON.stringify(postFilter(form, { live: true }));
  useEffect(() => {
    setPosts([]);
    setState('connecting');
    const stop = subscribe(LIVE, { filter: JSON.parse(filter) }, {
      onData: (data) => {
        setState('live');
        setPosts((kept) => [data.livePosts, ...kept].slice(0, LIVE_KEPT));
      },
      onError: (error) => setState(`stopped: ${error.message}`),
    });
    // The subscription is sent once the socket opens; say so then, not at the first post.
    const opened = setTimeout(() => setState((s) => (s === 'connecting' ? 'live' : s)), 500);
    return () => {
      clearTimeout(opened);
      stop();
    };
  }, [filter]);
  return { posts, state };
}

function Explorer() {
  const [form, setForm] = useState(fromAddress);
  // The filter the answers are for: the form as last submitted.
  const [applied, setApplied] = useState(form);
  const [posts, setPosts] = useState({ nodes: [], totalCount: null, pageInfo: null });
  const [stats, setStats] = useState(null);
  const [extensions, setExtensions] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  const live = useLivePosts(applied);
  const zones = useMemo(() => timeZones(form.tz), [form.tz]);
  const generation = useRef(0);

  const run = useCallback(async (next) => {
    const mine = ++generation.current;
    toAddress(next);
    setLoading(true);
    setError(null);
    const filter = postFilter(next);
    try {
      const [page, aggregates] = await Promise.all([
        query(POSTS, { filter }),
        query(STATS, { filter, interval: next.interval, timeZone: next.tz, groupBy: next.group || null }),
      ]);
      if (mine !== generation.current) return;
      setPosts(page.data.posts);
      setStats(aggregates.data);
      setExtensions(page.extensions);
    } catch (e) {
      if (mine === generation.current) setError(e.message);
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  }, []);

  useEffect(() => {
    run(applied);
  }, [applied, run]);

  const more = async () => {
    const mine = generation.current;
    setLoading(true);
    try {
      const page = await query(POSTS, { filter: postFilter(applied), after: posts.pageInfo.endCursor });
      if (mine !== generation.current) return;
      setPosts((shown) => ({ ...page.data.posts, nodes: [...shown.nodes, ...page.data.posts.nodes] }));
      setExtensions(page.extensions);
    } catch (e) {
      setError(e.message);
    } finally {
      setLoading(false);
    }
  };

  const set = (key) => (event) => setForm((f) => ({ ...f, [key]: event.target.value }));
  const apply = (changes) => {
    const next = { ...form, ...changes };
    setForm(next);
    setApplied(next);
  };
  const onAuthor = (did) => apply({ author: did });
  const onTag = (tag) => apply({ tag });

  return (
    <>
      <header>
        <h1>Skyglass explorer</h1>
        <Freshness extensions={extensions} />
        <a href="/">playground</a>
      </header>
      <form
        id="search"
        onSubmit={(event) => {
          event.preventDefault();
          setApplied({ ...form });
        }}
      >
        <input name="q" type="search" placeholder="Search posts" value={form.q} onChange={set('q')} autoFocus />
        <select name="mode" value={form.mode} onChange={set('mode')} aria-label="search mode">
          {MODES.map((m) => <option key={m} value={m}>{m.toLowerCase()}</option>)}
        </select>
        <input name="lang" placeholder="languages (en, ja)" value={form.lang} onChange={set('lang')} />
        <input name="author" placeholder="author DID" value={form.author} onChange={set('author')} />
        <input name="tag" placeholder="hashtags" value={form.tag} onChange={set('tag')} />
        <label>from <input name="since" type="date" value={form.since} onChange={set('since')} /></label>
        <label>to <input name="until" type="date" value={form.until} onChange={set('until')} /></label>
        <button type="submit">Search</button>
        <button type="button" onClick={() => apply({ ...FIELDS, interval: form.interval, tz: form.tz, group: form.group })}>Clear</button>
      </form>
      {error && <p id="error" role="alert">{error}</p>}
      <main aria-busy={loading}>
        <section id="results">
          <h2>
            Posts <span id="total">{posts.totalCount ?? '…'}</span>
          </h2>
          <ol>
            {posts.nodes.map((post) => <Post key={post.uri} post={post} onAuthor={onAuthor} onTag={onTag} />)}
          </ol>
          {posts.pageInfo?.hasNextPage && (
            <button type="button" id="more" onClick={more} disabled={loading}>More</button>
          )}
        </section>
        <aside>
          <section id="activity">
            <h2>Activity</h2>
            <div className="controls">
              <select name="interval" value={form.interval} onChange={(e) => apply({ interval: e.target.value })} aria-label="interval">
                {INTERVALS.map((i) => <option key={i} value={i}>per {i.toLowerCase()}</option>)}
              </select>
              <select name="tz" value={form.tz} onChange={(e) => apply({ tz: e.target.value })} aria-label="time zone">
                {zones.map((z) => <option key={z} value={z}>{z}</option>)}
              </select>
              <label>
                <input type="checkbox" name="group" checked={form.group === 'LANG'} onChange={(e) => apply({ group: e.target.checked ? 'LANG' : '' })} />
                by language
              </label>
            </div>
            {stats && <Chart rows={stats.timeBuckets} interval={applied.interval} zone={applied.tz} />}
          </section>
          <section id="top-hashtags">
            <h2>Top hashtags</h2>
            <ol>
              {stats?.topHashtags.map((h) => (
                <li key={h.tag}>
                  <button type="button" className="link" onClick={() => onTag(h.tag)}>#{h.tag}</button> <span className="count">{h.posts}</span>
                </li>
              ))}
            </ol>
          </section>
          <section id="top-authors">
            <h2>Top authors</h2>
            <ol>
              {stats?.topAuthors.map((a) => (
                <li key={a.author.did}>
                  <button type="button" className="link" onClick={() => onAuthor(a.author.did)} title={a.author.did}>
                    {a.author.handle ? `@${a.author.handle}` : a.author.did}
                  </button>{' '}
                  <span className="count">{a.posts}</span>
                </li>
              ))}
            </ol>
          </section>
          <section id="live">
            <h2>
              Live <span id="live-state">{live.state}</span>
            </h2>
            <ol>
              {live.posts.map((post) => <Post key={post.uri} post={post} onAuthor={onAuthor} onTag={onTag} />)}
            </ol>
          </section>
        </aside>
      </main>
    </>
  );
}

createRoot(document.getElementById('explorer')).render(
  <StrictMode>
    <Explorer />
  </StrictMode>,
);
