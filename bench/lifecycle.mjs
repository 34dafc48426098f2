// Lifecycle benchmark: RunPodSandbox + CreateContainer + StartContainer + StopContainer +
// RemovePodSandbox through the CRI socket, sequentially and with pods in parallel, beside raw
// `<runtime> run -d` of the same bundle, measured alternately. Also reports the RSS of the daemon
// and of the daemon with its image worker processes, idle and with many running pods, both at once
// and after the workers stopped for being idle. It prints the increase per pod and the RSS of one
// container's conmon.
// Usage: npm run build && node bench/lifecycle.mjs [runs=20] [parallel=20] [rss pods=50] [network=none|cni]
// With network=cni, pods join a bridge network of the benchmark's own (Debian's CNI plugins).
import { execa } from 'execa';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRuntimeImages } from '../core/dist/test/support/runtime-images.js';
import { containerConfig, runPod, startRuntimeDaemon } from '../core/dist/test/support/runtime-daemon.js';
import { releaseLeftovers, removeAllPods, removeCgroupParent } from '../core/dist/test/support/pods.js';
import { TestNetwork } from '../core/dist/test/support/network.js';

const runs = Number(process.argv[2] ?? 20);
const parallel = Number(process.argv[3] ?? 20);
const rssPods = Number(process.argv[4] ?? 50);
const networkMode = process.argv[5] ?? 'none';
if (networkMode !== 'none' && networkMode !== 'cni') {
  console.error(`lifecycle: network must be "none" or "cni", not ${JSON.stringify(networkMode)}`);
  process.exit(2);
}
const STEPS = ['run pod', 'create', 'start', 'stop', 'remove pod'];

const median = (values) => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const ms = (started) => Number(process.hrtime.bigint() - started) / 1e6;
const rssKiB = async (pid) => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
const pssKiB = async (pid) => Number(/^Pss:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);

