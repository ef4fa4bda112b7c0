/**
 * A node:test reporter that prints only the run's closing counts, TAP style
 * (`# tests N`, `# pass N`, `# fail N`, ...), after the human-readable spec output.
 * CI tooling reads these lines; the spec reporter prints the same counts as `ℹ pass N`.
 */
interface DiagnosticEvent {
  type: string;
  data: { nesting?: number; message?: string };
}

export default async function* summary(source: AsyncIterable<DiagnosticEvent>): AsyncGenerator<string> {
  const lines: string[] = [];
  for await (const event of source) {
    if (event.type === 'test:diagnostic' && event.data.nesting === 0 && event.data.message) {
      lines.push(`# ${event.data.message}\n`);
    }
  }
  yield lines.join('');
}
