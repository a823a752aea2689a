// Host objects of zeroboot-js, evaluated once at initialisation. Evaluates to a function that
// takes the native helpers ({write(fd, string), random(), sleep(ms)}) and returns the hooks the
// Rust event loop calls: {formatError(e) -> string, runTimer() -> bool}.
(function (natives) {
  'use strict';
  const g = globalThis;
  const write = natives.write;
  const sleep = natives.sleep;
  const hasOwn = Object.prototype.hasOwnProperty;
  const objToString = Object.prototype.toString;
  const fnToString = Function.prototype.toString;
  const errToString = Error.prototype.toString;
  const MAX_DEPTH = 2;
  const MAX_ITEMS = 100;
  const MAX_STRING = 10000;
  const now = typeof performance === 'object' && performance && typeof performance.now === 'function'
    ? () => performance.now() : () => Date.now();

  // Math.random from a PRNG the host reseeds in every sandbox (QuickJS seeds its own once per
  // context from the clock, so every fork of a warmed-up zygote would share it).
  Object.defineProperty(Math, 'random', {
    value: natives.random, writable: true, enumerable: false, configurable: true,
  });

  function quote(s) {
    if (s.length > MAX_STRING) {
      return quote(s.slice(0, MAX_STRING)) + '... ' + (s.length - MAX_STRING) + ' more characters';
    }
    const inner = JSON.stringify(s).slice(1, -1);
    if (s.indexOf("'") < 0) return "'" + inner.replace(/\\"/g, '"') + "'";
    if (s.indexOf('"') < 0) return '"' + inner + '"';
    return "'" + inner.replace(/\\"/g, '"').replace(/'/g, "\\'") + "'";
  }

  function formatKey(k) {
    if (typeof k === 'symbol') return '[' + String(k) + ']';
    return /^[A-Za-z_$][\w$]*$/.test(k) ? k : quote(k);
  }

  function functionLabel(f) {
    let src = '';
    try { src = fnToString.call(f); } catch (e) { /* revoked proxy and the like */ }
    const name = typeof f.name === 'string' ? f.name : '';
    if (/^class\b/.test(src)) return '[class ' + (name || '(anonymous)') + ']';
    const kind = /^async\s+function\s*\*/.test(src) ? 'AsyncGeneratorFunction'
      : /^function\s*\*/.test(src) ? 'GeneratorFunction'
      : /^async\b/.test(src) ? 'AsyncFunction' : 'Function';
    return '[' + kind + (name ? ': ' + name : ' (anonymous)') + ']';
  }

  function errorHead(e) {
    try { return errToString.call(e); } catch (x) { return objToString.call(e); }
  }

  // The error's stack in V8's shape ("Name: message\n    at ..."), whatever QuickJS gives.
  function errorText(e) {
    const head = errorHead(e);
    let stack;
    try { stack = e.stack; } catch (x) { /* a throwing getter */ }
    if (typeof stack !== 'string' || stack === '') return head;
    // Frames of these host functions (console.trace and the like) are noise to the script.
    stack = stack.split('\n').filter((l) => l.indexOf('(<prelude>:') < 0).join('\n').replace(/\s+$/, '');
    if (stack === '') return head;
    if (stack.startsWith(head)) return stack;
    if (/^\s+at /.test(stack)) return head + '\n' + stack;
    return stack;
  }

  function constructorName(o) {
    let proto;
    try { proto = Object.getPrototypeOf(o); } catch (e) { return ''; }
    if (proto === null) return null;
    let c;
    try { c = proto.constructor; } catch (e) { return ''; }
    return typeof c === 'function' && typeof c.name === 'string' ? c.name : '';
  }

  function propertyEntries(o, depth, seen, skipIndices) {
    const out = [];
    let keys;
    try {
      keys = Object.keys(o).concat(Object.getOwnPropertySymbols(o).filter(
        (s) => Object.prototype.propertyIsEnumerable.call(o, s)));
    } catch (e) { return out; }
    for (const k of keys) {
      if (skipIndices && typeof k === 'string' && /^(0|[1-9]\d*)$/.test(k)) continue;
      let text;
      const d = Object.getOwnPropertyDescriptor(o, k);
      if (d && (d.get || d.set)) {
        text = d.get && d.set ? '[Getter/Setter]' : d.get ? '[Getter]' : '[Setter]';
      } else {
        text = fmt(d ? d.value : undefined, depth + 1, seen);
      }
      out.push(formatKey(k) + ': ' + text);
    }
    return out;
  }

  function braces(prefix, open, entries, close) {
    const p = prefix ? prefix + ' ' : '';
    if (entries.length === 0) return p + open + close;
    return p + open + ' ' + entries.join(', ') + ' ' + close;
  }

  function listItems(items, total) {
    return total > items.length ? items.concat(['... ' + (total - items.length) + ' more item'
      + (total - items.length > 1 ? 's' : '')]) : items;
  }

  function fmt(v, depth, seen) {
    switch (typeof v) {
      case 'string': return quote(v);
      case 'number': return Object.is(v, -0) ? '-0' : String(v);
      case 'bigint': return String(v) + 'n';
      case 'symbol': return String(v);
      case 'undefined': return 'undefined';
      case 'boolean': return String(v);
      case 'function': {
        const label = functionLabel(v);
        if (depth > MAX_DEPTH || seen.indexOf(v) >= 0) return label;
        seen.push(v);
        const props = propertyEntries(v, depth, seen, false);
        seen.pop();
        return props.length ? braces(label, '{', props, '}') : label;
      }
    }
    if (v === null) return 'null';
    if (seen.indexOf(v) >= 0) return '[Circular]';

    if (v instanceof Error) {
      return depth === 0 ? errorText(v) : '[' + errorHead(v) + ']';
    }
    if (v instanceof Date) {
      const t = Date.prototype.getTime.call(v);
      return isNaN(t) ? 'Invalid Date' : Date.prototype.toISOString.call(v);
    }
    if (v instanceof RegExp) return RegExp.prototype.toString.call(v);
    if (v instanceof Number) return '[Number: ' + fmt(Number.prototype.valueOf.call(v), 0, seen) + ']';
    if (v instanceof String) return '[String: ' + quote(String.prototype.valueOf.call(v)) + ']';
    if (v instanceof Boolean) return '[Boolean: ' + Boolean.prototype.valueOf.call(v) + ']';
    if (typeof Symbol === 'function' && v instanceof Symbol) {
      return '[Symbol: ' + String(Symbol.prototype.valueOf.call(v)) + ']';
    }

    const name = constructorName(v);
    const isArray = Array.isArray(v);
    const isTyped = ArrayBuffer.isView(v) && !(v instanceof DataView);
    if (depth > MAX_DEPTH) {
      return isArray ? '[Array]' : '[' + (name || 'Object') + ']';
    }
    seen.push(v);
    try {
      if (isArray || isTyped) {
        const len = v.length;
        const items = [];
        let holes = 0;
        for (let i = 0; i < len && items.length < MAX_ITEMS; i++) {
          if (!isTyped && !hasOwn.call(v, i)) { holes++; continue; }
          if (holes) { items.push('<' + holes + ' empty item' + (holes > 1 ? 's' : '') + '>'); holes = 0; }
          items.push(fmt(v[i], depth + 1, seen));
        }
        if (holes) items.push('<' + holes + ' empty item' + (holes > 1 ? 's' : '') + '>');
        const shown = listItems(items, items.length < MAX_ITEMS ? items.length : len);
        const extra = propertyEntries(v, depth, seen, true);
        const prefix = isTyped ? name + '(' + len + ')' : name && name !== 'Array' ? name + '(' + len + ')' : '';
        return braces(prefix, '[', shown.concat(extra), ']');
      }
      if (v instanceof Map) {
        const items = [];
        for (const [k, val] of Map.prototype.entries.call(v)) {
          if (items.length >= MAX_ITEMS) break;
          items.push(fmt(k, depth + 1, seen) + ' => ' + fmt(val, depth + 1, seen));
        }
        const size = v.size;
        return braces((name || 'Map') + '(' + size + ')', '{', listItems(items, size)
          .concat(propertyEntries(v, depth, seen, false)), '}');
      }
      if (v instanceof Set) {
        const items = [];
        for (const val of Set.prototype.values.call(v)) {
          if (items.length >= MAX_ITEMS) break;
          items.push(fmt(val, depth + 1, seen));
        }
        return braces((name || 'Set') + '(' + v.size + ')', '{', listItems(items, v.size)
          .concat(propertyEntries(v, depth, seen, false)), '}');
      }
      if (v instanceof WeakMap || v instanceof WeakSet) {
        return (name || objToString.call(v).slice(8, -1)) + ' { <items unknown> }';
      }
      if (v instanceof Promise) return braces(name || 'Promise', '{', propertyEntries(v, depth, seen, false), '}');
      if (v instanceof ArrayBuffer) {
        const bytes = new Uint8Array(v);
        const hex = [];
        for (let i = 0; i < bytes.length && i < 50; i++) hex.push((bytes[i] < 16 ? '0' : '') + bytes[i].toString(16));
        return 'ArrayBuffer { [Uint8Contents]: <' + hex.join(' ') + (bytes.length > 50 ? ' ... ' + (bytes.length - 50) + ' more bytes' : '')
          + '>, byteLength: ' + v.byteLength + ' }';
      }
      const props = propertyEntries(v, depth, seen, false);
      let prefix = '';
      if (name === null) prefix = '[Object: null prototype]';
      else if (name && name !== 'Object') prefix = name;
      else {
        const tag = v[Symbol.toStringTag];
        if (typeof tag === 'string' && tag) prefix = 'Object [' + tag + ']';
      }
      return braces(prefix, '{', props, '}');
    } catch (e) {
      return '[' + (name || 'Object') + ']';
    } finally {
      seen.pop();
    }
  }

  function inspect(v) { return fmt(v, 0, []); }

  // console.log's argument rules: a leading string may hold printf-like directives; strings are
  // written raw, everything else inspected; all joined by spaces.
  function formatArgs(args) {
    let out = '';
    let i = 0;
    if (typeof args[0] === 'string' && args.length > 1 && args[0].indexOf('%') >= 0) {
      const f = args[0];
      i = 1;
      let last = 0;
      for (let j = 0; j < f.length - 1; j++) {
        if (f.charCodeAt(j) !== 37) continue; // '%'
        const c = f[j + 1];
        let rep;
        if (c === '%') { rep = '%'; }
        else if (i < args.length) {
          const a = args[i];
          switch (c) {
            case 's': rep = typeof a === 'string' ? a : typeof a === 'bigint' ? a + 'n'
              : typeof a === 'object' && a !== null || typeof a === 'symbol' ? fmt(a, 1, []) : fmt(a, 0, []); break;
            case 'd': rep = typeof a === 'bigint' ? a + 'n' : typeof a === 'symbol' ? 'NaN' : fmt(Number(a), 0, []); break;
            case 'i': rep = typeof a === 'bigint' ? a + 'n' : typeof a === 'symbol' ? 'NaN' : fmt(parseInt(a), 0, []); break;
            case 'f': rep = typeof a === 'symbol' ? 'NaN' : fmt(parseFloat(a), 0, []); break;
            case 'j': try { rep = JSON.stringify(a); } catch (e) { rep = '[Circular]'; } break;
            case 'o': case 'O': rep = inspect(a); break;
            case 'c': rep = ''; break;
            default: continue;
          }
          i++;
        } else continue;
        out += f.slice(last, j) + rep;
        last = j + 2;
        j++;
      }
      out += f.slice(last);
    }
    for (; i < args.length; i++) {
      if (out !== '' || i > 0) out += ' ';
      out += typeof args[i] === 'string' ? args[i] : inspect(args[i]);
    }
    return out;
  }

  let indent = '';
  function emit(fd, args) {
    let s = formatArgs(args);
    if (indent) s = indent + s.split('\n').join('\n' + indent);
    write(fd, s + '\n');
  }

  const counts = new Map();
  const timers = new Map();
  const console = {
    log(...args) { emit(1, args); },
    info(...args) { emit(1, args); },
    debug(...args) { emit(1, args); },
    error(...args) { emit(2, args); },
    warn(...args) { emit(2, args); },
    trace(...args) {
      const e = new Error(formatArgs(args));
      e.name = 'Trace';
      write(2, indent + errorText(e) + '\n');
    },
    dir(v) { write(1, indent + inspect(v) + '\n'); },
    assert(cond, ...args) {
      if (!cond) emit(2, args.length ? ['Assertion failed:'].concat(args) : ['Assertion failed']);
    },
    count(label = 'default') {
      const n = (counts.get(label) || 0) + 1;
      counts.set(label, n);
      emit(1, [label + ': ' + n]);
    },
    countReset(label = 'default') { counts.delete(label); },
    time(label = 'default') { timers.set(String(label), now()); },
    timeLog(label = 'default', ...args) {
      const t = timers.get(String(label));
      if (t !== undefined) emit(1, [label + ': ' + (now() - t).toFixed(3) + 'ms'].concat(args));
    },
    timeEnd(label = 'default') {
      const t = timers.get(String(label));
      if (t !== undefined) { timers.delete(String(label)); emit(1, [label + ': ' + (now() - t).toFixed(3) + 'ms']); }
    },
    group(...args) { if (args.length) emit(1, args); indent += '  '; },
    groupEnd() { indent = indent.slice(2); },
    table(...args) { emit(1, args); },
  };
  console.groupCollapsed = console.group;

  function define(name, value) {
    Object.defineProperty(g, name, { value, writable: true, enumerable: false, configurable: true });
  }
  define('console', console);
  define('print', function print(...args) { emit(1, args); });

  // Timers: run by the host's event loop (runTimer) once the promise jobs are drained.
  const pending = new Map(); // id -> {at, seq, fn, args, interval}
  let nextId = 1;
  let seq = 0;
  function schedule(fn, ms, args, repeat) {
    if (typeof fn !== 'function') throw new TypeError('The "callback" argument must be of type function');
    ms = Number(ms);
    if (!(ms >= 1 && ms <= 2147483647)) ms = repeat ? 1 : 0;
    const id = nextId++;
    pending.set(id, { at: now() + ms, seq: seq++, fn, args, interval: repeat ? ms : -1 });
    return id;
  }
  define('setTimeout', function setTimeout(fn, ms, ...args) { return schedule(fn, ms, args, false); });
  define('setInterval', function setInterval(fn, ms, ...args) { return schedule(fn, ms, args, true); });
  define('clearTimeout', function clearTimeout(id) { pending.delete(id); });
  define('clearInterval', function clearInterval(id) { pending.delete(id); });

  function runTimer() {
    let best, bestId;
    for (const [id, t] of pending) {
      if (best === undefined || t.at < best.at || (t.at === best.at && t.seq < best.seq)) { best = t; bestId = id; }
    }
    if (best === undefined) return false;
    const wait = best.at - now();
    if (wait > 0) sleep(wait);
    if (best.interval >= 0) {
      best.at = Math.max(best.at + best.interval, now());
      best.seq = seq++;
    } else {
      pending.delete(bestId);
    }
    best.fn.apply(undefined, best.args);
    return true;
  }

  function formatError(e) {
    try {
      return e instanceof Error ? errorText(e) : inspect(e);
    } catch (x) {
      return String(e);
    }
  }

  return { formatError, runTimer, inspect, formatArgs };
})
