// The Dockerfiles are linted for the basics (there is no Docker engine to build them here):
// pinned base images, non-root, no compilers in the final image, no secrets, no weights.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { statusPageDir } from '../../coordinator/telemetry/status-routes';
import { lintDockerfile, parseDockerfile } from './dockerfile-lint';
import { DEPLOY, ROOT } from './k8s-render';

const DOCKERFILES = ['Dockerfile.cpu', 'Dockerfile.cuda'];
const read = (name: string) => fs.readFileSync(path.join(DEPLOY, name), 'utf8');

describe.each(DOCKERFILES)('deploy/%s', (name) => {
  const text = read(name);
  const stages = parseDockerfile(text);
  const final = stages[stages.length - 1];
  const ignore = fs.readFileSync(path.join(DEPLOY, `${name}.dockerignore`), 'utf8').split('\n').map((l) => l.trim());

  test('passes the lint', () => {
    expect(lintDockerfile(text)).toEqual([]);
  });

  test('is multi-stage: builds with `npm ci` and `npm run build`, runs the CLI as its entrypoint', () => {
    const runs = stages.flatMap((s) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args)).join('\n');
    expect(runs).toMatch(/npm ci\b/);
    expect(runs).toMatch(/npm run build(:native)?\b/);
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const entry = final.instructions.find((i) => i.keyword === 'ENTRYPOINT');
    expect(entry && JSON.parse(entry.args)).toEqual(['node', '/app/bin/turbosparse.js']);
    // The final image gets node_modules without devDependencies.
    expect(runs).toMatch(/npm ci --omit=dev/);
  });

  test('the final stage uses a fixed numeric non-root uid (Kubernetes runAsNonRoot checks it)', () => {
    const user = final.instructions.filter((i) => i.keyword === 'USER').pop()!.args;
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    expect(user.split(':')[0]).toBe('10001'); // the uid the manifests run as
  });

  test('the build context is an allow-list that keeps out weights, keys and build outputs', () => {
    expect(ignore).toContain('*');
    for (const pattern of ['**/*.safetensors', '**/*.gguf', '**/*.pem', '**/*.key', '**/.env*', '**/node_modules', 'native/build*']) {
      expect(ignore).toContain(pattern);
    }
    // Every file the Dockerfile copies from the context is let in.
    const copied = stages.flatMap((s) => s.instructions)
      .filter((i) => i.keyword === 'COPY' && !i.args.includes('--from'))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
      .filter((src) => src !== '.');
    for (const src of copied) expect(ignore).toContain(`!${src}`);
    for (const script of ['deploy/grpc-health-probe.js', 'deploy/shard-map-addresses.js']) {
      expect(ignore).toContain(`!${script}`);
      expect(text).toContain(script);
    }
  });

  test('the final image holds the files the code reads at run time (status page, .proto), where the code looks', () => {
    // Run the build stage's own gather loop (`for dir in ...; done`) on this tree into a temp /out.
    const gather = stages.flatMap((s) => s.instructions).filter((i) => i.keyword === 'RUN').map((i) => i.args)
      .map((a) => /for dir in [^;]+; do .*?done;/.exec(a)?.[0]).find((m) => m !== undefined);
    expect(gather).toBeDefined();
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-image-'));
    try {
      execFileSync('bash', ['-euc', gather!.replace(/\/out\b/g, out)], { cwd: ROOT, stdio: 'pipe' });
      // The image runs dist/ at /app/dist; each asset must be at the first place its loader tries.
      const app = (...p: string[]) => path.join(out, ...p);
      const assets = [
        ...fs.readdirSync(statusPageDir()).map((f) => path.relative(ROOT, path.join(statusPageDir(), f))),
        'proto/expert.proto',
      ];
      expect(assets).toEqual(expect.arrayContaining(['web/status/index.html', 'web/status/status.js', 'web/status/status.css']));
      for (const rel of assets) {
        expect(fs.existsSync(app(rel)) ? rel : `${rel} missing from the image`).toBe(rel);
        // ...and the build context lets it in (the allow-list names its top folder).
        expect(ignore).toContain(`!${rel.split('/')[0]}/`);
      }
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});

test('the CUDA image builds on the CUDA devel image and runs on the matching runtime image', () => {
  const stages = parseDockerfile(read('Dockerfile.cuda'));
  const build = stages.find((s) => s.name === 'build')!;
  const final = stages[stages.length - 1];
  const version = (ref: string) => /^nvidia\/cuda:(\d+\.\d+\.\d+)-(devel|runtime)-(.+)$/.exec(ref);
  expect(version(build.base)?.[2]).toBe('devel');
  expect(version(final.base)?.[2]).toBe('runtime');
  expect(version(final.base)?.[1]).toBe(version(build.base)?.[1]);
  expect(version(final.base)?.[3]).toBe(version(build.base)?.[3]);
});

test('the READMEs name the CUDA version the image is built on (and the driver it needs)', () => {
  const stages = parseDockerfile(read('Dockerfile.cuda'));
  const [, full, majorMinor] = /^nvidia\/cuda:((\d+\.\d+)\.\d+)-devel-/.exec(stages.find((s) => s.name === 'build')!.base)!;
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const deployReadme = read('README.md');
  // Where the READMEs say which CUDA, it is the image's (the recorded GPU runs used a newer one).
  expect(readme).toContain(`CUDA ${majorMinor} or newer, as in the CUDA image`);
  expect(deployReadme).toContain(`nvidia/cuda:${full}-devel-`);
  expect(deployReadme).toContain(`a driver for CUDA ${majorMinor}`);
  expect(read('Dockerfile.cuda')).toContain(`(CUDA ${majorMinor})`);
});

describe('the lint catches what it is for', () => {
  const good = [
    'FROM node:20.20.2-bookworm AS build',
    'RUN npm ci && npm run build',
    'FROM node:20.20.2-bookworm-slim',
    'COPY --from=build /src/dist /app/dist',
    'USER 10001:10001',
  ];
  const lint = (lines: string[]) => lintDockerfile(lines.join('\n'));

  test('a clean file passes', () => {
    expect(lint(good)).toEqual([]);
  });

  test.each([
    ['untagged base', ['FROM node AS build', ...good.slice(1)], /no tag/],
    ['latest', ['FROM node:latest AS build', ...good.slice(1)], /:latest/],
    ['floating major tag', ['FROM node:20-bookworm AS build', ...good.slice(1)], /not an exact version/],
    ['variable base', ['ARG BASE=node:20.20.2-bookworm', 'FROM ${BASE} AS build', ...good.slice(1)], /variable base image/],
    ['no USER', good.slice(0, -1), /no USER/],
    ['USER root after a non-root USER', [...good, 'USER root'], /runs as root/],
    ['USER 0', [...good.slice(0, -1), 'USER 0:0'], /runs as root/],
    ['ENV with an API key', [...good, 'ENV TURBOSPARSE_API_KEY=abc123'], /secrets must not/],
    ['ARG token', ['ARG NPM_TOKEN', ...good], /secrets must not/],
    ['ENV password among others', [...good, 'ENV A=1 DB_PASSWORD=x'], /DB_PASSWORD/],
    ['COPY of a key', [...good, 'COPY certs/server.key /app/'], /keys and credentials/],
    ['COPY of a .pem', [...good, 'COPY ["ca.pem", "/app/"]'], /keys and credentials/],
    ['COPY of weights', [...good, 'COPY models/mixtral/model-00001-of-00019.safetensors /models/'], /model weights/],
    ['COPY of a models folder', [...good, 'COPY models /models'], /model weights/],
    ['ADD from a URL', [...good, 'ADD https://example.com/w.gguf /w'], /model weights|no downloads/],
    ['compiler in the final stage', [...good.slice(0, -1), 'RUN apt-get update && apt-get install -y --no-install-recommends \\\n  g++ make', 'USER 10001'], /installs a compiler/],
    ['final stage on a full node image', [...good.slice(0, 2), 'FROM node:20.20.2-bookworm', ...good.slice(3)], /build image/],
    ['final stage on the CUDA devel image', ['FROM nvidia/cuda:12.8.1-devel-ubuntu22.04', 'USER 10001'], /build image/],
    ['final stage FROM the build stage', [...good.slice(0, 2), 'FROM build', 'USER 10001'], /build image/],
  ])('%s', (_what, lines, expected) => {
    const problems = lint(lines);
    expect(problems.join('\n')).toMatch(expected);
  });

  test('a digest-pinned base passes; comments and continuations are handled', () => {
    expect(lint([
      '# syntax comment',
      `FROM node:20.20.2-bookworm-slim@sha256:${'a'.repeat(64)}`,
      'RUN echo one \\',
      '  # a comment inside a continuation',
      '  && echo two',
      'USER 10001',
    ])).toEqual([]);
  });
});
