// A request whose KEY_MISSING answer means "there is none yet" rather than a failure: the
// listing at start-up before the first key exists, the lookup that decides whether to create
// one. The remote caller has already turned the service's not-found into KEY_MISSING.
import { isBrokerError } from '../errors.ts';

/** The request's result, or undefined when the service has no such key. */
export async function unlessMissing<T>(request: Promise<T>): Promise<T | undefined> {
  try {
    return await request;
  } catch (error) {
    if (isBrokerError(error) && error.code === 'KEY_MISSING') return undefined;
    throw error;
  }
}
