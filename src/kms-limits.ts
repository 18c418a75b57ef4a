// What kube-apiserver enforces on a KMS plugin's answers and requests (its KMS v2 contract):
// one definition for the gRPC adapter that checks them and the broker that must stay inside them.

/** The apiserver rejects a ciphertext (the encrypted DEK seed) over 1 KiB. */
export const MAX_CIPHERTEXT_BYTES = 1024;
/**
 * One wrap that travels beside the ciphertext (in an annotation, or in a KMS v1 wrap set):
 * bounded by the annotations' total, not by the ciphertext's limit. An escrow wrap (a hybrid
 * post-quantum KEM ciphertext) is about 1.3 KiB; this leaves room without reading anything
 * unbounded.
 */
export const MAX_WRAP_BYTES = 4 * 1024;
/** key_id: non-empty, at most 1 KiB. */
export const MAX_KEY_ID_BYTES = 1024;
/** All annotations of one Encrypt response together. */
export const MAX_ANNOTATIONS_BYTES = 32 * 1024;
