// The GraphQL playground at `/`: GraphiQL with the schema's docs, a tab of examples for every
// root field, and subscriptions over `/graphql/ws`.
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import { createRoot } from 'react-dom/client';
import { GraphiQL } from 'graphiql';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { EXAMPLES } from './examples.js';
import { websocketUrl } from './explore/api.js';

const fetcher = createGraphiQLFetcher({ url: '/graphql', subscriptionUrl: websocketUrl() });

// GraphiQL opens the first default tab with its query but not its variables: on a first visit
// (no tabs kept in the browser yet) give them too. Later visits reopen the kept tabs.
function firstVisit() {
  try {
    return window.localStorage.getItem('graphiql:tabState') === null;
  } catch {
    return false;
  }
}

createRoot(document.getElementById('playground')).render(
  <GraphiQL
    fetcher={fetcher}
    defaultTabs={EXAMPLES}
    initialVariables={firstVisit() ? EXAMPLES[0].variables : undefined}
    defaultEditorToolsVisibility="variables"
  />,
);
