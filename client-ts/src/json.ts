/**
 * JSON that keeps every integer exact: integers outside ±(2^53 − 1) parse as `bigint`,
 * others as `number` (a 64-bit SQLite INTEGER is never silently rounded), and `bigint`
 * values serialize as plain JSON integers.
 *
 * `JSON.parse` alone would round `9007199254740993` to `9007199254740992`. Parsing every
 * message by hand would be slow, so {@link parseJson} only does it when the text holds a run
 * of 16 or more digits (the only way to write such an integer); otherwise it is `JSON.parse`.
 */

const LONG_DIGITS = /\d{16}/;

/** Parses JSON text; unsafe integers become `bigint`. Throws `SyntaxError` on bad input. */
export function parseJson(text: string): unknown {
  if (!LONG_DIGITS.test(text)) return JSON.parse(text);
  const p = new Parser(text);
  p.ws();
  const v = p.value();
  p.ws();
  if (p.i !== text.length) p.fail("unexpected text after the value");
  return v;
}

class Parser {
  i = 0;
  constructor(readonly s: string) {}

  fail(what: string): never {
    throw new SyntaxError(`${what} at position ${this.i} of JSON text`);
  }

  ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 32 || c === 10 || c === 13 || c === 9) this.i++;
      else break;
    }
  }

  value(): unknown {
    const c = this.s[this.i];
    if (c === "{") return this.object();
    if (c === "[") return this.array();
    if (c === '"') return this.string();
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return this.number();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(c === undefined ? "unexpected end" : `unexpected ${JSON.stringify(c)}`);
  }

  object(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.i++;
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("expected a key");
      const k = this.string();
      this.ws();
      if (this.s[this.i] !== ":") this.fail("expected ':'");
      this.i++;
      this.ws();
      out[k] = this.value();
      this.ws();
      const c = this.s[this.i++];
      if (c === "}") return out;
      if (c !== ",") this.fail("expected ',' or '}'");
    }
  }

  array(): unknown[] {
    const out: unknown[] = [];
    this.i++;
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value());
      this.ws();
      const c = this.s[this.i++];
      if (c === "]") return out;
      if (c !== ",") this.fail("expected ',' or ']'");
    }
  }

  string(): string {
    // Find the closing quote, skipping escapes, and let JSON.parse decode the literal.
    const start = this.i;
    let j = start + 1;
    const s = this.s;
    for (;;) {
      const c = s.charCodeAt(j);
      if (Number.isNaN(c)) this.fail("unterminated string");
      if (c === 92) j += 2;
      else if (c === 34) break;
      else j++;
    }
    this.i = j + 1;
    return JSON.parse(s.slice(start, j + 1)) as string;
  }

  number(): number | bigint {
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(this.s.slice(this.i, this.i + 400));
    if (!m) return this.fail("bad number");
    this.i += m[0].length;
    if (m[1] === undefined && m[2] === undefined) {
      const n = Number(m[0]);
      return Number.isSafeInteger(n) ? n : BigInt(m[0]);
    }
    return Number(m[0]);
  }
}

/**
 * Serializes a value as JSON: like `JSON.stringify`, plus `bigint` as an integer and
 * `Uint8Array` as an array of bytes (the HTTP API's BLOB encoding). Throws `TypeError` on
 * values JSON cannot carry (non-finite numbers, functions, symbols, cycles).
 */
export function stringifyJson(v: unknown): string {
  const seen = new Set<object>();
  const walk = (x: unknown): string => {
    switch (typeof x) {
      case "string":
        return JSON.stringify(x);
      case "boolean":
        return x ? "true" : "false";
      case "bigint":
        return x.toString();
      case "number":
        if (!Number.isFinite(x)) throw new TypeError(`${x} cannot be sent as JSON`);
        return JSON.stringify(x);
      case "undefined":
        return "null";
      case "object": {
        if (x === null) return "null";
        if (seen.has(x)) throw new TypeError("cannot send a value that contains itself");
        seen.add(x);
        let out: string;
        if (x instanceof Uint8Array) out = `[${Array.from(x).join(",")}]`;
        else if (Array.isArray(x)) out = `[${x.map(walk).join(",")}]`;
        else {
          const parts: string[] = [];
          for (const [k, val] of Object.entries(x)) {
            if (val !== undefined) parts.push(`${JSON.stringify(k)}:${walk(val)}`);
          }
          out = `{${parts.join(",")}}`;
        }
        seen.delete(x);
        return out;
      }
      default:
        throw new TypeError(`a ${typeof x} cannot be sent as JSON`);
    }
  };
  return walk(v);
}
