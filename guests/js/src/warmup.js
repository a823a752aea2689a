// Warm-up, run once at initialisation (in the zygote on the warm path). Touches what a typical
// task uses first, so QuickJS's lazy initialisation (shapes, atoms, the RegExp compiler, the
// Date and number-formatting code, the JSON parser...) is done before the fork. It must leave
// no state a task could see: only locals, and the hooks global the host deletes afterwards.
(function () {
  const { inspect, formatArgs, formatError } = __zbHooks;
  const sink = [];
  const o = JSON.parse('{"a":1,"b":[true,null,"x",2.5],"c":{"d":"e"}}');
  sink.push(JSON.stringify(o), JSON.stringify(o, null, 2), inspect(o), inspect([1, 'a', [2, { b: 3 }]]));
  sink.push(formatArgs(['%s=%d %o', 'x', 42, { y: [1] }]), formatArgs([1 + 1, -0, 1n, undefined, null, Symbol('s')]));
  sink.push(inspect(new Map([[1, 'a']])), inspect(new Set([1])), inspect(new Uint8Array(2)), inspect(function f() {}));
  sink.push(formatError(new TypeError('warm')), formatError('warm'));
  try { null.x; } catch (e) { sink.push(formatError(e)); }
  try { eval('syntax error('); } catch (e) { sink.push(formatError(e)); }
  sink.push(Math.floor(Math.random() * 10), Math.max(1, 2), Math.sqrt(2), Math.sin(1), Math.pow(2, 0.5), Math.round(2.5));
  sink.push((123.456).toFixed(2), (0.1 + 0.2).toString(), (1e21).toString(), Number('3.14'), parseInt('42'), parseFloat('1e3'));
  sink.push((1234.5).toLocaleString(), (255).toString(16), Number.isInteger(5), (12345.6789).toPrecision(6));
  const re = /(\w+)@(\w+)\.com/gi;
  sink.push('a@b.com x@y.com'.replace(re, '$2'), re.test('q@r.com'), 'a-b_c'.split(/[-_]/), /\d+/u.exec('ab12'));
  sink.push('Hello'.toUpperCase(), ' x '.trim(), 'abc'.padStart(5), 'x'.repeat(3), 'a,b'.split(','), `t${1}`);
  sink.push('abc'.localeCompare('abd'), 'ß'.normalize('NFC'), String.fromCharCode(65), 'é'.codePointAt(0));
  const d = new Date(2020, 0, 1, 12, 0, 0);
  sink.push(d.toISOString(), d.toString(), d.getTime(), Date.now(), new Date('2020-01-01T00:00:00Z').getUTCDay(),
    d.toLocaleDateString(), d.toLocaleTimeString(), Date.parse('2020-01-01'), JSON.stringify(d));
  const arr = Array.from({ length: 20 }, (_, i) => (i * 7) % 11);
  sink.push(arr.map((x) => x * 2).filter((x) => x > 3).reduce((a, b) => a + b, 0), arr.slice().sort((a, b) => a - b),
    arr.indexOf(3), arr.includes(4), arr.join('-'), [...arr].reverse(), arr.find((x) => x > 5), Object.keys({ a: 1 }),
    Object.entries({ b: 2 }), Object.assign({}, { c: 3 }), { ...o }, [...'abc'], arr.flat(), arr.at(-1));
  class A { #p = 1; constructor(x) { this.x = x; } get y() { return this.x + this.#p; } static s() { return 1; } }
  class B extends A { m() { return super.y; } }
  sink.push(new B(1).m(), A.s(), inspect(new B(2)));
  function* gen() { yield 1; yield 2; }
  sink.push([...gen()], Array.from(new Map([[1, 2]]).entries()));
  const m = new Map(); const s = new Set(); const wm = new WeakMap(); const key = {};
  m.set('k', 1); s.add(1); wm.set(key, 1);
  sink.push(m.get('k'), s.has(1), wm.get(key), Symbol.for('x'), typeof BigInt(10) === 'bigint' ? 2n ** 64n : 0);
  const ta = new Float64Array([1.5, 2.5]); const dv = new DataView(new ArrayBuffer(8)); dv.setInt32(0, 7);
  sink.push(ta[0], dv.getInt32(0), new TextEncoderLike().ok, encodeURIComponent('a b'), decodeURIComponent('%20'), escape('x'));
  const p = new Proxy({}, { get: (t, k) => k }); sink.push(p.z, Reflect.ownKeys({ a: 1 }));
  try { throw new RangeError('r'); } catch (e) { sink.push(e.stack, e instanceof RangeError); }
  (async () => { await null; sink.push(await Promise.all([1, Promise.resolve(2)])); })();
  Promise.resolve(1).then((x) => x + 1).catch(() => 0).finally(() => {});
  return sink.length;
  function TextEncoderLike() { this.ok = true; }
})();
