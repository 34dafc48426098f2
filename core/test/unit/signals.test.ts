import { test } from 'node:test';
import assert from 'node:assert/strict';
import { criSignalName, parseSignal, storedStopSignal } from '../../src/container/signals.js';

test('parseSignal table', () => {
  const cases: [string, number | undefined][] = [
    ['SIGTERM', 15],
    ['TERM', 15],
    ['term', 15],
    ['sigterm', 15],
    [' SIGTERM ', 15],
    ['15', 15],
    ['9', 9],
    ['SIGUSR1', 10],
    ['usr2', 12],
    ['SIGKILL', 9],
    ['SIGCHLD', 17],
    ['SIGCLD', 17],
    ['SIGIOT', 6],
    ['SIGPOLL', 29],
    ['SIGPWR', 30],
    ['SIGSYS', 31],
    ['SIGRTMIN', 34],
    ['RTMIN', 34],
    ['SIGRTMIN+3', 37],
    ['sigrtmin+3', 37],
    ['SIGRTMIN+30', 64],
    ['SIGRTMAX', 64],
    ['RTMAX-2', 62],
    ['SIGRTMAX-30', 34],
    ['SIGRTMINPLUS15', 49],
    ['SIGRTMAXMINUS14', 50],
    ['34', 34],
    ['64', 64],
    ['', undefined],
    ['   ', undefined],
    ['0', undefined],
    ['32', undefined],
    ['33', undefined],
    ['65', undefined],
    ['-1', undefined],
    ['99999999999999999999', undefined],
    ['SIGRTMIN+31', undefined],
    ['SIGRTMAX-31', undefined],
    ['SIGRTMIN-1', undefined],
    ['SIGRTMAX+1', undefined],
    ['SIGRTMIN+', undefined],
    ['SIGFOO', undefined],
    ['SIG', undefined],
    ['SIGSIGTERM', undefined],
    ['15abc', undefined],
    ['TERM;rm -rf /', undefined],
    ['RUNTIME_DEFAULT', undefined],
  ];
  for (const [text, expected] of cases) assert.equal(parseSignal(text), expected, JSON.stringify(text));
});

test('criSignalName maps numbers to enum names', () => {
  const cases: [number, string | undefined][] = [
    [15, 'SIGTERM'],
    [9, 'SIGKILL'],
    [6, 'SIGABRT'],
    [17, 'SIGCHLD'],
    [29, 'SIGIO'],
    [34, 'SIGRTMIN'],
    [37, 'SIGRTMINPLUS3'],
    [49, 'SIGRTMINPLUS15'],
    [50, 'SIGRTMAXMINUS14'],
    [62, 'SIGRTMAXMINUS2'],
    [64, 'SIGRTMAX'],
    [32, undefined],
    [0, undefined],
  ];
  for (const [signal, expected] of cases) assert.equal(criSignalName(signal), expected, String(signal));
});

test('criSignalName and parseSignal round-trip', () => {
  for (let signal = 1; signal <= 64; signal++) {
    const name = criSignalName(signal);
    if (signal === 32 || signal === 33) {
      assert.equal(name, undefined);
      continue;
    }
    assert.ok(name, `no name for ${signal}`);
    assert.equal(parseSignal(name), signal, name);
  }
});

test('storedStopSignal reads numbers and old names', () => {
  assert.equal(storedStopSignal(15), 15);
  assert.equal(storedStopSignal(37), 37);
  assert.equal(storedStopSignal('SIGUSR1'), 10);
  assert.equal(storedStopSignal('SIGRTMIN+3'), 37);
  assert.equal(storedStopSignal('15'), 15);
  assert.equal(storedStopSignal('SIGFOO'), undefined);
  assert.equal(storedStopSignal(0), undefined);
  assert.equal(storedStopSignal(65), undefined);
  assert.equal(storedStopSignal(1.5), undefined);
});
