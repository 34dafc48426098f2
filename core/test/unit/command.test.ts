import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CommandError, runCommand } from '../../src/util/command.js';

describe('runCommand', () => {
  it('returns output without the final newline', async () => {
    const result = await runCommand('/bin/sh', ['-c', 'printf "out\\n"; printf "err\\n" >&2']);
    assert.equal(result.stdout, 'out');
    assert.equal(result.stderr, 'err');
    assert.equal(result.exitCode, 0);
  });

  it('passes input and extra environment', async () => {
    const result = await runCommand('/bin/sh', ['-c', 'cat; printf "$EXTRA"'], { input: 'in-', env: { EXTRA: 'env' } });
    assert.equal(result.stdout, 'in-env');
  });

  it('rejects a non-zero exit with its stderr', async () => {
    const err = await runCommand('/bin/sh', ['-c', 'echo broken >&2; exit 3']).catch((caught: unknown) => caught);
    assert.ok(err instanceof CommandError);
    assert.equal(err.exitCode, 3);
    assert.equal(err.stderr, 'broken');
    assert.match(err.message, /exited with code 3: broken/);
  });

  it('rejects a missing program', async () => {
    const err = await runCommand('/nonexistent/berth-test-program', ['x']).catch((caught: unknown) => caught);
    assert.ok(err instanceof CommandError);
    assert.equal(err.exitCode, undefined);
    assert.match(err.message, /cannot run: .*ENOENT/);
  });

  it('kills a program that outlives its timeout', async () => {
    const started = Date.now();
    const err = await runCommand('/bin/sleep', ['10'], { timeoutMs: 100 }).catch((caught: unknown) => caught);
    assert.ok(err instanceof CommandError);
    assert.match(err.message, /timed out after 100 ms/);
    assert.ok(Date.now() - started < 5000, 'the sleep was not killed');
  });

  it('rejects a program killed by a signal', async () => {
    const err = await runCommand('/bin/sh', ['-c', 'kill -9 $$']).catch((caught: unknown) => caught);
    assert.ok(err instanceof CommandError);
    assert.match(err.message, /killed by SIGKILL/);
  });
});
