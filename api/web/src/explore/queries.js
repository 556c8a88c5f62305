// The explorer's GraphQL documents, sent as persisted queries (see api.js).

export const POSTS = `query ExplorePosts($filter: PostFilter, $after: String) {
  posts(filter: $filter, first: 20, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { uri text createdAt langs hashtags embedType author { did handle } }
  }
}`;

export const STATS = `query ExploreStats($filter: PostFilter, $interval: Interval!, $timeZone: String!, $groupBy: Dimension) {
  timeBuckets(interval: $interval, filter: $filter, timeZone: $timeZone, groupBy: $groupBy) { start group posts }
  topHashtags(filter: $filter, first: 10) { tag posts }
  topAuthors(filter: $filter, first: 10) { posts author { did handle } }
}`;

export const LIVE = `subscription ExploreLive($filter: PostFilter) {
  livePosts(filter: $filter) { uri text createdAt langs hashtags embedType author { did handle } }
}`;
