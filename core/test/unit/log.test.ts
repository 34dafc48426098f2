import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger, withIds } from '../../src/log.js';

/** Creates a logger that keeps its JSON lines in memory. */
function memoryLogger(): { log: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      callback();
    },
  });
  return { log: createLogger('info', sink), lines };
}

test('withIds skips ids already bound', async () => {
  const { log, lines } = memoryLogger();
  const request = log.child({ rpc: 'StopContainer', container_id: 'abc' });

  withIds(request, { container_id: 'abc', sandbox_id: 'pod1' }).info('stopped');
  await new Promise((resolve) => setImmediate(resolve));

  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.match(/"container_id"/g)?.length, 1);
  assert.equal(lines[0]!.match(/"sandbox_id"/g)?.length, 1);
});

test('withIds binds a different value', () => {
  const { log } = memoryLogger();
  const request = log.child({ sandbox_id: 'pod1' });

  assert.equal(withIds(request, { sandbox_id: 'pod1' }), request);
  assert.deepEqual(withIds(request, { sandbox_id: 'pod2' }).bindings().sandbox_id, 'pod2');
});
