// Builds the two pages the skyglass binary serves: the playground (`/`) and the explorer
// (`/explore`). Everything is bundled from node_modules: no page loads anything from a CDN.
import { resolve } from 'node:path';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  plugins: [react()],
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
