import assert from "node:assert/strict";
import { test } from "node:test";
import { parseJson, stringifyJson } from "../../src/json.js";

test("integers beyond 2^53 parse as bigint, exactly", () => {
  const v = parseJson('{"row":[1,[9007199254740993,-9223372036854775808,9007199254740991,1.5,"12345678901234567890"]]}') as {
    row: [number, unknown[]];
  };
  assert.deepEqual(v.row[1], [9007199254740993n, -9223372036854775808n, 9007199254740991, 1.5, "12345678901234567890"]);
  assert.equal(typeof v.row[0], "number");
});

test("the slow path agrees with JSON.parse on everything else", () => {
  const samples = [
    '{"a":[1,2.5e3,-0.25,true,false,null,"x\\"y\\\\z\\u00e9"],"b":{},"c":[]}',
    '  [ {"k" : "v"} , [ [ ] ] , 1E2 ]  ',
    '"\\n\\t"',
  ];
  for (const s of samples) {
    // A 16-digit run forces the hand-written parser.
    const forced = `[${s}, 1234567890123456]`;
    assert.deepEqual(parseJson(forced), [JSON.parse(s), 1234567890123456]);
    assert.deepEqual(parseJson(s), JSON.parse(s));
  }
});

test("bad JSON is a SyntaxError, on both paths", () => {
  for (const s of ["{", "[1,]", '{"a" 1}', "tru", "[1234567890123456789", '"open', "1 2"]) {
    assert.throws(() => parseJson(s), SyntaxError, s);
  }
});

test("stringify writes bigint, bytes and skips undefined fields", () => {
  assert.equal(
    stringifyJson({ a: 12345678901234567890n, b: new Uint8Array([1, 255]), c: undefined, d: [null, "x"] }),
    '{"a":12345678901234567890,"b":[1,255],"d":[null,"x"]}',
  );
  assert.throws(() => stringifyJson({ n: NaN }), TypeError);
  const cyclic: Record<string, unknown> = {};
  cyclic["self"] = cyclic;
  assert.throws(() => stringifyJson(cyclic), TypeError);
  // Round trip of an extreme integer.
  assert.equal(parseJson(stringifyJson([-9223372036854775808n]))!.toString(), "-9223372036854775808");
});
