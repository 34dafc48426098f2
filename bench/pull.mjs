// Pull benchmark: berth's PullImage against `skopeo copy docker://… oci:DIR` of the same image from
// a local docker-registry, run alternately, each pull cold. Prints each run and the median ratio.
// Usage: npm run build && node bench/pull.mjs [runs] [layers] [MiB per layer] [random|mixed]
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { insecureRegistries, startImageDaemon } from '../core/dist/test/support/image-daemon.js';
import { mixedImage, randomImage } from '../core/dist/test/support/images.js';
import { pushImage, startRegistry } from '../core/dist/test/support/registry.js';

const runs = Number(process.argv[2] ?? 5);
const layers = Number(process.argv[3] ?? 5);
const mibPerLayer = Number(process.argv[4] ?? 20);
// random: incompressible files, so the blobs are as large as the layers. mixed: half text-like
// and half binary-like files, which gzip shrinks about 2.1-fold (real images shrink 2 to 3-fold).
const content = process.argv[5] ?? 'random';
if (content !== 'random' && content !== 'mixed') {
  console.error(`invalid content "${content}": expected random or mixed`);
  process.exit(2);
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

const registry = await startRegistry();
const daemon = await startImageDaemon({ registries: insecureRegistries([registry.host]) });
const scratch = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-'));
try {
  const build = content === 'mixed' ? mixedImage : randomImage;
  const image = await build(layers, mibPerLayer * 1024 * 1024, 42);
  const blobBytes = image.layers.reduce((sum, layer) => sum + layer.size, 0);
  const tarBytes = image.layers.reduce((sum, layer) => sum + layer.tarBytes, 0);
  await pushImage(registry, 'bench/pull', image, 'v1');
  const reference = `${registry.host}/bench/pull:v1`;
  console.log(
    `image (${content}): ${layers} layers, ${(blobBytes / 1048576).toFixed(1)} MiB of gzip blobs, ${(tarBytes / 1048576).toFixed(1)} MiB unpacked; ` +
      `${runs} runs of each tool, alternating`,
  );

  const berthTimes = [];
  const skopeoTimes = [];
  for (let run = 0; run < runs; run++) {
    // berth: remove the image so its layers are deleted and the pull is cold.
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    let started = process.hrtime.bigint();
    await daemon.client.image.PullImage({ image: { image: reference } });
    berthTimes.push(Number(process.hrtime.bigint() - started) / 1e6);

    const target = path.join(scratch, `oci-${run}`);
    started = process.hrtime.bigint();
    await execa('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${reference}`, `oci:${target}:v1`]);
    skopeoTimes.push(Number(process.hrtime.bigint() - started) / 1e6);
    await rm(target, { recursive: true, force: true });

    console.log(`run ${run + 1}: berth ${berthTimes.at(-1).toFixed(0)} ms, skopeo ${skopeoTimes.at(-1).toFixed(0)} ms`);
  }

  const ratios = berthTimes.map((time, index) => time / skopeoTimes[index]);
  console.log(`median berth ${median(berthTimes).toFixed(0)} ms, median skopeo ${median(skopeoTimes).toFixed(0)} ms`);
  console.log(`median ratio berth/skopeo: ${median(ratios).toFixed(2)}`);
} finally {
  await daemon.cleanup();
  await registry.stop();
  await rm(scratch, { recursive: true, force: true });
}
