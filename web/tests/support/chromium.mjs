// Launches the system Chromium through playwright-core (no browser download), with or
// without WebGPU, and collects every console error and uncaught exception, workers included.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.HEARTH_CHROMIUM || '/usr/bin/chromium';

const COMMON_ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

// WebGPU on a machine without a GPU: Dawn over SwiftShader's Vulkan.
const WEBGPU_ARGS = [
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--use-vulkan=swiftshader',
  '--use-angle=swiftshader',
];

export function assertChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium is missing at ${CHROMIUM}: install it (apt-get install chromium) or set HEARTH_CHROMIUM`);
  }
}

/**
 * Resolves to {context, page, errors, logs, close()}. `errors` fills with "console.error"
 * messages and uncaught exceptions from the page and its workers.
 */
export async function launch({ webgpu }) {
  assertChromium();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-chromium-'));
  const args = [...COMMON_ARGS, ...(webgpu ? WEBGPU_ARGS : ['--disable-features=WebGPU'])];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  const logs = [];
  // Worker console messages arrive on the page's console event too (msg.worker() is set).
  page.on('console', (msg) => {
    const from = msg.worker() ? `worker ${msg.worker().url()}` : 'page';
    logs.push(`[${msg.type()}] ${from}: ${msg.text()}`);
    if (msg.type() === 'error') errors.push(`${from}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
  page.on('crash', () => errors.push('the page crashed'));
  return {
    context,
    page,
    errors,
    logs,
    close: async () => {
      await context.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
