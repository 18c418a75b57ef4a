/** etcd's "every key with this prefix": the prefix with its last byte below 0xff incremented. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let index = end.length - 1; index >= 0; index--) {
    if ((end[index] as number) < 0xff) {
      end[index] = (end[index] as number) + 1;
      return end.subarray(0, index + 1);
    }
  }
  // Only 0xff bytes: every key from the prefix on ("\0" is etcd's "to the end").
  return Buffer.from([0]);
}
