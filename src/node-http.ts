// node:http for ES modules, without Node's bundled undici. `import ... from 'node:http'`
// evaluates every export of the module's namespace, its lazy WebSocket, MessageEvent and
// CloseEvent getters too, and so loads undici: about 13 MB of RSS in every broker and start
// time in every CLI command, for a client nothing here uses. require() reads only what is
// asked for. (node:https has no such exports and is imported as usual.)
import type * as Http from 'node:http';
import { createRequire } from 'node:module';

export const http = createRequire(import.meta.url)('node:http') as typeof Http;
