// What `kms_broker_build_info` labels a broker with: its version, the Node.js it runs on and,
// when it can be told, the commit it was built from. Dashboards join on it to show which
// release each broker runs, and an upgrade shows as a change of its labels.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { VERSION } from '../version.ts';

export interface BuildInfo {
  readonly version: string;
  readonly nodejs_version: string;
  /** Absent when neither the image nor a git checkout says which commit this is. */
  readonly commit?: string;
}

const COMMIT = /^[0-9a-f]{7,64}$/;

/**
 * The commit: `KMS_BROKER_COMMIT` when the image build set it (an image has no .git), else
 * the HEAD of the git checkout the broker runs from, read from its files (no git binary).
 */
export function buildCommit(
  env: NodeJS.ProcessEnv = process.env,
  root = new URL('../../', import.meta.url),
): string | undefined {
  const fromEnv = env.KMS_BROKER_COMMIT?.trim().toLowerCase();
  if (fromEnv !== undefined && fromEnv !== '') return COMMIT.test(fromEnv) ? fromEnv : undefined;
  try {
    return gitHead(new URL('.git', root).pathname);
  } catch {
    return undefined; // no checkout, or one that cannot be read: the commit is simply unknown
  }
}

function gitHead(dotGit: string): string | undefined {
  let gitDir = dotGit;
  const dotGitText = tryRead(dotGit);
  // A worktree's .git is a file naming its git folder; refs shared by all worktrees live in
  // the common folder that `commondir` names.
  if (dotGitText?.startsWith('gitdir: ') === true)
    gitDir = resolve(dirname(dotGit), dotGitText.slice(8).trim());
  const commonText = tryRead(`${gitDir}/commondir`)?.trim();
  const commonDir = commonText === undefined ? gitDir : resolve(gitDir, commonText);
  const head = tryRead(`${gitDir}/HEAD`)?.trim();
  if (head === undefined) return undefined;
  if (!head.startsWith('ref: ')) return COMMIT.test(head) ? head : undefined;
  const ref = head.slice(5);
  const loose = tryRead(`${gitDir}/${ref}`) ?? tryRead(`${commonDir}/${ref}`);
  if (loose !== undefined) return COMMIT.test(loose.trim()) ? loose.trim() : undefined;
  for (const line of (tryRead(`${commonDir}/packed-refs`) ?? '').split('\n')) {
    const [id, name] = line.split(' ');
    if (name === ref && id !== undefined && COMMIT.test(id)) return id;
  }
  return undefined;
}

function tryRead(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

let cached: BuildInfo | undefined;

/** Read once per process: the labels never change while it runs. */
export function buildInfo(): BuildInfo {
  if (cached === undefined) {
    const commit = buildCommit();
    cached = { version: VERSION, nodejs_version: process.version, ...(commit !== undefined && { commit }) };
  }
  return cached;
}
