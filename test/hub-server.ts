// A loopback stand-in for the Hugging Face hub (the requests @huggingface/hub makes: revision info,
// tree listing, paths-info, resolve with ranges) and for a raw-file host, serving folders the
// tests write. Counts requests per path so that tests can see what was fetched.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface FakeHub {
  url: string;
  /** GET/POST count per URL path. */
  hits: Map<string, number>;
  /** Authorization headers seen. */
  auth: Set<string>;
  close(): Promise<void>;
}

/** repos: `models/org/name` or `datasets/org/name` → local folder; raw: URL path → local file. */
export async function startFakeHub(repos: Record<string, string>, raw: Record<string, string> = {}): Promise<FakeHub> {
  const hits = new Map<string, number>();
  const auth = new Set<string>();
  const commitOf = (folder: string) => createHash('sha1').update(folder).digest('hex');
  const filesOf = (folder: string) => readdirSync(folder, { recursive: true }).map(String).filter((f) => statSync(path.join(folder, f)).isFile()).sort();
  const entry = (folder: string, f: string) => {
    const data = readFileSync(path.join(folder, f));
    return { type: 'file', path: f, size: data.length, oid: createHash('sha1').update(data).digest('hex') };
  };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    hits.set(url.pathname, (hits.get(url.pathname) ?? 0) + 1);
    if (req.headers.authorization) auth.add(req.headers.authorization);
    const json = (status: number, body: unknown) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
    const rawFile = raw[url.pathname];
    if (rawFile) { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(readFileSync(rawFile)); return; }
    // /api/{models|datasets}/{org}/{name}/{revision|tree|paths-info}/{rev}
    let m = url.pathname.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/(revision|tree|paths-info)\/([^/]+)/);
    if (m) {
      const folder = repos[`${m[1]}/${m[2]}`];
      if (!folder) return json(404, { error: 'Repository not found' });
      const commit = commitOf(folder);
      if (m[3] === 'revision') return json(200, { _id: commit, id: m[2], sha: commit, private: false, gated: false, downloads: 0, likes: 0, tags: [], lastModified: new Date(0).toISOString() });
      if (m[3] === 'tree') return json(200, filesOf(folder).map((f) => entry(folder, f)));
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const paths = (JSON.parse(body) as { paths: string[] }).paths;
        json(200, paths.filter((p) => filesOf(folder).includes(p)).map((p) => ({ ...entry(folder, p), lastCommit: { id: commit, title: 'x', date: new Date(0).toISOString() } })));
      });
      return;
    }
    // /{org}/{name}/resolve/{rev}/{path} (models) or /datasets/{org}/{name}/resolve/...
    m = url.pathname.match(/^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    if (m) {
      const folder = repos[`${m[1] ? 'datasets' : 'models'}/${m[2]}`];
      const file = folder ? path.join(folder, decodeURIComponent(m[4])) : '';
      if (!folder || !filesOf(folder).includes(decodeURIComponent(m[4]))) { res.writeHead(404, { 'x-error-code': 'EntryNotFound' }); res.end(); return; }
      const data = readFileSync(file);
      const headers = { etag: `"${entry(folder, decodeURIComponent(m[4])).oid}"`, 'x-repo-commit': commitOf(folder), 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
      const range = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
      if (range) {
        const from = Number(range[1]), to = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
        res.writeHead(206, { ...headers, 'content-range': `bytes ${from}-${to}/${data.length}`, 'content-length': String(to - from + 1) });
        res.end(data.subarray(from, to + 1));
      } else {
        res.writeHead(200, { ...headers, 'content-length': String(data.length) });
        res.end(data);
      }
      return;
    }
    json(404, { error: `not found: ${url.pathname}` });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`, hits, auth,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
