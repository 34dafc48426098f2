// Generates TypeScript types for the CRI messages from proto/api.proto into src/cri/generated.
// The options match the runtime loader in src/cri/proto.ts so that the types describe real values.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const coreDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(coreDir, 'src/cri/generated');
const require = createRequire(import.meta.url);
const generator = path.join(path.dirname(require.resolve('@grpc/proto-loader/package.json')), 'build/bin/proto-loader-gen-types.js');

rmSync(outDir, { recursive: true, force: true });
execFileSync(
  process.execPath,
  [
    generator,
    '--keepCase',
    '--longs=String',
    '--enums=String',
    '--defaults',
    '--oneofs',
    '--grpcLib=@grpc/grpc-js',
    '--includeDirs=proto',
    `--outDir=${outDir}`,
    'api.proto',
  ],
  { cwd: coreDir, stdio: 'inherit' },
);

// The generator writes extension-less relative imports; ES modules under NodeNext need `.js`.
for (const entry of readdirSync(outDir, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
  const file = path.join(entry.parentPath ?? entry.path, entry.name);
  const text = readFileSync(file, 'utf8').replace(/from '(\.{1,2}\/[^']+?)(?<!\.js)'/g, "from '$1.js'");
  writeFileSync(file, text);
}
