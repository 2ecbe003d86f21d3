// Model weights fetched by URL, kept in the Cache API between visits.
//
// Used by the worker (fetchModel) and by the page (clearModelCache, cachedModels); needs no
// DOM, only fetch, Blob, caches and navigator.storage, so it runs in both.
//
// A cached entry is the model's bytes as a Response whose headers record the size and the
// server's ETag at download time. The body of a Response from cache.match() is disk-backed,
// so the runtime can read a multi-GiB model slice by slice without it ever sitting in memory.

export const CACHE_NAME = 'hearth-models-v1';
const SIZE_HEADER = 'x-hearth-size';
const ETAG_HEADER = 'x-hearth-etag';
const DATE_HEADER = 'x-hearth-stored';

// Chunks of a download are collapsed into one Blob every this many bytes, so that the
// browser can page them out instead of holding thousands of small ArrayBuffers.
const BLOB_PART_BYTES = 16 * 1024 * 1024;
const PROGRESS_INTERVAL_MS = 100;

const MiB = 1024 * 1024;
const mib = (n) => `${(n / MiB).toFixed(1)} MiB`;

async function openCache() {
  if (typeof caches === 'undefined') {
    return { cache: null, reason: 'the Cache API is not available here (it needs a secure context, e.g. https or localhost)' };
  }
  try {
    return { cache: await caches.open(CACHE_NAME) };
  } catch (err) {
    return { cache: null, reason: `the Cache API refused to open (${err?.message || err})` };
  }
}

// Size and ETag the server reports now, or null when it cannot be asked (offline, HEAD refused).
async function remoteIdentity(url) {
  try {
    const res = await fetch(url, { method: 'HEAD', cache: 'no-store' });
    if (!res.ok) return null;
    const length = res.headers.get('content-length');
    // A compressed transfer reports the encoded length, which says nothing about the file size.
    const encoded = res.headers.get('content-encoding');
    return {
      size: length !== null && !encoded ? Number(length) : null,
      etag: res.headers.get('etag'),
    };
  } catch {
    return null;
  }
}

// The cached copy if it is intact and the server (when reachable) still serves the same file.
// A stale or broken entry is deleted; `notice` explains why it is downloaded again.
async function validCachedBlob(cache, url, notice) {
  const hit = await cache.match(url);
  if (!hit) return null;
  const size = Number(hit.headers.get(SIZE_HEADER) ?? NaN);
  const etag = hit.headers.get(ETAG_HEADER) || '';
  const blob = await hit.blob();
  let problem = null;
  if (!Number.isFinite(size) || blob.size !== size) {
    problem = `the cached copy is incomplete (${blob.size} of ${size} bytes)`;
  } else {
    const remote = await remoteIdentity(url);
    if (remote && remote.size !== null && remote.size !== size) {
      problem = `the server's file changed size (${size} → ${remote.size} bytes)`;
    } else if (remote && remote.etag && etag && remote.etag !== etag) {
      problem = `the server's file changed (ETag ${etag} → ${remote.etag})`;
    }
  }
  if (!problem) return blob;
  await cache.delete(url);
  notice(`cached model discarded: ${problem}; downloading it again`);
  return null;
}

// Free storage the origin may still use, or null when the browser does not say.
async function storageHeadroom() {
  try {
    const est = await navigator.storage?.estimate?.();
    if (!est || !Number.isFinite(est.quota)) return null;
    return est.quota - (est.usage || 0);
  } catch {
    return null;
  }
}

async function startDownload(url) {
  const res = await fetch(url, { cache: 'no-store' });
  if (!res.ok) {
    throw new Error(`could not download the model: HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''} for ${url}`);
  }
  const encoded = res.headers.get('content-encoding');
  const lengthHeader = res.headers.get('content-length');
  const total = lengthHeader !== null && !encoded ? Number(lengthHeader) : 0;
  const etag = res.headers.get('etag') || '';
  return { res, total, etag };
}

async function readBody(res, total, onProgress) {
  if (!res.body) return res.blob();
  const reader = res.body.getReader();
  const parts = [];
  let pending = [];
  let pendingBytes = 0;
  let loaded = 0;
  let lastReport = 0;
  onProgress(0, total);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pending.push(value);
    pendingBytes += value.byteLength;
    loaded += value.byteLength;
    if (pendingBytes >= BLOB_PART_BYTES) {
      parts.push(new Blob(pending));
      pending = [];
      pendingBytes = 0;
    }
    const now = performance.now();
    if (now - lastReport >= PROGRESS_INTERVAL_MS) {
      lastReport = now;
      onProgress(loaded, Math.max(total, loaded));
    }
  }
  if (pending.length) parts.push(new Blob(pending));
  onProgress(loaded, Math.max(total, loaded));
  return new Blob(parts, { type: 'application/octet-stream' });
}

