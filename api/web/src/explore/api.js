// The explorer's one way to the server: the public GraphQL API, with automatic persisted
// queries (the document's SHA-256 first, over GET so a browser or proxy may cache it; the
// document itself only when the server does not know it yet), and graphql-ws for live posts.
import { sha256 } from '@noble/hashes/sha2';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils';
import { createClient } from 'graphql-ws';

/** The websocket address of the GraphQL endpoint of the page's server. */
export function websocketUrl() {
  const url = new URL('/graphql/ws', window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

const hashes = new Map();
function hashOf(document) {
  if (!hashes.has(document)) hashes.set(document, bytesToHex(sha256(utf8ToBytes(document))));
  return hashes.get(document);
}

/** A GraphQL error answer, with the errors as the server sent them. */
export class GraphQLError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join('; '));
    this.errors = errors;
  }
}

/**
 * Runs `document` with `variables` as a persisted query. Resolves to `{ data, extensions }`;
 * rejects with a GraphQLError when the answer has errors.
 */
export async function query(document, variables, { signal } = {}) {
  const persisted = { persistedQuery: { version: 1, sha256Hash: hashOf(document) } };
  const params = new URLSearchParams({
    variables: JSON.stringify(variables),
    extensions: JSON.stringify(persisted),
  });
  let answer = await send(fetch(`/graphql?${params}`, { signal, headers: { accept: 'application/json' } }));
  const notFound = answer.errors?.some((e) => e.extensions?.code === 'PERSISTED_QUERY_NOT_FOUND');
  if (notFound) {
    // The server registers the document under its hash for the next time.
    const body = JSON.stringify({ query: document, variables, extensions: persisted });
    answer = await send(fetch('/graphql', { method: 'POST', signal, body, headers: { 'content-type': 'application/json' } }));
  }
  if (answer.errors?.length) throw new GraphQLError(answer.errors);
  return answer;
}

async function send(request) {
  const response = await request;
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`the server answered ${response.status}: ${text.slice(0, 200)}`);
  }
}

let client;
/**
 * Subscribes to `document` over the websocket; `onData` gets each payload's data. Returns a
 * function that ends the subscription.
 */
export function subscribe(document, variables, { onData, onError }) {
  client ??= createClient({ url: websocketUrl(), lazy: true, retryAttempts: Infinity });
  return client.subscribe(
    { query: document, variables },
    {
      next: (payload) => (payload.errors ? onError(new GraphQLError(payload.errors)) : onData(payload.data)),
      error: (error) => onError(error instanceof Error ? error : new Error(String(error?.reason ?? 'the live feed closed'))),
      complete: () => {},
    },
  );
}
