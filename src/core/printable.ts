/**
 * Text from users (strategy ids, stop reasons, errors, build output) goes to an operator's terminal.
 * Control characters in it could move the cursor, rewrite earlier lines, change the window title or
 * hide text (ESC sequences, CR, backspace, bidi overrides): every CLI print of such text goes through
 * `printable`, which shows them as visible escapes instead (`\x1b`, `\r`, `\n`, `\u202e`).
 */

const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\" };

/**
 * C0 and C1 controls, DEL, the line and paragraph separators, and the bidi embedding, override and
 * isolate characters. A backslash is doubled only where it could be mistaken for one of our escapes.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]|\\(?=[xnrtu\\])/g;

export function printable(text: string): string {
  return text.replace(UNSAFE, (ch) => NAMED[ch] ?? escapeCode(ch));
}

function escapeCode(ch: string): string {
  const code = ch.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`;
}

/** A multi-line text (a log): each line printable, the line breaks kept. */
export function printableLines(text: string): string {
  return text
    .split("\n")
    .map((line) => printable(line))
    .join("\n");
}
