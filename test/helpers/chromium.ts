// A real browser for the console's tests: Debian's Chromium (scripts/install.sh installs it),
// driven by playwright-core, which never downloads a browser of its own. A missing Chromium
// fails the test with the fix, never a skip. Every page's console messages and uncaught
// errors are collected so a test can assert there were none, and screenshots are kept under
// test-artifacts/ (git-ignored) as artifacts.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** Where screenshots go: test-artifacts/<suite>/ at the repository's root. */
export function artifactsDir(suite: string): string {
  const dir = join(new URL('../../test-artifacts/', import.meta.url).pathname, suite);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is missing at ${CHROMIUM}: the console tests need Debian's chromium package ` +
        '(bash scripts/install.sh installs it: apt-get install -y chromium)',
    );
  }
  // launch() gives every browser a fresh, temporary user-data-dir, removed at close.
  return chromium.launch({
    executablePath: CHROMIUM,
    // No sandbox: CI runs as root, where Chromium refuses to start with one. The rest keeps
    // the browser from calling out (updates, sync, metrics): nothing but the broker answers.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

export interface WatchedPage {
  readonly context: BrowserContext;
  readonly page: Page;
  /** `type: text` of every console message, in order. */
  readonly messages: string[];
  /** Uncaught exceptions in the page. */
  readonly errors: string[];
  /** Every request the page sent (or tried to: a CSP block is a failed request), as `METHOD url`. */
  readonly requests: string[];
  close(): Promise<void>;
}

/** A page in its own context (own sessionStorage), with everything it logs collected. */
export async function openPage(browser: Browser): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  // Bounded waits, generous for a busy 2-core CI machine.
  page.setDefaultTimeout(30000);
  const messages: string[] = [];
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('console', message => messages.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', error => errors.push(String(error)));
  page.on('request', request => requests.push(`${request.method()} ${request.url()}`));
  return { context, page, messages, errors, requests, close: () => context.close() };
}

/** Saves a full-page screenshot and prints its path (the test's artifact). */
export async function screenshot(page: Page, dir: string, name: string): Promise<string> {
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
  return path;
}
