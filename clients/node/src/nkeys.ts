// NATS user nkeys (docs/bus.md §1.2, bus/include/cove/bus/nkeys.hpp): a cove participant's Ed25519
// key is also its bus identity; its 32-byte seed encodes as "SU..." like this.
import { nkeys } from "nats";

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32(data: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** CRC-16/XMODEM (poly 0x1021, init 0), as nkeys appends it (little-endian). */
function crc16(data: Uint8Array): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** "SU..." for a raw 32-byte Ed25519 seed: prefix bytes (18<<3 | 20>>5, (20&31)<<3), seed, CRC16. */
export function encodeUserSeed(seed: Uint8Array): string {
  if (seed.length !== 32) throw new Error("an Ed25519 seed is 32 bytes");
  const seedPrefix = 18 << 3;  // 'S'
  const userPrefix = 20 << 3;  // 'U'
  const raw = new Uint8Array(2 + 32 + 2);
  raw[0] = seedPrefix | (userPrefix >> 5);
  raw[1] = (userPrefix & 31) << 3;
  raw.set(seed, 2);
  const crc = crc16(raw.subarray(0, 34));
  raw[34] = crc & 0xff;
  raw[35] = crc >> 8;
  return base32(raw);
}

/** The public key "U..." of an encoded user seed (checked by nkeys.js). */
export function nkeyPublicFromSeed(seed: string): string {
  return nkeys.fromSeed(new TextEncoder().encode(seed)).getPublicKey();
}
