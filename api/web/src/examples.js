// The playground's first tabs: an example for every root field of the schema (a test checks
// that none is missing). Each runs as is against any lake.

const json = (value) => JSON.stringify(value, null, 2);

export const EXAMPLES = [
  {
    query: `# The newest posts: pass pageInfo.endCursor as $after for the next page.
query NewestPosts($filter: PostFilter, $after: String) {
  posts(filter: $filter, first: 10, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes {
      uri
      text
      createdAt
      langs
      hashtags
      likeCount
      repostCount
      replyCount
      quoteCount
      author { did handle }
    }
  }
}`,
    variables: json({ filter: { langs: ['en'] } }),
  },
  {
    query: `# What is rising: hashtags of the last hour against their rate in the week before.
# Try kind: LINK_DOMAIN or LANG, rank: Z_SCORE, or an explicit window and baseline.
query Trending($filter: PostFilter) {
  trending(kind: HASHTAG, filter: $filter, minPosts: 5, first: 10) {
    item
    posts
    baselinePosts
    expected
    ratio
    zScore
  }
}`,
    variables: json({ filter: { langs: ['en'] } }),
  },
  {
    query: `# One post by its AT-URI (copy one from the posts tab); null when the lake lacks it.
query OnePost($uri: ID!) {
  post(uri: $uri) {
    uri
    text
    createdAt
    detectedLang
    embedType
    imageCount
    replyParent
    quoteUri
    author { did handle }
  }
}`,
    variables: json({ uri: 'at://did:plc:example/app.bsky.feed.post/3kexample' }),
  },
  {
    query: `# An author by DID: handle, status, counts and activity.
query OneAuthor($did: ID!) {
  author(did: $did) {
    did
    handle
    active
    postCount
    likesReceived
    repostsReceived
    firstPostAt
    lastPostAt
    activity(interval: DAY) { start posts }
    topHashtags(first: 5) { tag posts }
  }
}`,
    variables: json({ did: 'did:plc:example' }),
  },
  {
    query: `# Posts per hour of the last day in a time zone, one row per bucket and language.
query Activity($filter: PostFilter) {
  timeBuckets(interval: HOUR, filter: $filter, timeZone: "UTC", groupBy: LANG) {
    start
    group
    posts
    authors
    replies
  }
}`,
    variables: json({ filter: { since: new Date(Date.now() - 86_400_000).toISOString() } }),
  },
  {
    query: `# The hashtags on the most posts.
query TopHashtags($filter: PostFilter) {
  topHashtags(filter: $filter, first: 20) { tag posts authors }
}`,
    variables: json({ filter: {} }),
  },
  {
    query: `# The authors with the most posts.
query TopAuthors($filter: PostFilter) {
  topAuthors(filter: $filter, first: 20) {
    posts
    author { did handle }
  }
}`,
    variables: json({ filter: {} }),
  },
  {
    query: `# The lake's size and state.
query Lake {
  lake {
    posts
    files
    partitions
    bytes
    oldestPost
    newestPost
    generation
    bufferedPosts
    lastFlushAt
  }
}`,
  },
  {
    query: `# The exports declared in the server's config, with their last and next runs (admin only:
# put an admin key in the headers tab).
query Exports {
  exports {
    name
    period
    schedule
    format
    nextRunAt
    lastRun { period status rows file error }
  }
}`,
    headers: json({ Authorization: 'Bearer YOUR_ADMIN_KEY' }),
  },
  {
    query: `# Posts as they arrive (over /graphql/ws): press run and watch.
subscription LivePosts($filter: PostFilter) {
  livePosts(filter: $filter) {
    uri
    text
    createdAt
    langs
    author { did handle }
  }
}`,
    variables: json({ filter: {} }),
  },
  {
    query: `# Runs a declared export now; needs an admin key in the headers tab.
mutation RunExport($name: String!) {
  runExport(name: $name) { period status rows bytes file error }
}`,
    variables: json({ name: 'posts-per-language-daily' }),
    headers: json({ Authorization: 'Bearer YOUR_ADMIN_KEY' }),
  },
];
