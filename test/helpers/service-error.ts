// What the HTTP fakes of key services throw inside a handler: the status and error code the
// real service would answer with, turned into its error body by each fake.
export class ServiceError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ServiceError';
    this.status = status;
    this.code = code;
  }
}
