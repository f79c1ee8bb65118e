/** An error caused by the user's input (a file, a flag, a request field). The CLI prints
 * its message as one line without a stack trace; servers map it to a 4xx/INVALID_ARGUMENT,
 * naming `param` (OpenAI's field of the error body) when the thrower knows the field. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'UserError';
  }
}
