// What the tools share: their command lines, and Debian's Chromium, headless,
// on a fresh profile.
import { chromium } from 'playwright-core';
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