/** PIDs of the daemon's image worker processes: its children running extract-worker.js. */
async function workerPids(daemonPid) {
  const pids = [];
  for (const task of await readdir(`/proc/${daemonPid}/task`)) {
    const children = await readFile(`/proc/${daemonPid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of children.trim().split(/\s+/).filter(Boolean)) {
      const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes('extract-worker.js')) pids.push(Number(child));
    }
  }
  return pids;
}

/**
 * Memory of the daemon alone and with its image workers: VmRSS sums, and PSS sums, which count
 * pages the processes share (the node binary, mostly) once instead of once per process.
 */
async function daemonMemory(daemonPid) {
  const workers = await workerPids(daemonPid);
  const pids = [daemonPid, ...workers];
  const rss = await Promise.all(pids.map((pid) => rssKiB(pid).catch(() => 0)));
  const pss = await Promise.all(pids.map((pid) => pssKiB(pid).catch(() => 0)));
  const sum = (values) => values.reduce((total, value) => total + value, 0);
  return { daemonRss: rss[0], workers: workers.length, totalRss: sum(rss), totalPss: sum(pss) };
}
const mib = (kib) => `${(kib / 1024).toFixed(1)} MiB`;

/**
 * Waits until the daemon has no image worker process left, which takes image.worker_idle_seconds
 * (30 s by default) after their last request, or `timeoutMs` at most (with worker_idle_seconds = 0
 * they never stop). Returns how long it waited, in words.
 */
async function waitForWorkersToStop(daemonPid, timeoutMs = 90_000) {
  const started = Date.now();
  for (;;) {
    const workers = (await workerPids(daemonPid)).length;
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    if (workers === 0) return `stopped after ${seconds} s`;
    if (Date.now() - started > timeoutMs) return `${workers} still running after ${seconds} s`;
    await sleep(500);
  }
}

/** One pod's lifecycle through the CRI; returns each step's time in ms and the network setup time. */
async function lifecycle(daemon, handler, image, name) {
  const times = {};
  let started = process.hrtime.bigint();
  const pod = await runPod(daemon, handler, name);
  times['run pod'] = ms(started);

  started = process.hrtime.bigint();
  const config = containerConfig('main', image, ['sleep', '1000']);
  const { container_id: id } = await daemon.client.runtime.CreateContainer({ pod_sandbox_id: pod.id, config, sandbox_config: pod.config });
  times.create = ms(started);

  started = process.hrtime.bigint();
  await daemon.client.runtime.StartContainer({ container_id: id });
  times.start = ms(started);

  const status = await daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: pod.id, verbose: true });
  const networkMs = JSON.parse(status.info?.info ?? '{}').networkSetupMs ?? Number.NaN;

  started = process.hrtime.bigint();
  await daemon.client.runtime.StopContainer({ container_id: id, timeout: 0 });
  times.stop = ms(started);

  started = process.hrtime.bigint();
  await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  times['remove pod'] = ms(started);
  return { times, networkMs, podId: pod.id };
}

/**
 * Writes a bundle for the raw runtime from a berth container's config.json: the same process,
 * rootfs, mounts and pod namespaces, but its own cgroup.
 */
async function rawBundle(daemon, containerId, dir) {
  const spec = JSON.parse(await readFile(path.join(daemon.dir, 'run/containers', containerId, 'config.json'), 'utf8'));
  spec.linux.cgroupsPath = `${spec.linux.cgroupsPath}-raw`;
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(spec));
  return dir;
}

/** Times `<runtime> run -d` of the bundle, then kills and deletes the container (not timed). */
async function rawRun(runtime, root, bundle, id) {
  const started = process.hrtime.bigint();
  await execa(runtime, ['--root', root, 'run', '-d', '--bundle', bundle, id], { stdio: 'ignore' });
  const elapsed = ms(started);
  await execa(runtime, ['--root', root, 'kill', id, 'KILL'], { stdio: 'ignore', reject: false });
  await execa(runtime, ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
  return elapsed;
}

const images = await startRuntimeImages();
const network = networkMode === 'cni' ? await TestNetwork.create() : undefined;
if (network) await network.writeBridgeList();
const networkConfig = network ? { network: { provider: 'cni' }, plugins: { cni: network.options() } } : {};
const { daemon, cgroupParent } = await startRuntimeDaemon(images, { config: { log_level: 'info', ...networkConfig } });
const scratch = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-lifecycle-'));
try {
  await daemon.client.image.PullImage({ image: { image: images.busybox } });
  await sleep(500);
  const idle = await daemonMemory(daemon.process.pid);
  // The workers of the pull stop after their idle time. Memory without them is the daemon's
  // footprint between pulls.
  const idleWaited = await waitForWorkersToStop(daemon.process.pid);
  const idleSettled = await daemonMemory(daemon.process.pid);
  console.log(`berth lifecycle benchmark: ${runs} sequential runs per handler, ${parallel} pods in parallel, RSS with ${rssPods} pods`);
  console.log(`host: ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, ${os.release()}`);

  for (const handler of ['runc', 'crun']) {
    const runtime = handler;
    // A pod and a created (never started) container whose bundle the raw runs reuse.
    const host = await runPod(daemon, handler, `raw-host-${handler}`);
    const { container_id: template } = await daemon.client.runtime.CreateContainer({
      pod_sandbox_id: host.id,
      config: containerConfig('template', images.busybox, ['sleep', '1000']),
      sandbox_config: host.config,
    });
    const bundle = await rawBundle(daemon, template, path.join(scratch, `bundle-${handler}`));
    const rawRoot = path.join(scratch, `root-${handler}`);

    const sequential = Object.fromEntries(STEPS.map((step) => [step, []]));
    const berthTotals = [];
    const rawTimes = [];
    const networkTimes = [];
    const sequentialPods = new Set();
    for (let run = 0; run < runs; run++) {
      const { times, networkMs, podId } = await lifecycle(daemon, handler, images.busybox, `seq-${handler}-${run}`);
      sequentialPods.add(podId);
      for (const step of STEPS) sequential[step].push(times[step]);
      berthTotals.push(times['run pod'] + times.create + times.start);
      networkTimes.push(networkMs);
      rawTimes.push(await rawRun(runtime, rawRoot, bundle, `raw-${handler}-${run}`));
    }

    const concurrent = Object.fromEntries(STEPS.map((step) => [step, []]));
    const started = process.hrtime.bigint();
    const results = await Promise.all(
      Array.from({ length: parallel }, (_, index) => lifecycle(daemon, handler, images.busybox, `par-${handler}-${index}`)),
    );
    const wall = ms(started);
    for (const { times } of results) for (const step of STEPS) concurrent[step].push(times[step]);

    console.log(`\n${handler}: median ms per step`);
    console.log(`  ${'step'.padEnd(12)} ${'sequential'.padStart(10)} ${`${parallel} parallel`.padStart(12)}`);
    for (const step of STEPS) {
      console.log(`  ${step.padEnd(12)} ${median(sequential[step]).toFixed(1).padStart(10)} ${median(concurrent[step]).toFixed(1).padStart(12)}`);
    }
    console.log(`  ${parallel} pods in parallel, whole lifecycle: ${wall.toFixed(0)} ms wall`);
    console.log(`  network setup (provider: ${networkMode}) median ${median(networkTimes).toFixed(2)} ms`);
    if (network) {
      // The provider's own time for the CNI ADDs of each sequential pod, from its log records.
      const addTimes = daemon
        .logRecords()
        .filter((record) => record.msg === 'CNI ADD of the pod finished' && sequentialPods.has(record.sandbox_id))
        .map((record) => record.duration_ms);
      console.log(`  CNI ADD of the pod (provider log) median ${median(addTimes).toFixed(1)} ms over ${addTimes.length} pods`);
    }
    const ratios = berthTotals.map((total, index) => total / rawTimes[index]);
    console.log(
      `  run pod + create + start median ${median(berthTotals).toFixed(1)} ms; raw \`${runtime} run -d\` median ${median(rawTimes).toFixed(1)} ms; median ratio ${median(ratios).toFixed(2)}`,
    );

    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: host.id });
  }

  // Memory: many running pods, each with one sleeping container.
  const running = [];
  for (let index = 0; index < rssPods; index++) {
    const pod = await runPod(daemon, index % 2 === 0 ? 'runc' : 'crun', `rss-${index}`);
    const config = containerConfig('main', images.busybox, ['sleep', '1000']);
    const { container_id: id } = await daemon.client.runtime.CreateContainer({ pod_sandbox_id: pod.id, config, sandbox_config: pod.config });
    await daemon.client.runtime.StartContainer({ container_id: id });
    running.push({ pod: pod.id, container: id, handler: index % 2 === 0 ? 'runc' : 'crun' });
  }
  await daemon.client.runtime.ListContainers({});
  await sleep(500);
  const busy = await daemonMemory(daemon.process.pid);
  const busyWaited = await waitForWorkersToStop(daemon.process.pid);
  const busySettled = await daemonMemory(daemon.process.pid);
  const first = running[0];
  const conmonPid = Number((await readFile(path.join(daemon.dir, 'run/runtimes', first.handler, 'containers', first.container, 'conmon.pid'), 'utf8')).trim());
  const conmonRss = await rssKiB(conmonPid);
  console.log(`\ndaemon RSS idle ${mib(idle.daemonRss)}, with ${rssPods} running pods ${mib(busy.daemonRss)}`);
  console.log(
    `daemon + image workers RSS idle ${mib(idle.totalRss)} (${idle.workers} workers), with ${rssPods} running pods ${mib(busy.totalRss)} (${busy.workers} workers)`,
  );
  console.log(`daemon + image workers PSS idle ${mib(idle.totalPss)}, with ${rssPods} running pods ${mib(busy.totalPss)}`);
  console.log(
    `after waiting for the image workers to stop (${idleWaited}; ${busyWaited}): daemon + image workers RSS idle ${mib(idleSettled.totalRss)} (${idleSettled.workers} workers), with ${rssPods} running pods ${mib(busySettled.totalRss)} (${busySettled.workers} workers)`,
  );
  const perPod = rssPods > 0 ? (busySettled.totalRss - idleSettled.totalRss) / rssPods : Number.NaN;
  console.log(`RSS increase of daemon + image workers per running pod ${(perPod / 1024).toFixed(2)} MiB, after the wait`);
  console.log(`conmon RSS of one container ${(conmonRss / 1024).toFixed(2)} MiB`);
} finally {
  await removeAllPods(daemon.client).catch((err) => console.error('cannot remove benchmark pods', err));
  await daemon.stop();
  await releaseLeftovers(daemon.dir);
  await removeCgroupParent(cgroupParent);
  await images.stop();
  await network?.cleanup();
  await rm(scratch, { recursive: true, force: true });
}
