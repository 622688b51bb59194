// world: filter
// {{name}}: a Corral plugin. It logs each message it is given and emits a
// `{{name}}.seen` message naming its type.

import { log } from "corral:plugin/log@0.1.0";
import { emit } from "corral:plugin/emit@0.1.0";

// Called for each message the sidecar's [matcher] lets through. Throw
// `{ tag: "non-fatal", val: "why" }` to count a failure and go on, `{ tag: "fatal", ... }`
// to have the plugin terminated; any other exception, or a broken limit, ends the call
// too.
export function processMessage(message) {
  const type = message.type();
  log("info", `seen a ${type} message`);
  emit({
    timestamp: undefined,
    type: "{{name}}.seen",
    logger: "",
    severity: 6,
    payload: "",
    fields: [{ name: "type", value: { tag: "string", val: type } }],
  });
}

// Called every `ticker-interval-ms` (a sidecar setting) with the time in nanoseconds
// since the Unix epoch, as a BigInt.
export function timerEvent(nowNs) {}
