// Builds the two pages the skyglass binary serves: the playground (`/`) and the explorer
// (`/explore`). Everything is bundled from node_modules: no page loads anything from a CDN.
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';
import * as explorerDocuments from './src/explore/queries.js';

// The explorer's documents as a persisted-query manifest (SHA-256 → document): a server in
// allow-list mode (`--allow-list`) adds it to its list, so its own explorer keeps working.
function persistedQueries() {
  return {
    name: 'skyglass-persisted-queries',
    generateBundle() {
      const sha256 = (text) => createHash('sha256').update(text).digest('hex');
      const manifest = Object.fromEntries(Object.values(explorerDocuments).map((doc) => [sha256(doc), doc]));
      this.emitFile({ type: 'asset', fileName: 'persisted-queries.json', source: `${JSON.stringify(manifest, null, 2)}\n` });
    },
  };
}

export default defineConfig({
  plugins: [react(), persistedQueries()],
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The playground's editor (Monaco) is large; it is compressed on the wire and cached for good.
    chunkSizeWarningLimit: 8192,
    rollupOptions: {
      // GraphiQL's modules carry React compiler directives that bundling drops, harmlessly.
      onwarn(warning, warn) {
        if (warning.code !== 'MODULE_LEVEL_DIRECTIVE') warn(warning);
      },
      input: {
        playground: resolve(import.meta.dirname, 'index.html'),
        explore: resolve(import.meta.dirname, 'explore/index.html'),
      },
    },
  },
  worker: { format: 'es' },
});
