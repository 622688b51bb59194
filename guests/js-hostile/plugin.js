// world: filter
// Hostile plugin in JavaScript, for the tests: the message type picks the misdeed.

const hoard = [];

export function processMessage(message) {
  switch (message.type()) {
    case "spin":
      for (;;) {}
    case "hoard":
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    case "raise":
      throw new Error("an exception nobody caught");
    case "fail":
      throw { tag: "non-fatal", val: "refused politely" };
    case "print":
      console.log("hello from JavaScript");
  }
}

export function timerEvent(nowNs) {}
