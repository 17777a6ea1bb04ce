// What the tools share: their command lines, and Debian's Chromium, headless,
// on a fresh profile.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The tool's arguments: `opt(name, default)` and `flag(name)` take theirs out
// of `args`; `fail(message)` exits with code 2.
export function cli(tool) {
  const args = process.argv.slice(2);
  const fail = (msg) => {
    console.error(`${tool}: ${msg}`);
    process.exit(2);
  };
  const opt = (name, def) => {
    const i = args.indexOf(name);
    if (i < 0) return def;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
  };
  const flag = (name) => {
    const i = args.indexOf(name);
    if (i >= 0) args.splice(i, 1);
    return i >= 0;
  };
  return { args, fail, opt, flag };
}

// A persistent browser context on a fresh profile (onnxruntime-web cached
// within it); closing it deletes the profile.
export async function launch(options = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'da-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--disable-quic'],
    ...options,
  });
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    rmSync(profile, { recursive: true, force: true });
  };
  return context;
}

// `BIN serve` of a family on free loopback ports, with its state in DIR and
// no prune jobs (they would compete for the cores). Resolves to
// {edge: its URL, server: the process} once the edge listens; rejects with
// serve's output when it exits first or takes over 30 s.
export function startServe(bin, family, dir) {
  const server = spawn(bin, ['serve', '--repo', join(dir, 'repo'), '--family', family,
    '--state', join(dir, 'state'), '--port', '0', '--cloud-port', '0', '--prune-interval', '100000'],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  server.stdout.on('data', (d) => (log += d));
  server.stderr.on('data', (d) => (log += d));
  return new Promise((resolve, reject) => {
    const fail = (why) => { clearInterval(t); clearTimeout(limit); reject(new Error(`${why}:\n${log}`)); };
    server.on('error', (e) => fail(`${bin}: ${e.message}`));
    const t = setInterval(() => {
      const m = log.match(/^edge:\s+(http:\/\/[0-9.:]+)\//m);
      if (m) { clearInterval(t); clearTimeout(limit); resolve({ edge: m[1], server }); }
      else if (server.exitCode !== null) fail('serve exited');
    }, 100);
    const limit = setTimeout(() => fail('serve did not start'), 30000);
  });
}