function describeCacheFailure(err) {
  const msg = err?.message || String(err);
  if (err?.name === 'QuotaExceededError' || /quota/i.test(msg)) return `storage quota exceeded (${msg})`;
  return msg;
}

/**
 * The model at `url` as a Blob: from the cache when a valid copy is there, else downloaded
 * (and cached when possible).
 *
 * onProgress({phase, loaded, total, cached}): phase "download" (bytes), then "cache" while
 * the download is written to the cache; a cache hit reports one "cache" event with cached: true.
 * onNotice(message): why something did not go the usual way (stale entry, not cached, ...).
 * Resolves to {blob, fromCache, downloadMs, cached} (cached: whether it is in the cache now).
 */
export async function fetchModel(url, { onProgress = () => {}, onNotice = () => {} } = {}) {
  const t0 = performance.now();
  let { cache, reason } = await openCache();

  if (cache) {
    try {
      const blob = await validCachedBlob(cache, url, onNotice);
      if (blob) {
        onProgress({ phase: 'cache', loaded: blob.size, total: blob.size, cached: true });
        return { blob, fromCache: true, downloadMs: performance.now() - t0, cached: true };
      }
    } catch (err) {
      onNotice(`the model cache could not be read (${err?.message || err}); downloading the model`);
    }
  }

  const { res, total, etag } = await startDownload(url);
  if (cache && total) {
    const headroom = await storageHeadroom();
    if (headroom !== null && total > headroom) {
      cache = null;
      reason = `the model (${mib(total)}) is larger than the free browser storage (${mib(Math.max(0, headroom))})`;
    }
  }
  let blob = await readBody(res, total, (loaded, t) =>
    onProgress({ phase: 'download', loaded, total: t, cached: false }));
  if (total && blob.size !== total) {
    throw new Error(`the download of ${url} was cut short (${blob.size} of ${total} bytes)`);
  }
  const downloadMs = performance.now() - t0;

  if (!cache) {
    onNotice(`not cached: ${reason}; the model is loaded from memory and will be downloaded again next time`);
    return { blob, fromCache: false, downloadMs, cached: false };
  }
  onProgress({ phase: 'cache', loaded: 0, total: blob.size, cached: false });
  try {
    const headers = {
      'content-type': 'application/octet-stream',
      'content-length': String(blob.size),
      [SIZE_HEADER]: String(blob.size),
      [ETAG_HEADER]: etag,
      [DATE_HEADER]: new Date().toISOString(),
    };
    await cache.put(url, new Response(blob, { headers }));
    // Read back from disk so the downloaded copy in memory can be dropped.
    const stored = await cache.match(url);
    if (stored) {
      const diskBlob = await stored.blob();
      if (diskBlob.size === blob.size) blob = diskBlob;
    }
    onProgress({ phase: 'cache', loaded: blob.size, total: blob.size, cached: true });
    return { blob, fromCache: false, downloadMs, cached: true };
  } catch (err) {
    // A half-written entry would be discarded on the next visit anyway; remove it now.
    await cache.delete(url).catch(() => {});
    onNotice(`not cached: ${describeCacheFailure(err)}; the model is loaded from memory and will be downloaded again next time`);
    return { blob, fromCache: false, downloadMs, cached: false };
  }
}

/** The cached models: [{url, size, etag, stored}]. Empty when the Cache API is unavailable. */
export async function cachedModels() {
  if (typeof caches === 'undefined' || !(await caches.has(CACHE_NAME).catch(() => false))) return [];
  const cache = await caches.open(CACHE_NAME);
  const out = [];
  for (const req of await cache.keys()) {
    const res = await cache.match(req);
    let size = Number(res?.headers.get(SIZE_HEADER) ?? NaN);
    if (!Number.isFinite(size) && res) size = (await res.blob()).size;
    out.push({
      url: req.url,
      size: size || 0,
      etag: res?.headers.get(ETAG_HEADER) || '',
      stored: res?.headers.get(DATE_HEADER) || '',
    });
  }
  return out;
}

/** Deletes the whole model cache. Resolves to {entries, bytes} removed. */
export async function clearModelCache() {
  const models = await cachedModels();
  if (typeof caches !== 'undefined') await caches.delete(CACHE_NAME);
  return { entries: models.length, bytes: models.reduce((sum, m) => sum + m.size, 0) };
}
