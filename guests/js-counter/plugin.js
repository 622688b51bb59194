// world: stateful-filter
// Example plugin in JavaScript: the Rust `counter` again.
//
// Counts messages per type in the plugin's store and, on every timer event, emits one
// `counter.totals` message with a field per type. The payload is the number of messages
// this plugin has processed, kept in memory and handed to the next version on a hot swap
// through the `state` export.

import { get, set, listKeys } from "corral:plugin/store@0.1.0";
import { emit } from "corral:plugin/emit@0.1.0";

const PREFIX = "count/";
let processed = 0;

// Store errors arrive as thrown values; a thrown `{ tag, val }` becomes the plugin's
// failure.
function nonFatal(what, e) {
  return { tag: "non-fatal", val: `${what}: ${JSON.stringify(e.payload ?? e)}` };
}

function read(key) {
  let bytes;
  try {
    bytes = get(key);
  } catch (e) {
    throw nonFatal("store get", e);
  }
  if (bytes === undefined) return 0n;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigInt64(0, true);
}

export function processMessage(message) {
  const key = PREFIX + message.type();
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigInt64(0, read(key) + 1n, true);
  try {
    set(key, bytes);
  } catch (e) {
    throw nonFatal("store set", e);
  }
  processed += 1;
}

export function timerEvent(nowNs) {
  let keys;
  try {
    keys = listKeys(PREFIX);
  } catch (e) {
    throw nonFatal("store list", e);
  }
  const fields = keys.map((key) => ({
    name: key.slice(PREFIX.length),
    value: { tag: "int", val: read(key) },
  }));
  emit({ timestamp: undefined, type: "counter.totals", logger: "", severity: 6, payload: `${processed}`, fields });
}

export const state = {
  save() {
    return new TextEncoder().encode(`${processed}`);
  },
  restore(data) {
    const count = Number(new TextDecoder().decode(data));
    if (!Number.isSafeInteger(count)) throw `not a count: ${data}`;
    processed = count;
  },
};
