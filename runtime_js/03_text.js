// TextEncoder, TextDecoder (UTF-8) and structuredClone.
"use strict";

((internals) => {
  const { core } = internals;

  class TextEncoder {
    get encoding() {
      return "utf-8";
    }
    encode(input = "") {
      return core.encode(String(input));
    }
    encodeInto(input, dest) {
      const bytes = core.encode(String(input));
      const written = Math.min(bytes.length, dest.length);
      dest.set(bytes.subarray(0, written));
      return { read: input.length, written };
    }
  }
  class TextDecoder {
    #fatal;
    constructor(label = "utf-8", options = {}) {
      const normalized = String(label).trim().toLowerCase();
      if (normalized !== "utf-8" && normalized !== "utf8") {
        throw new RangeError(`TextDecoder: only utf-8 is supported, got "${label}"`);
      }
      this.#fatal = !!options.fatal;
    }
    get encoding() {
      return "utf-8";
    }
    get fatal() {
      return this.#fatal;
    }
    decode(input) {
      if (input === undefined) return "";
      let view;
      if (input instanceof ArrayBuffer) view = new Uint8Array(input);
      else if (ArrayBuffer.isView(input)) view = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
      else throw new TypeError("TextDecoder.decode: expected an ArrayBuffer or a typed array");
      const text = core.decode(view);
      if (this.#fatal && text.includes("\uFFFD") && !isValidUtf8(view)) {
        throw new TypeError("TextDecoder.decode: the input is not valid UTF-8");
      }
      return text;
    }
  }
  function isValidUtf8(bytes) {
    let i = 0;
    while (i < bytes.length) {
      const b = bytes[i];
      const extra = b < 0x80 ? 0 : (b & 0xe0) === 0xc0 ? 1 : (b & 0xf0) === 0xe0 ? 2 : (b & 0xf8) === 0xf0 ? 3 : -1;
      if (extra < 0 || i + extra >= bytes.length + (extra === 0 ? 1 : 0)) return false;
      for (let k = 1; k <= extra; k++) if ((bytes[i + k] & 0xc0) !== 0x80) return false;
      i += extra + 1;
    }
    return true;
  }
  function structuredClone(value) {
    return core.structuredClone(value);
  }

  Object.assign(internals, { TextEncoder, TextDecoder, structuredClone });
})(globalThis.__switchboardBootstrap);
