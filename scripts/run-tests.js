// Runs every compiled test file of the workspace with node's test runner, one file at a time
// because integration tests share host resources (mounts, cgroups, network namespaces).
// Arguments filter test files by substring of their path.
import { spawnSync } from 'node:child_process';
import { readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const packages = ['core', ...readdirSync(path.join(root, 'plugins')).map((name) => `plugins/${name}`)];
const filters = process.argv.slice(2);

const files = [];
for (const pkg of packages) {
  const testDir = path.join(root, pkg, 'dist/test');
  if (!existsSync(testDir)) continue;
  for (const entry of readdirSync(testDir, { recursive: true })) {
    const file = path.join(testDir, String(entry));
    if (!file.endsWith('.test.js')) continue;
    if (filters.length > 0 && !filters.some((filter) => file.includes(filter))) continue;
    files.push(file);
  }
}
files.sort((a, b) => Number(a.includes('/integration/')) - Number(b.includes('/integration/')) || a.localeCompare(b));

if (files.length === 0) {
  console.error(`run-tests: no test files match ${filters.join(', ') || '(all)'}; run npm run build first`);
  process.exit(1);
}

const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(result.status ?? 1);
