// Starts web/serve.mjs as a child process on a free port, for the tests.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const repoDir = path.resolve(webDir, '..');

/** Resolves to {url, stop()} once the server prints the URL it listens on. */
export function startServer(extraArgs = []) {
  const child = spawn(process.execPath, [path.join(webDir, 'serve.mjs'), '--port', '0', '--host', '127.0.0.1', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`serve.mjs did not start within 10 s:\n${output}`));
    }, 10_000);
    const onData = (data) => {
      output += data;
      const m = /Hearth web demo: (http:\/\/\S+\/)/.exec(output);
      if (m) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.stdout.resume(); // keep draining so the child never blocks on a full pipe
        resolve({
          url: m[1],
          stop: () => new Promise((done) => {
            if (child.exitCode !== null) return done();
            child.once('exit', done);
            child.kill('SIGTERM');
          }),
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => { output += d; });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve.mjs exited with ${code} before listening:\n${output}`));
    });
  });
}
