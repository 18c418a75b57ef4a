// A read command's view: which admin API path it reads and how its answer becomes a table;
// printed once, or again and again by --watch.
import { documentOf, type OutputFormat } from './output.ts';
import { render, type Listing, type ViewContext } from './views.ts';

export interface ReadView<Body> {
  /** The command's name, for the --watch title. */
  readonly name: string;
  readonly path: string;
  readonly listing: (body: Body, context: ViewContext) => Listing;
}

/** The answer as the chosen format prints it: the response itself as JSON or YAML, or a table. */
export async function printable<Body>(
  view: ReadView<Body>,
  body: Body,
  format: OutputFormat,
  now: number,
): Promise<string> {
  if (format === 'json' || format === 'yaml') return documentOf(format, body);
  return render(view.listing(body, { wide: format === 'wide', now }));
}
