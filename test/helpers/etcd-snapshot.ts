// Takes an etcd snapshot as `etcdctl snapshot save` does, through Maintenance.Snapshot on etcd's
// v3 JSON gateway (a stream of {"result":{"blob":...}} objects): the bytes etcd sends, its
// SHA-256 trailer included, which `etcdutl snapshot restore` checks.
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';

export function saveSnapshot(etcdUrl: string, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${etcdUrl}/v3/maintenance/snapshot`,
      { method: 'POST', timeout: 30_000, agent: false },
      res => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`snapshot: HTTP ${res.statusCode}`));
          const blobs = Buffer.concat(chunks)
            .toString('utf8')
            .split('\n')
            .filter(line => line.trim() !== '')
            .map(line => {
              const message = JSON.parse(line) as { result?: { blob?: string }; error?: unknown };
              if (message.error !== undefined) throw new Error(`snapshot: ${JSON.stringify(message.error)}`);
              return Buffer.from(message.result?.blob ?? '', 'base64');
            });
          writeFileSync(file, Buffer.concat(blobs), { mode: 0o600 });
          resolve();
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('snapshot: no answer within 30 s')));
    req.on('error', reject);
    req.end('{}');
  });
}
