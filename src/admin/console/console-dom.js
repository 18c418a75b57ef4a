// The console's small toolkit: DOM building without HTML strings (so nothing the API returns
// can become markup) and one call to the admin API with the session's bearer token.
// @ts-check

/** @typedef {{ code?: string, detail?: string }} Problem */

export const TOKEN_KEY = 'kms-broker.console.token';

/** @param {string} id */
export const byId = id => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {string} tag
 * @param {Record<string, string>} [attributes]
 * @param {...(Node | string)} children
 */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** An SVG element (the history strip), built the same way. */
export function svg(/** @type {string} */ tag, /** @type {Record<string, string | number>} */ attributes) {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

export class ApiError extends Error {
  /** @param {number} status @param {unknown} body */
  constructor(status, body) {
    const problem = /** @type {Problem} */ (typeof body === 'object' && body !== null ? body : {});
    super(`${status} ${problem.code ?? ''}: ${problem.detail ?? String(body)}`);
    this.status = status;
  }
}

/**
 * One call to the admin API with the session's token.
 * @template T
 * @param {string} path
 * @param {RequestInit} [init]
 * @returns {Promise<{ body: T, etag: string | null }>}
 */
export async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token !== null) headers.set('authorization', `Bearer ${token}`);
  const response = await fetch(path, { ...init, headers, cache: 'no-store', credentials: 'omit' });
  const json = /json/.test(response.headers.get('content-type') ?? '');
  /** @type {unknown} */
  const body = json ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, body);
  return { body: /** @type {T} */ (body), etag: response.headers.get('etag') };
}

/** @param {string} text @param {'error' | 'info'} [kind] */
export function say(text, kind = 'error') {
  const message = byId('message');
  message.textContent = text;
  message.className = kind;
  message.hidden = false;
}

/** @param {string | undefined} iso */
export const when = iso => (iso === undefined ? '-' : iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'));

/** @param {HTMLElement} list @param {[string, Node | string][]} pairs */
export function fillPairs(list, pairs) {
  list.replaceChildren(...pairs.flatMap(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]));
}
